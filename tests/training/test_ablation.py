"""`hegnn ablate`: arm parsing, the paired-t interval, and two arms end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from hegnn import load
from hegnn_cli import app
from hegnn_serve.training.ablation import paired_t, parse_arm, plan

ROOT = Path(__file__).resolve().parents[2]


def test_parse_arm_reads_settings_and_names_what_is_wrong() -> None:
    assert parse_arm("two: optim.stage_two_start=0.75 optim.lr=1e-3") == (
        "two",
        ("optim.stage_two_start=0.75", "optim.lr=1e-3"),
    )
    for text, says in [
        ("two", "expected 'NAME:"),
        ("two:", "expected 'NAME:"),
        ("Two: optim.lr=1", "lower-case"),
        ("config: optim.lr=1", "not 'config'"),
        ("b: optim.lr", "must be key=value"),
        ("b: seed=3", "must be key=value, and the key none of name, seed"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_arm(text)


def test_plan_rejects_a_setting_the_config_refuses(tmp_path) -> None:
    config = ROOT / "configs" / "md17-force-tiny.yaml"
    with pytest.raises(ValueError, match="(?s)--arm fast:.*batch_size"):
        plan(config, "x", [("fast", ("optim.batch_size=0",))], [0], tmp_path)
    with pytest.raises(ValueError, match="names repeat"):
        twice = [("a", ("optim.lr=1",)), ("a", ("optim.lr=2",))]
        plan(config, "x", twice, [0], tmp_path)
    runs = plan(config, "x", [("a", ("optim.lr=1",))], [0, 1], tmp_path)
    assert [(r.model, r.seed) for r in runs] == [
        ("config", 0),
        ("a", 0),
        ("config", 1),
        ("a", 1),
    ], "a seed's arms are adjacent, so they start together"


def test_paired_t_is_the_student_interval() -> None:
    # d = 1, 1.5, 2: mean 1.5, s_d = 0.5, t_{0.975, 2} = 4.302653 (tables)
    p = paired_t([1.0, 1.5, 2.0])
    half = 4.302653 * 0.5 / np.sqrt(3)  # 1.242: the interval stays above zero
    assert p["mean"] == pytest.approx(1.5)
    assert p["ci"] == pytest.approx([1.5 - half, 1.5 + half], rel=1e-6)
    assert p["excludes_zero"] and p["n"] == 3
    assert paired_t([1.0, 2.0, 3.0])["excludes_zero"] is False  # 2 ± 2.48
    assert paired_t([-1.0, 1.0])["excludes_zero"] is False
    assert paired_t([0.5]) == {"mean": 0.5, "ci": None, "n": 1}


def test_ablate_end_to_end(tmp_path) -> None:
    raw = yaml.safe_load((ROOT / "configs" / "md17-force-tiny.yaml").read_text())
    raw["data"]["path"] = str(ROOT / raw["data"]["path"])
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    args = [
        "ablate",
        str(config),
        "--arm",
        "slow: optim.lr=1e-4",
        "--seeds",
        "0",
        "--max-epochs",
        "2",
        "--run-root",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "out"),
        "--name",
        "mini",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "mini.json").read_text())
    assert list(report["arms"]) == ["config", "slow"]
    assert report["metrics"] == ["force_mae_mev_per_a", "energy_mae_mev"]
    config_arm, slow = report["arms"]["config"], report["arms"]["slow"]
    assert config_arm["epochs"] == slow["epochs"] == [2]
    for m in report["metrics"]:
        for split in ("val", "test"):
            diff = slow[f"{split}_{m}_minus_config"]
            expected = slow[f"{split}_{m}"][0] - config_arm[f"{split}_{m}"][0]
            assert diff["mean"] == pytest.approx(expected) and diff["ci"] is None
    runs = plan(config, "mini", [("slow", ("optim.lr=1e-4",))], [0], tmp_path / "runs")
    _, card = load(runs[1].checkpoint)
    trained = card.model_extra["training"]["config"]
    assert trained["optim"]["lr"] == 1e-4 and trained["seed"] == 0
    assert (
        load(runs[0].checkpoint)[1].model_extra["training"]["config"]["optim"]["lr"]
        == (raw["optim"]["lr"])
    )
    card_val = card.metrics["val"]["force_mae_mev_per_a"]
    assert slow["val_force_mae_mev_per_a"] == [card_val]
    assert (tmp_path / "out" / "mini.png").stat().st_size > 0
    markdown = (tmp_path / "out" / "mini.md").read_text()
    minutes = f"{slow['wall_min'][0]:.1f}"
    assert f"| slow | `optim.lr=1e-4` | [2] | {minutes} | max_epochs |" in markdown
    # finished runs are skipped: a second call only rewrites the report
    stamps = [(r.checkpoint / "card.json").stat().st_mtime_ns for r in runs]
    again = CliRunner().invoke(app, [*args, "--report-only"])
    assert again.exit_code == 0, again.output
    assert [(r.checkpoint / "card.json").stat().st_mtime_ns for r in runs] == stamps
