"""Potential head: forces are -dE/dx, smooth cutoff, locality, batching."""

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from hegnn import make_graph_data
from hegnn.testing import finite_difference_forces, random_structure

from .conftest import LMAXES, tiny_model


@pytest.mark.parametrize(
    "lmax, overrides", [*((lmax, {}) for lmax in LMAXES), (3, {"phi_v": "linear"})]
)
def test_forces_match_finite_differences(lmax, overrides) -> None:
    model = tiny_model("potential", lmax, **overrides)
    # Constant E0 shifts do not change forces but add float64 round-off (1e4 eV
    # totals) to the differences; zero them so the check is at 1e-6 relative.
    model.set_statistics(torch.zeros(3), 5.0, 0.0, 9.0)
    analytic, numeric = finite_difference_forces(model, random_structure(8, seed=6))
    relative = np.abs(analytic - numeric).max() / np.abs(analytic).max()
    assert relative < 1e-6


def test_energy_is_float64_even_for_a_float32_model() -> None:
    model = tiny_model("potential", 2).float()
    assert model.atomic_energies.dtype == torch.float64
    s = random_structure(6, seed=7)
    out = model(
        make_graph_data(model.config, s.positions, s.numbers, dtype=torch.float32)
    )
    assert out["energy"].dtype == torch.float64
    assert out["forces"].dtype == torch.float32


def test_energy_and_forces_are_continuous_across_the_cutoff() -> None:
    model = tiny_model("potential", 3)
    r_max = model.config.r_max
    energies, forces = [], []
    for d in (r_max - 1e-6, r_max + 1e-6):
        x = np.array([[0.0, 0.0, 0.0], [d, 0.0, 0.0]])
        out = model(make_graph_data(model.config, x, [6, 8]))
        energies.append(float(out["energy"]))
        forces.append(out["forces"].detach().numpy())
    assert abs(energies[0] - energies[1]) < 1e-9
    assert np.abs(forces[0] - forces[1]).max() < 1e-6


def test_an_atom_beyond_the_receptive_field_does_not_change_local_energy() -> None:
    model = tiny_model("potential", 2)
    s = random_structure(6, seed=8)
    far = np.vstack([s.positions, [[100.0, 0.0, 0.0]]])
    e_alone = float(
        model(make_graph_data(model.config, s.positions, s.numbers))["energy"]
    )
    with_far = model(make_graph_data(model.config, far, np.append(s.numbers, 6)))
    e0_carbon = float(model.atomic_energies[1] + model.energy_shift)
    isolated_c = float(
        model(make_graph_data(model.config, [[0.0, 0.0, 0.0]], [6]))["energy"]
    )
    assert abs(float(with_far["energy"]) - (e_alone + isolated_c)) < 1e-9
    assert abs(isolated_c - e0_carbon) < 10  # an isolated atom is near its E0


@pytest.mark.parametrize("task,features", [("potential", None), ("dynamics", "nbody")])
def test_a_batch_equals_each_graph_alone(task, features) -> None:
    model = tiny_model(task, 3, features)
    structures = [random_structure(n, seed=10 + n) for n in (5, 9, 7)]
    datas = [
        make_graph_data(model.config, s.positions, s.numbers, s.velocities, s.charges)
        for s in structures
    ]
    batched = model(Batch.from_data_list(datas))
    key = "forces" if task == "potential" else "positions"
    alone = [model(d) for d in datas]
    expected = torch.cat([o[key] for o in alone])
    assert (batched[key] - expected).abs().max() < 1e-10
    if task == "potential":
        energies = torch.cat([o["energy"] for o in alone])
        assert (batched["energy"] - energies).abs().max() < 1e-10


def test_periodic_cell_energy_matches_an_explicit_supercell_image() -> None:
    model = tiny_model("potential", 2)
    cell = np.eye(3) * 3.5
    x = np.array([[0.2, 0.3, 0.1], [1.3, 1.1, 0.9]])
    periodic = model(make_graph_data(model.config, x, [6, 8], cell=cell, pbc=True))
    # A 3x3x3 supercell has 27 copies; the central copy's energy per cell is the same.
    images = np.array(
        [[a, b, c] for a in range(-1, 2) for b in range(-1, 2) for c in range(-1, 2)]
    )
    big = (x[None] + (images @ cell)[:, None]).reshape(-1, 3)
    super_out = model(
        make_graph_data(model.config, big, [6, 8] * 27, cell=cell * 3, pbc=True)
    )
    assert abs(float(super_out["energy"]) - 27 * float(periodic["energy"])) < 1e-8


def test_unknown_species_is_a_clear_error() -> None:
    model = tiny_model("potential", 1)
    with pytest.raises(ValueError, match=r"numbers: species \[79\]"):
        model(make_graph_data(model.config, [[0, 0, 0], [1.2, 0, 0]], [6, 79]))
