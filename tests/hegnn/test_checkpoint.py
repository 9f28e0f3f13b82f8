"""Checkpoints: round trip, tamper detection, versioning, ASE calculator."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from hegnn import (
    CheckpointError,
    HEGNNCalculator,
    load,
    make_graph_data,
    read_card,
    save,
)
from hegnn.testing import random_structure

from .conftest import tiny_model


@pytest.fixture
def potential_dir(tmp_path):
    model = tiny_model("potential", 2)
    save(model, tmp_path / "tiny-ff", {"units": {"energy": "eV"}, "metrics": {}})
    return model, tmp_path / "tiny-ff"


def test_round_trip_is_bit_for_bit(potential_dir) -> None:
    model, path = potential_dir
    loaded, card = load(path, dtype=torch.float64)
    s = random_structure(7, seed=30)
    data = make_graph_data(model.config, s.positions, s.numbers)
    a = model(data)
    b = loaded(make_graph_data(model.config, s.positions, s.numbers))
    assert torch.equal(a["energy"], b["energy"])
    assert torch.equal(a["forces"], b["forces"])
    assert card.name == "tiny-ff" and card.task == "potential"
    assert loaded.atomic_energies.dtype == torch.float64


def test_dynamics_round_trip_keeps_delta_t(tmp_path) -> None:
    model = tiny_model("dynamics", 1, "md17-traj")
    model.delta_t.fill_(3000.0)
    card = save(model, tmp_path / "traj", {})
    loaded, _ = load(tmp_path / "traj")
    assert card.delta_t == 3000.0 and float(loaded.delta_t) == 3000.0


def test_tampered_weights_are_refused(potential_dir) -> None:
    _, path = potential_dir
    weights = path / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        load(path)


def test_unknown_format_version_is_refused(potential_dir) -> None:
    _, path = potential_dir
    card = json.loads((path / "card.json").read_text())
    card["format_version"] = 99
    (path / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="format_version 99"):
        read_card(path)


def test_checkpoint_holds_no_pickle(potential_dir) -> None:
    _, path = potential_dir
    assert sorted(p.name for p in path.iterdir()) == ["card.json", "model.safetensors"]
    assert b"\x80\x04" not in (path / "model.safetensors").read_bytes()[:16]


def test_calculator_matches_the_model(potential_dir) -> None:
    model, path = potential_dir
    s = random_structure(6, seed=31)
    atoms = Atoms(numbers=s.numbers, positions=s.positions)
    atoms.calc = HEGNNCalculator(path, device="cpu", dtype=torch.float64)
    out = model(make_graph_data(model.config, s.positions, s.numbers))
    assert atoms.get_potential_energy() == pytest.approx(float(out["energy"]), abs=1e-9)
    np.testing.assert_allclose(
        atoms.get_forces(), out["forces"].detach().numpy(), atol=1e-10
    )
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_saved_checkpoint_loads_on_cpu(tmp_path) -> None:
    model = tiny_model("potential", 2).cuda()
    save(model, tmp_path / "gpu", {})
    loaded, _ = load(tmp_path / "gpu", device="cpu")
    assert next(loaded.parameters()).device.type == "cpu"


def _as_format_v1(path) -> None:
    """Rewrite a saved checkpoint in the first format's weight layout (what the
    first shipped checkpoints hold): one shared avg_num_neighbors, the Bessel basis
    at backbone.bessel, a backbone.species buffer."""
    from safetensors.torch import load_file, save_file

    from hegnn.checkpoint import sha256_file

    weights = path / "model.safetensors"
    state = load_file(weights)
    card = json.loads((path / "card.json").read_text())
    shared = [k for k in state if k.endswith("aggregate.avg_num_neighbors")]
    state["backbone.avg_num_neighbors"] = state[shared[0]].clone()
    for key in shared:
        del state[key]
    state["backbone.bessel.n_pi"] = state.pop("backbone.radial.bessel.n_pi")
    state["backbone.species"] = torch.tensor(card["model"]["species"])
    save_file(state, weights)
    card.update(format_version=1, weights_sha256=sha256_file(weights))
    (path / "card.json").write_text(json.dumps(card))


def test_format_1_checkpoints_load_to_the_same_model(potential_dir) -> None:
    model, path = potential_dir
    _as_format_v1(path)
    loaded, card = load(path, dtype=torch.float64)
    assert card.format_version == 1
    s = random_structure(7, seed=31)
    a = model(make_graph_data(model.config, s.positions, s.numbers))
    b = loaded(make_graph_data(model.config, s.positions, s.numbers))
    assert torch.equal(a["energy"], b["energy"])
    assert torch.equal(a["forces"], b["forces"])
