"""Committees: mean and spread of members, symmetric and conservative; checkpoints."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from hegnn import CheckpointError, keys, load, make_graph_data, save
from hegnn.checkpoint import save_committee
from hegnn.committee import STACK_MAX_EDGES, Committee
from hegnn.testing import (
    assert_equivariant,
    finite_difference_forces,
    predict,
    random_structure,
)

from .conftest import tiny_model


def members(n: int = 3, lmax: int | None = 2, **overrides) -> list:
    out = []
    for seed in range(n):
        model = tiny_model("potential", lmax, **overrides)
        torch.manual_seed(100 + seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        out.append(model)
    return out


# stack_max_edges: 0 runs the members one after another, the default stacks them
PATHS = {"stacked": STACK_MAX_EDGES, "looped": 0}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("lmax", [None, 1, 3])
def test_committee_is_equivariant(lmax, path) -> None:
    committee = Committee(members(3, lmax), PATHS[path]).eval()
    assert_equivariant(committee, random_structure(7, seed=3), atol=1e-9)


@pytest.mark.parametrize(
    "lmax, overrides", [(None, {}), (1, {}), (3, {}), (3, {"phi_v": "linear"})]
)
def test_stacked_members_equal_the_members_one_by_one(
    lmax, overrides, monkeypatch
) -> None:
    models = members(3, lmax, **overrides)
    graphs = [
        make_graph_data(
            models[0].config, s.positions, numbers=s.numbers, dtype=torch.float64
        )
        for s in (random_structure(n, seed=n) for n in (4, 7, 5))
    ]
    batch = Batch.from_data_list(graphs)
    committee = Committee(models).eval()
    stacked = committee(batch)
    with committee.looped(), monkeypatch.context() as patch:
        patch.setattr(committee, "stacked", lambda: pytest.fail("stacked in looped()"))
        looped = committee(batch)
    assert committee.stack_max_edges == STACK_MAX_EDGES  # restored after the block
    assert stacked[keys.ENERGY].shape == (3,)
    for key, value in looped.items():
        # float64 sums of the same terms in another order: rounding only
        torch.testing.assert_close(stacked[key], value, rtol=1e-12, atol=1e-12)


def test_a_changed_member_changes_the_stacked_committee() -> None:
    models = members(3)
    committee = Committee(models).eval()
    structure = random_structure(6, seed=7)
    before = predict(committee, structure)
    models[1].energy_shift.add_(1.0)  # in place: 6 atoms x 1 eV on member 1
    after = predict(committee, structure)
    gained = after[keys.ENERGY] - before[keys.ENERGY]
    torch.testing.assert_close(gained, torch.tensor([2.0], dtype=torch.float64))
    fresh = predict(Committee(models).eval(), structure)
    torch.testing.assert_close(after[keys.ENERGY_STD], fresh[keys.ENERGY_STD])


def test_mean_and_spread_follow_the_members() -> None:
    models = members(3)
    committee = Committee(models).eval()
    structure = random_structure(6, seed=1)
    out = predict(committee, structure)
    each = [predict(m, structure) for m in models]
    energies = torch.stack([e[keys.ENERGY] for e in each])
    forces = torch.stack([e[keys.FORCES] for e in each])
    torch.testing.assert_close(out[keys.ENERGY], energies.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(out[keys.FORCES], forces.mean(0), rtol=0, atol=1e-12)
    expected_std = np.std(energies.numpy(), axis=0)
    np.testing.assert_allclose(out[keys.ENERGY_STD].numpy(), expected_std, atol=1e-12)
    deviation = forces - forces.mean(0)
    per_atom = deviation.pow(2).sum(-1).mean(0).sqrt()
    torch.testing.assert_close(out[keys.FORCES_STD], per_atom, rtol=0, atol=1e-12)
    # exactly the largest reported per-atom std (the members' forces come from a
    # stacked pass here, one by one above: equal to rounding, not bit for bit)
    assert float(out[keys.MAX_FORCE_STD]) == float(out[keys.FORCES_STD].max())
    assert float(per_atom.max()) > 0


def test_identical_members_have_zero_spread() -> None:
    model = tiny_model("potential", 2)
    out = predict(Committee([model, model, model]).eval(), random_structure(5, seed=2))
    # Zero up to the rounding of a float64 mean of three equal numbers.
    eps = np.finfo(np.float64).eps
    assert float(out[keys.ENERGY_STD]) <= 4 * eps * abs(float(out[keys.ENERGY]))
    max_force = float(out[keys.FORCES].abs().max())
    assert float(out[keys.MAX_FORCE_STD]) <= 4 * eps * max_force


def test_mean_forces_are_minus_the_gradient_of_the_mean_energy() -> None:
    committee = Committee(members(3)).eval()
    for member in committee.members:  # zero E0: see test_potential's FD test
        member.set_statistics(torch.zeros(3), 5.0, 0.0, 9.0)
    analytic, numeric = finite_difference_forces(committee, random_structure(6, 4))
    assert np.abs(analytic - numeric).max() / np.abs(analytic).max() < 1e-6


def test_members_must_share_the_architecture() -> None:
    with pytest.raises(ValueError, match="differ"):
        Committee([tiny_model("potential", 1), tiny_model("potential", 2)])
    with pytest.raises(ValueError, match="at least 2"):
        Committee([tiny_model("potential", 1)])


def saved_committee(root: Path) -> tuple[Path, list]:
    models = members(3)
    folders = []
    for seed, model in enumerate(models):
        card = {"training": {"config": {"seed": seed}}, "units": {"energy": "eV"}}
        save(model, root / f"member-s{seed}", card)
        folders.append(root / f"member-s{seed}")
    save_committee(folders, root / "committee", {"description": "test"})
    return root / "committee", models


def test_committee_checkpoint_round_trip(tmp_path: Path) -> None:
    folder, models = saved_committee(tmp_path)
    card = json.loads((folder / "card.json").read_text())
    assert [m["seed"] for m in card["committee"]["members"]] == [0, 1, 2]
    loaded, model_card = load(folder, dtype=torch.float64)
    assert isinstance(loaded, Committee) and model_card.committee is not None
    structure = random_structure(6, seed=5)
    expected = predict(Committee(models).eval(), structure)
    out = predict(loaded, structure)
    for key in (keys.ENERGY, keys.FORCES, keys.FORCES_STD):
        torch.testing.assert_close(out[key], expected[key], rtol=0, atol=0)


def test_members_are_copied_without_their_run_files(tmp_path: Path) -> None:
    """A member trained with run_dir = checkpoint_dir holds training state (a
    pickle) and logs: the committee takes its card and weights only, and a member
    saved again under the same folder name replaces the earlier one whole."""
    folder, _ = saved_committee(tmp_path)
    (folder / "member-s1" / "stale.txt").write_text("earlier member")
    (tmp_path / "member-s1" / "state.pt").write_bytes(b"pickle")
    members = [tmp_path / f"member-s{seed}" for seed in range(3)]
    save_committee(members, folder, {"description": "again"})
    for member in members:
        copied = sorted(p.name for p in (folder / member.name).iterdir())
        assert copied == ["card.json", "model.safetensors"]
    load(folder)  # the weights match the card's sha256


def test_a_changed_member_is_refused(tmp_path: Path) -> None:
    folder, _ = saved_committee(tmp_path)
    shutil.copy(tmp_path / "member-s0" / "model.safetensors", folder / "member-s1")
    with pytest.raises(CheckpointError, match="member-s1"):
        load(folder)


def test_member_folders_stay_inside_the_committee(tmp_path: Path) -> None:
    folder, _ = saved_committee(tmp_path)
    card = json.loads((folder / "card.json").read_text())
    card["committee"]["members"][0]["folder"] = "../member-s0"
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="folder"):
        load(folder)


def test_only_potentials_with_one_architecture_make_a_committee(
    tmp_path: Path,
) -> None:
    save(tiny_model("potential", 1), tmp_path / "a", {})
    save(tiny_model("potential", 2), tmp_path / "b", {})
    with pytest.raises(CheckpointError, match="differ"):
        save_committee([tmp_path / "a", tmp_path / "b"], tmp_path / "c", {})
    save(tiny_model("dynamics", 1), tmp_path / "d", {})
    with pytest.raises(CheckpointError, match="potential"):
        save_committee([tmp_path / "d", tmp_path / "d"], tmp_path / "e", {})
