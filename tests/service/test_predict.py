"""HTTP answers equal in-process model results (/forces, /trajectory, /md);
equivariance through HTTP."""

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet

from hegnn import HEGNNCalculator, load, make_graph_data
from hegnn.testing import random_orthogonal, random_structure

from .conftest import NBODY, POTENTIAL

RTOL = 1e-6


def in_process_forces(checkpoint_dir, positions, numbers, cell=None, pbc=None):
    model, _ = load(checkpoint_dir / POTENTIAL, dtype=torch.float64)
    data = make_graph_data(
        model.config, positions, numbers, cell=cell, pbc=pbc, dtype=torch.float64
    )
    out = model(data)
    return float(out["energy"].detach().sum()), out["forces"].detach().numpy()


def post_forces(http, body, model=POTENTIAL):
    response = http.post(f"/v1/models/{model}/forces", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_forces_equal_the_model_in_process(http, checkpoint_dir) -> None:
    s = random_structure(12, seed=1)
    body = {"numbers": s.numbers.tolist(), "positions": s.positions.tolist()}
    out = post_forces(http, body)
    energy, forces = in_process_forces(checkpoint_dir, s.positions, s.numbers)
    assert out["model"] == POTENTIAL
    assert out["units"] == {"energy": "eV", "forces": "eV/Å", "positions": "Å"}
    assert out["energy"] == pytest.approx(energy, rel=RTOL)
    np.testing.assert_allclose(out["forces"], forces, rtol=RTOL, atol=1e-10)


def test_several_structures_are_answered_in_order(http, checkpoint_dir) -> None:
    structures = [random_structure(n, seed=n) for n in (3, 9, 5)]
    body = {
        "structures": [
            {"numbers": s.numbers.tolist(), "positions": s.positions.tolist()}
            for s in structures
        ]
    }
    out = post_forces(http, body)
    assert "energy" not in out and len(out["structures"]) == 3
    for s, answer in zip(structures, out["structures"], strict=True):
        energy, forces = in_process_forces(checkpoint_dir, s.positions, s.numbers)
        assert answer["energy"] == pytest.approx(energy, rel=RTOL)
        np.testing.assert_allclose(answer["forces"], forces, rtol=RTOL, atol=1e-10)


def test_periodic_structure_uses_the_cell(http, checkpoint_dir) -> None:
    s = random_structure(6, seed=4)
    cell = np.diag([5.0, 5.5, 6.0])
    body = {
        "numbers": s.numbers.tolist(),
        "positions": s.positions.tolist(),
        "cell": cell.tolist(),
        "pbc": [True, True, False],
    }
    out = post_forces(http, body)
    pbc = np.array([True, True, False])
    energy, forces = in_process_forces(
        checkpoint_dir, s.positions, s.numbers, cell, pbc
    )
    free, _ = in_process_forces(checkpoint_dir, s.positions, s.numbers)
    assert out["energy"] == pytest.approx(energy, rel=RTOL)
    assert abs(energy - free) > 1e-6  # the images matter
    np.testing.assert_allclose(out["forces"], forces, rtol=RTOL, atol=1e-10)


@pytest.mark.parametrize("reflect", [False, True])
def test_rotating_the_input_rotates_the_forces(http, reflect: bool) -> None:
    s = random_structure(10, seed=2)
    rotation = random_orthogonal(3, reflect)
    shift = np.array([0.3, -1.2, 2.0])
    numbers = s.numbers.tolist()
    a = post_forces(http, {"numbers": numbers, "positions": s.positions.tolist()})
    rotated = s.positions @ rotation.T + shift
    b = post_forces(http, {"numbers": numbers, "positions": rotated.tolist()})
    assert b["energy"] == pytest.approx(a["energy"], rel=1e-12)
    np.testing.assert_allclose(
        b["forces"], np.array(a["forces"]) @ rotation.T, atol=1e-9
    )


def test_nbody_trajectory_equals_the_rollout_in_process(http, checkpoint_dir) -> None:
    s = random_structure(5, seed=5)
    body = {
        "positions": s.positions.tolist(),
        "velocities": s.velocities.tolist(),
        "charges": s.charges.tolist(),
        "steps": 4,
    }
    response = http.post(f"/v1/models/{NBODY}/trajectory", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    model, card = load(checkpoint_dir / NBODY)
    data = make_graph_data(
        model.config,
        s.positions,
        velocities=s.velocities,
        charges=s.charges,
        dtype=torch.float64,
    )
    expected = model.rollout(data, 4).numpy()
    np.testing.assert_allclose(out["positions"], expected, rtol=RTOL, atol=1e-10)
    assert out["times"] == [1.0, 2.0, 3.0, 4.0]
    assert out["units"]["velocities"] == card.units["velocities"]


def test_nbody_structures_every_keeps_every_kth_step(http, checkpoint_dir) -> None:
    systems = [random_structure(n, seed=n) for n in (4, 6)]
    body = {
        "structures": [
            {
                "positions": s.positions.tolist(),
                "velocities": s.velocities.tolist(),
                "charges": s.charges.tolist(),
            }
            for s in systems
        ],
        "steps": 4,
        "every": 2,
    }
    out = http.post(f"/v1/models/{NBODY}/trajectory", json=body).json()
    model, _ = load(checkpoint_dir / NBODY)
    for s, answer in zip(systems, out["structures"], strict=True):
        data = make_graph_data(
            model.config,
            s.positions,
            velocities=s.velocities,
            charges=s.charges,
            dtype=torch.float64,
        )
        expected = model.rollout(data, 4).numpy()[[1, 3]]
        np.testing.assert_allclose(answer["positions"], expected, rtol=RTOL)
        assert answer["times"] == [2.0, 4.0]


def test_md_equals_ase_velocity_verlet_in_process(http, checkpoint_dir) -> None:
    s = random_structure(7, seed=6)
    velocities = 0.01 * s.velocities  # Å/fs
    body = {
        "numbers": s.numbers.tolist(),
        "positions": s.positions.tolist(),
        "velocities": velocities.tolist(),
        "timestep_fs": 0.5,
        "steps": 10,
        "every": 5,
        "return_forces": True,
    }
    response = http.post(f"/v1/models/{POTENTIAL}/md", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["units"] == {
        "energy": "eV",
        "forces": "eV/Å",
        "positions": "Å",
        "velocities": "Å/fs",
        "time": "fs",
    }
    assert [f["step"] for f in out["frames"]] == [0, 5, 10]
    assert [f["time_fs"] for f in out["frames"]] == [0.0, 2.5, 5.0]
    atoms = Atoms(numbers=s.numbers, positions=s.positions)
    atoms.set_velocities(velocities / units.fs)
    atoms.calc = HEGNNCalculator(checkpoint_dir / POTENTIAL, device="cpu")
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    for frame in out["frames"]:
        if frame["step"]:
            dyn.run(5)
        np.testing.assert_allclose(frame["positions"], atoms.positions, rtol=RTOL)
        np.testing.assert_allclose(
            frame["velocities"], atoms.get_velocities() * units.fs, rtol=RTOL
        )
        assert frame["energy"] == pytest.approx(atoms.get_potential_energy(), rel=RTOL)
        np.testing.assert_allclose(
            frame["forces"], atoms.get_forces(), rtol=RTOL, atol=1e-10
        )


def test_langevin_md_is_seeded(http) -> None:
    s = random_structure(5, seed=7)
    body = {
        "numbers": s.numbers.tolist(),
        "positions": s.positions.tolist(),
        "temperature": 300.0,
        "seed": 3,
        "steps": 6,
        "every": 3,
    }
    url = f"/v1/models/{POTENTIAL}/md"
    a, b = (http.post(url, json=body).json() for _ in range(2))
    c = http.post(url, json={**body, "seed": 4}).json()
    assert a["frames"] == b["frames"]
    assert a["frames"][-1]["positions"] != c["frames"][-1]["positions"]
    assert np.abs(a["frames"][0]["velocities"]).max() > 0  # Maxwell-Boltzmann start
    assert "forces" not in a["frames"][0]
    assert a["units"]["time"] == "fs"


def test_md_of_several_structures_equals_each_alone(http) -> None:
    systems = [random_structure(n, seed=10 + n) for n in (3, 6)]
    run = {"temperature": 200.0, "seed": 5, "steps": 4, "every": 2}
    structures = [
        {"numbers": s.numbers.tolist(), "positions": s.positions.tolist()}
        for s in systems
    ]
    url = f"/v1/models/{POTENTIAL}/md"
    out = http.post(url, json={"structures": structures, **run}).json()
    assert "frames" not in out and len(out["structures"]) == 2
    for structure, answer in zip(structures, out["structures"], strict=True):
        alone = http.post(url, json={**structure, **run}).json()
        assert answer["frames"] == alone["frames"]
