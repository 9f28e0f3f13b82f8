"""`hegnn study`: bootstrap CI, report, and a 2-run study end to end on tiny data."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from hegnn import load
from hegnn_cli import app
from hegnn_serve.training.config import stored_config
from hegnn_serve.training.data.nbody import generate_nbody, nbody_protocol
from hegnn_serve.training.evaluate import evaluate, per_sample_mse
from hegnn_serve.training.prepare import prepare
from hegnn_serve.training.study import (
    bootstrap_ci,
    model_lmax,
    plan,
    render_markdown,
    ship,
    summarise,
)
from tests.conftest import unboxed


def test_model_names() -> None:
    assert model_lmax("egnn") is None
    assert model_lmax("hegnn-l3") == 3
    with pytest.raises(ValueError, match="hegnn-lK"):
        model_lmax("segnn")


def test_bootstrap_ci_is_seeded_and_covers_the_mean() -> None:
    rng = np.random.default_rng(1)
    diff = rng.normal(-0.5, 1.0, size=400)
    mean, low, high = bootstrap_ci(diff, resamples=2000)
    assert mean == pytest.approx(diff.mean())
    assert low < mean < high < 0  # a clear effect excludes 0
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))  # normal approximation
    assert high - low == pytest.approx(2 * half, rel=0.15)
    assert bootstrap_ci(diff, resamples=2000) == (mean, low, high)  # fixed seed
    _, low0, high0 = bootstrap_ci(rng.normal(0, 1, size=400), resamples=2000)
    assert low0 < 0 < high0


def _score(model: str, seed: int, per_sample: np.ndarray, close: np.ndarray) -> dict:
    return {
        "model": model,
        "seed": seed,
        "name": f"s-{model}-s{seed}",
        "checkpoint": f"ck/s-{model}-s{seed}",
        "per_sample": per_sample,
        "close": close,
        "test_mse": float(per_sample.mean()),
        "test_rotated_mse": float(per_sample.mean()),
        "val_mse": float(per_sample.mean()) + seed,
        "best_epoch": 5,
        "epochs": 10,
        "wall_s": 60.0,
        "parameters": 100,
        "data_sha256": "abc",
        "curve": [{"epoch": 1, "train_loss": 1.0, "val_mse": 1.0}],
    }


def test_summary_pairs_samples_and_splits_close_encounters() -> None:
    close = np.array([True, False, False, False])
    egnn = [np.array([4.0, 1.0, 1.0, 1.0]), np.array([2.0, 1.0, 1.0, 1.0])]
    hegnn = [np.array([2.0, 0.5, 0.5, 0.5]), np.array([2.0, 0.5, 0.5, 1.5])]
    scores = [_score("egnn", s, e, close) for s, e in enumerate(egnn)]
    scores += [_score("hegnn-l3", s, h, close) for s, h in enumerate(hegnn)]
    summary = summarise(scores, "s", "c.yaml")
    e, h = summary["models"]["egnn"], summary["models"]["hegnn-l3"]
    assert e["test_mse_per_seed"] == [1.75, 1.25]
    assert e["test_mse_std"] == pytest.approx(np.std([1.75, 1.25], ddof=1))
    assert e["mse_close_encounter"] == 3.0 and e["mse_rest"] == 1.0
    assert h["median_per_sample_mse"] == 0.75
    vs = h["vs_egnn"]
    # seed-averaged per-sample difference: [-1, -0.5, -0.5, 0]
    assert vs["mean_diff"] == pytest.approx(-0.5)
    assert vs["fraction_samples_better"] == 0.75
    assert vs["seed_paired_mean_diff"] == {"0": -0.875, "1": -0.125}
    assert summary["close_encounter"]["fraction"] == 0.25
    assert e["best_validation_seed"] == 0
    assert summary["common_epoch"] == 1 and e["best_val_mse_to_common_epoch"] == [1, 1]
    text = render_markdown(summary, "hegnn study c.yaml")
    assert "| hegnn-l3 |" in text and "-0.50000 [" in text
    json.dumps(summary, default=float)


def test_per_sample_mse_averages_to_evaluate(tmp_path) -> None:
    path = tmp_path / "n.npz"
    generate_nbody(path, nbody_protocol("egnn", 5, sizes=(4, 3, 7)), seed=1)
    cfg = stored_config(
        {
            "name": "t",
            "task": "nbody",
            "model": {"lmax": 1, "hidden_dim": 8, "num_layers": 1},
            "data": {"path": str(path)},
        }
    )
    from hegnn import build_model

    prepared = prepare(cfg)
    torch.manual_seed(0)
    model = build_model(prepared.model_config)
    graphs = prepared.splits["test"]
    values = per_sample_mse(model, graphs, batch_size=3)
    assert values.shape == (7,) and values.dtype == torch.float64
    assert float(values.mean()) == pytest.approx(evaluate(model, graphs)["mse"], 1e-5)
    first = per_sample_mse(model, graphs[:1])
    assert float(first[0]) == pytest.approx(float(values[0]), rel=1e-6)


def test_study_end_to_end(tmp_path) -> None:
    data = tmp_path / "nbody.npz"
    generate_nbody(data, nbody_protocol("egnn", 5, sizes=(20, 10, 10)), seed=1)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "task": "nbody",
                "model": {"lmax": 1, "hidden_dim": 8, "num_layers": 1},
                "data": {"path": str(data), "sizes": [20, 10, 10]},
                "optim": {"lr": 1e-3, "batch_size": 10, "max_epochs": 2},
            }
        )
    )
    args = [
        "study",
        str(config),
        "--seeds",
        "0",
        "--models",
        "egnn,hegnn-l1",
        "--jobs",
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
    assert set(report["models"]) == {"egnn", "hegnn-l1"}
    h = report["models"]["hegnn-l1"]
    assert h["epochs_per_seed"] == [2] and "vs_egnn" in h
    assert report["n_test"] == 10
    assert (tmp_path / "out" / "mini.png").stat().st_size > 0
    assert "| egnn |" in (tmp_path / "out" / "mini.md").read_text()
    runs = plan(config, "mini", ["egnn", "hegnn-l1"], [0], tmp_path / "runs")
    assert all(r.done for r in runs)
    _, card = load(runs[1].checkpoint)
    assert card.model.lmax == 1 and card.model_extra["training"]["config"]["seed"] == 0
    # finished runs are skipped: a second call only rewrites the report
    stamps = [(r.checkpoint / "card.json").stat().st_mtime_ns for r in runs]
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert [(r.checkpoint / "card.json").stat().st_mtime_ns for r in runs] == stamps
    assert (
        json.loads((tmp_path / "out" / "mini.json").read_text())["models"]
        == (report["models"])
    )
    shipped = ship(report, "hegnn-l1", tmp_path / "ck" / "mini-hegnn", tmp_path / "c")
    _, card = load(shipped)
    assert card.name == "mini-hegnn" and card.model_extra["study"]["seed"] == 0
    assert card.model_extra["study"]["statistics"]["vs_egnn"]["ci95"]
    assert (tmp_path / "c" / "mini-hegnn.jsonl.gz").is_file()


def test_study_refuses_a_force_field_config_before_training(tmp_path) -> None:
    """`hegnn study` reports trajectory MSE: a force-field config is refused at once,
    not after hours of training when the report cannot be made."""
    config = Path(__file__).parents[2] / "configs" / "md17-force-tiny.yaml"
    args = ["study", str(config), "--run-root", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    message = unboxed(result.output)
    assert result.exit_code == 2
    assert "task md17-force" in message and "hegnn compare" in message
    assert not (tmp_path / "runs").exists()
