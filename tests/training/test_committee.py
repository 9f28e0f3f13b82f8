"""`hegnn committee`: three tiny seed members become a calibrated committee."""

import json
from pathlib import Path

import numpy as np
import pytest
from ase.io import read
from typer.testing import CliRunner

from hegnn import Committee, HEGNNCalculator, load, read_card
from hegnn.checkpoint import add_card_metrics
from hegnn_cli import app
from hegnn_serve.training.committee import stretch_one_bond
from hegnn_serve.training.data.md17 import MD17Frames, load_frames, subset, unseen
from hegnn_serve.training.train import run_training
from tests.conftest import unboxed

from .test_train import ROOT, tiny_config

MD = ROOT / "data/md17/md17_ethanol_first2000.npz"


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("members")
    folders = []
    for seed in range(3):
        config = tiny_config(
            root,
            "force",
            None,
            f"seed={seed}",
            f"name=tiny-s{seed}",
            "optim.max_epochs=2",
        )
        run_training(config, "test")
        folders.append(config.checkpoint_dir / config.name)
    return folders


def test_committee_command_writes_a_calibrated_checkpoint(
    members: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "tiny-committee"
    args = ["committee", *[a for m in members for a in ("--member", str(m))]]
    args += ["--out", str(out), "--md", str(MD), "--md-every", "100"]
    args += ["--report", str(tmp_path / "report")]
    best = tmp_path / "tiny-best"
    done = CliRunner().invoke(app, [*args, "--best-to", str(best)])
    assert done.exit_code == 0, done.output
    card = json.loads((out / "card.json").read_text())
    assert [m["seed"] for m in card["committee"]["members"]] == [0, 1, 2]
    val = {m.name: read_card(m).metrics["val"]["force_mae_mev_per_a"] for m in members}
    winner = min(members, key=lambda m: val[m.name])
    shipped = read_card(best)
    assert shipped.name == "tiny-best" and shipped.model_extra["selection"] == {
        "by": "val force_mae_mev_per_a",
        "chosen": winner.name,
        "seed": members.index(winner),
        "candidates": val,
        "command": card["training"]["command"],
    }
    blob = (best / "model.safetensors").read_bytes()
    assert blob == (winner / "model.safetensors").read_bytes()
    assert sorted(p.name for p in best.iterdir()) == ["card.json", "model.safetensors"]
    load(best)  # its weights match its card
    found = card["committee"]["uncertainty"]
    assert found["heldout"]["n"] == 10  # the members' test split
    low, high = found["heldout"]["spearman_ci95"]
    assert -1.0 <= low <= high <= 1.0
    assert found["md"]["n"] == 20
    threshold = found["threshold_max_force_std"]
    assert threshold > 0
    # 95 % quantile: at most 1 of 10 held-out structures lies above it.
    assert found["heldout"]["worst_5pc_errors_flagged"] in (0.0, 1.0)
    assert 0.0 <= found["distorted"]["flagged"] <= 1.0
    assert (tmp_path / "report" / "committee-tiny-committee.png").stat().st_size > 0
    model, _ = load(out)
    assert isinstance(model, Committee) and len(model.members) == 3

    atoms = read(ROOT / "data/md17/rmd17_ethanol_random100.xyz", index=0)
    atoms.calc = HEGNNCalculator(out, device="cpu")
    forces = atoms.get_forces()
    results = atoms.calc.results
    assert results["forces_std"].shape == (9,)
    assert results["max_force_std"] == pytest.approx(results["forces_std"].max())
    assert results["energy_std"] >= 0 and forces.shape == (9, 3)


def test_a_committee_is_recalibrated_in_place(
    members: list[Path], tmp_path: Path
) -> None:
    """Members given from inside the committee stay, and so do the NVE checks of
    the committee and of its shipped best member; decorrelated --md frames."""
    out, best = tmp_path / "tiny-committee", tmp_path / "tiny-best"
    args = ["committee", *[a for m in members for a in ("--member", str(m))]]
    args += ["--out", str(out), "--report", str(tmp_path / "report")]
    assert CliRunner().invoke(app, [*args, "--best-to", str(best)]).exit_code == 0
    add_card_metrics(out, "nve", {"stable": True})
    measured = {"nve": {"stable": True}, "eval_test": {"n": 10}}
    for key, value in measured.items():
        add_card_metrics(best, key, value)
    weights = {
        m.name: (out / m.name / "model.safetensors").read_bytes() for m in members
    }
    args = ["committee", *[a for m in members for a in ("--member", str(out / m.name))]]
    args += ["--out", str(out), "--report", str(tmp_path / "report")]
    args += ["--md", str(ROOT / "data/md17/md17_ethanol_random2000.xyz")]
    args += ["--md-every", "100", "--best-to", str(best)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    for name, blob in weights.items():
        assert (out / name / "model.safetensors").read_bytes() == blob
    found = json.loads((out / "card.json").read_text())["committee"]["uncertainty"]
    assert found["md"]["n"] == 20  # 2000 random MD17 frames, none seen, every 100th
    load(out)  # the members still match the card
    card = json.loads((out / "card.json").read_text())
    assert card["metrics"]["nve"] == {"stable": True}  # same weights: still valid
    assert read_card(best).metrics.items() >= measured.items()

    chosen = read_card(best).model_extra["selection"]["chosen"]
    others = [m for m in members if m.name != chosen]
    args = ["committee", *[a for m in others for a in ("--member", str(m))]]
    args += ["--out", str(out), "--report", str(tmp_path / "report")]
    assert CliRunner().invoke(app, [*args, "--best-to", str(best)]).exit_code == 0
    # Other members, another best: both checks are stale.
    assert "nve" not in json.loads((out / "card.json").read_text())["metrics"]
    assert not read_card(best).metrics.keys() & measured.keys()


def test_members_from_another_split_are_refused(
    members: list[Path], tmp_path: Path
) -> None:
    card = json.loads((members[1] / "card.json").read_text())
    card["training"]["config"]["data"]["seed"] = 7
    other = tmp_path / "other"
    other.mkdir()
    (other / "card.json").write_text(json.dumps(card))
    args = ["committee", "--member", str(members[0]), "--member", str(other)]
    done = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "c")])
    assert done.exit_code != 0 and "another split" in unboxed(done.output)
    # Same sizes and split seed of another file (ethanol and aspirin share both).
    card = json.loads((members[1] / "card.json").read_text())
    card["data"]["sha256"] = "0" * 64
    (other / "card.json").write_text(json.dumps(card))
    done = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "c")])
    assert done.exit_code != 0 and "another split" in unboxed(done.output)


def test_stretch_moves_the_lighter_atom_of_one_bond() -> None:
    frames = load_frames(ROOT / "data/md17/rmd17_ethanol_random100.xyz", "kcal/mol")
    before = frames.positions[:20]
    after = stretch_one_bond(before, frames.numbers, np.random.default_rng(0))
    for x, y in zip(before, after, strict=True):
        (moved,) = np.flatnonzero(np.abs(x - y).max(-1) > 0)  # one atom
        d_before = np.linalg.norm(x - x[moved], axis=-1)
        d_after = np.linalg.norm(y - y[moved], axis=-1)
        bonds = (d_before > 0) & (d_before < 1.6)
        assert 1.2 <= (d_after[bonds] / d_before[bonds]).max() <= 1.5


def test_unseen_drops_frames_in_the_training_data() -> None:
    frames = load_frames(ROOT / "data/md17/rmd17_ethanol_random100.xyz", "kcal/mol")
    keep = unseen(frames, subset(frames, np.arange(30)))
    assert keep.tolist() == list(range(30, 100))


def test_unseen_matches_frames_whatever_their_atom_order() -> None:
    frames = load_frames(ROOT / "data/md17/rmd17_ethanol_random100.xyz", "kcal/mol")
    order = np.random.default_rng(1).permutation(len(frames.numbers))
    reordered = MD17Frames(
        numbers=frames.numbers[order],
        positions=frames.positions[:10, order],
        energies=frames.energies[:10],
        forces=frames.forces[:10, order],
    )
    assert unseen(frames, reordered).tolist() == list(range(10, 100))
