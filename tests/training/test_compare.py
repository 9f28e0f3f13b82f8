"""`hegnn compare` on the shipped ethanol committees (HEGNN and EGNN, same split)."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hegnn import read_card
from hegnn_cli import app
from hegnn_serve.training.compare import two_level_ci
from tests.conftest import unboxed

from .test_train import ROOT

HEGNN = ROOT / "checkpoints/md17-ethanol-ff-hegnn-committee"
EGNN = ROOT / "checkpoints/md17-ethanol-ff-egnn-committee"
# Card metrics were summed from float32 forces in other batches: per component a few
# ulps (6e-8 relative) of forces ~1 eV/Å, against MAEs ~0.01 eV/Å: ~1e-5 relative.
RTOL = 1e-4


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> dict:
    report = tmp_path_factory.mktemp("report")
    done = CliRunner().invoke(
        app, ["compare", str(HEGNN), str(EGNN), "--report", str(report)]
    )
    assert done.exit_code == 0, done.output
    stem = report / f"compare-{HEGNN.name}-vs-{EGNN.name}"
    assert stem.with_suffix(".md").read_text().startswith(f"# {HEGNN.name} vs")
    return json.loads(stem.with_suffix(".json").read_text())


def member_test_mae(committee: Path, seed: int) -> float:
    spec = read_card(committee).committee
    folder = next(m.folder for m in spec.members if m.seed == seed)
    return read_card(committee / folder).metrics["test"]["force_mae_mev_per_a"]


def test_each_seed_scores_what_its_card_says(summary: dict) -> None:
    found = summary["sets"]["test split"]["force_mae_mev_per_a"]
    assert summary["seeds"] == [0, 1, 2]
    for side, committee in (("a", HEGNN), ("b", EGNN)):
        expected = [member_test_mae(committee, s) for s in summary["seeds"]]
        np.testing.assert_allclose(found[f"{side}_per_seed"], expected, rtol=RTOL)
        card_mean = read_card(committee).metrics["test"]["force_mae_mev_per_a"]
        assert found["committee_mean"][side] == pytest.approx(card_mean, rel=RTOL)


def test_the_difference_is_paired_and_inside_its_interval(summary: dict) -> None:
    for metric in ("force_mae_mev_per_a", "energy_mae_mev"):
        m = summary["sets"]["test split"][metric]
        assert m["diff_mean"] == pytest.approx(m["a_mean"] - m["b_mean"])
        assert m["diff_mean"] == pytest.approx(np.mean(m["seed_paired_diff"]))
        paired = np.subtract(m["a_per_seed"], m["b_per_seed"])
        np.testing.assert_allclose(m["seed_paired_diff"], paired)
        for low, high in (m["ci95"], m["ci95_frames_only"]):
            assert low <= m["diff_mean"] <= high
        assert m["excludes_zero"] == (m["ci95"][1] < 0 or m["ci95"][0] > 0)


def test_budgets_are_recorded_and_judged(summary: dict) -> None:
    given = {
        (b["max_minutes"], b["grad_clip"])
        for side in ("a", "b")
        for b in summary[side]["budgets"].values()
    }
    assert summary["equal_budget"] == (len(given) == 1)
    note = summary["equal_budget_note"]
    assert note.startswith("equal" if summary["equal_budget"] else "NOT")
    for side, label in (("a", "A"), ("b", "B")):
        used = [b["wall_minutes"] for b in summary[side]["budgets"].values()]
        assert f"{label} " + " / ".join(f"{m:g}" for m in used) in note


def test_the_seed_level_widens_the_interval() -> None:
    """Seeds that disagree while frames agree: only the two-level interval sees it."""
    frames = np.ones(50)
    diff = np.stack([frames, -frames, 3 * frames])
    mean, low, high = two_level_ci(diff)
    assert mean == pytest.approx(1.0)
    assert low == pytest.approx(-1.0) and high == pytest.approx(3.0)
    assert two_level_ci(np.full((3, 50), 0.25)) == (0.25, 0.25, 0.25)


def test_other_splits_and_single_models_are_refused(tmp_path: Path) -> None:
    aspirin = ROOT / "checkpoints/md17-aspirin-ff-hegnn-committee"
    report = ["--report", str(tmp_path)]
    done = CliRunner().invoke(app, ["compare", str(HEGNN), str(aspirin), *report])
    assert done.exit_code != 0 and "another split" in unboxed(done.output)
    single = ROOT / "checkpoints/md17-ethanol-ff-hegnn"
    done = CliRunner().invoke(app, ["compare", str(single), str(EGNN), *report])
    assert done.exit_code != 0 and "not a committee" in unboxed(done.output)
