"""`hegnn report`: the table comes from the cards; run logs give the twin plots."""

import gzip
import json
from pathlib import Path

import torch

from hegnn import ModelConfig, build_model, save
from hegnn_serve.training.report import report, twins


def _checkpoint(
    root: Path,
    name: str,
    lmax: int | None,
    mse: float,
    run: str | None = None,
    run_dir: Path | None = None,
) -> None:
    torch.manual_seed(0)
    config = ModelConfig(
        task="dynamics", lmax=lmax, hidden_dim=8, num_layers=1, features="nbody"
    )
    card = {
        "dataset": "nbody",
        "data": {"path": "data/generated/nbody.npz"},
        "metrics": {"test": {"mse": mse}, "epochs": 4, "best_epoch": 4},
        "training": {"command": f"hegnn train --set name={name}", "wall_time_s": 60.0},
    }
    if run is not None:  # trained under another name (a seed shipped by validation)
        card["training"]["config"] = {"name": run}
        if run_dir is not None:  # trained with --set run_dir=...
            card["training"]["config"]["run_dir"] = str(run_dir)
    save(build_model(config), root / name, card)


def _run_log(runs: Path, name: str, values: list[float]) -> None:
    (runs / name).mkdir(parents=True)
    lines = [
        {"epoch": e + 1, "train_loss": v, "elapsed_s": 10.0 * (e + 1), "val_mse": v}
        for e, v in enumerate(values)
    ]
    (runs / name / "metrics.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines)
    )


def _twin_pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A HEGNN and its EGNN twin, 4 epochs each, with their run logs; the
    checkpoints, the runs and the report's path."""
    checkpoints, runs = tmp_path / "checkpoints", tmp_path / "runs"
    _checkpoint(checkpoints, "toy-hegnn", 1, 0.007)
    _checkpoint(checkpoints, "toy-egnn", None, 0.008)
    _run_log(runs, "toy-hegnn", [0.05, 0.02, 0.01, 0.007])
    _run_log(runs, "toy-egnn", [0.06, 0.03, 0.012, 0.008])
    out = tmp_path / "results" / "checkpoints.md"
    return checkpoints, runs, out


def test_report_tables_the_cards_and_plots_each_twin_pair(tmp_path: Path) -> None:
    checkpoints, runs, out = _twin_pair(tmp_path)

    report(checkpoints=checkpoints, out=out, runs=runs)

    text = out.read_text()
    assert "| `toy-hegnn` | nbody |" in text and "MSE 0.007 " in text
    assert "| `toy-egnn` | nbody |" in text and "EGNN" in text
    curves = out.parent / "curves"
    kept = gzip.decompress((curves / "toy-hegnn.jsonl.gz").read_bytes()).decode()
    assert kept == (runs / "toy-hegnn" / "metrics.jsonl").read_text()
    assert (curves / "compare-toy-hegnn.png").stat().st_size > 1000
    assert "![compare-toy-hegnn.png](curves/compare-toy-hegnn.png)" in text
    rows = json.loads(out.with_suffix(".json").read_text())["checkpoints"]
    assert [(h["name"], e["name"]) for h, e in twins(rows)] == [
        ("toy-hegnn", "toy-egnn")
    ]


def test_report_without_run_logs_has_no_twin_plots(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    _checkpoint(checkpoints, "toy-hegnn", 1, 0.007)
    _checkpoint(checkpoints, "toy-egnn", None, 0.008)
    out = tmp_path / "checkpoints.md"

    report(checkpoints=checkpoints, out=out, runs=tmp_path / "no-runs")

    assert "| `toy-hegnn` |" in out.read_text()
    assert "compare-" not in out.read_text()
    assert not list((tmp_path / "curves").glob("*.png"))


def test_a_seed_shipped_under_another_name_keeps_its_own_run_log(
    tmp_path: Path,
) -> None:
    checkpoints, runs = tmp_path / "checkpoints", tmp_path / "runs"
    _checkpoint(checkpoints, "toy-hegnn", 1, 0.007, run="toy-hegnn-s2")
    _run_log(runs, "toy-hegnn", [0.05, 0.02, 0.01, 0.009])  # seed 0's run, not shipped
    _run_log(runs, "toy-hegnn-s2", [0.04, 0.02, 0.01, 0.007])
    out = tmp_path / "results" / "checkpoints.md"

    report(checkpoints=checkpoints, out=out, runs=runs)

    kept = gzip.decompress((out.parent / "curves" / "toy-hegnn.jsonl.gz").read_bytes())
    assert kept.decode() == (runs / "toy-hegnn-s2" / "metrics.jsonl").read_text()


def test_a_run_is_found_in_its_cards_run_dir(tmp_path: Path) -> None:
    checkpoints, elsewhere = tmp_path / "checkpoints", tmp_path / "runs" / "patience"
    _checkpoint(checkpoints, "toy-hegnn", 1, 0.007, "toy-p25-s1", run_dir=elsewhere)
    _run_log(elsewhere, "toy-p25-s1", [0.04, 0.02, 0.01, 0.007])
    out = tmp_path / "results" / "checkpoints.md"

    report(checkpoints=checkpoints, out=out, runs=tmp_path / "runs")

    kept = gzip.decompress((out.parent / "curves" / "toy-hegnn.jsonl.gz").read_bytes())
    assert kept.decode() == (elsewhere / "toy-p25-s1" / "metrics.jsonl").read_text()


def test_a_committee_does_not_hide_the_twin_pair() -> None:
    row = {"dataset": "md17-force", "data": "x.xyz", "run": "m"}
    committee = {"name": "m-hegnn-committee", "architecture": "HEGNN L=3, committee"}
    rows = [
        {**row, "name": "m-hegnn", "architecture": "HEGNN L=3"},
        {**row, "name": "m-egnn", "architecture": "EGNN"},
        {**row, **committee, "run": None},  # as _row marks a committee
    ]
    assert [(h["name"], e["name"]) for h, e in twins(rows)] == [("m-hegnn", "m-egnn")]


def test_a_log_of_another_run_is_neither_kept_nor_plotted(tmp_path: Path) -> None:
    """The card ends at epoch 4: a 3-epoch log under its run's name is an earlier
    training, and a kept log of that length is dropped with its plots."""
    checkpoints, runs, out = _twin_pair(tmp_path)
    report(checkpoints=checkpoints, out=out, runs=runs)
    curves = out.parent / "curves"
    assert (curves / "compare-toy-hegnn.png").is_file()

    shipped = (runs / "toy-egnn" / "metrics.jsonl").read_bytes()
    _run_log(tmp_path / "later", "toy-egnn", [0.06, 0.03, 0.012])
    report(checkpoints=checkpoints, out=out, runs=tmp_path / "later")
    assert gzip.decompress((curves / "toy-egnn.jsonl.gz").read_bytes()) == shipped

    earlier = (tmp_path / "later" / "toy-egnn" / "metrics.jsonl").read_bytes()
    (curves / "toy-egnn.jsonl.gz").write_bytes(gzip.compress(earlier))
    (curves / "toy-egnn.png").write_bytes(b"png")
    report(checkpoints=checkpoints, out=out, runs=tmp_path / "no-runs")
    assert not (curves / "toy-egnn.jsonl.gz").exists()
    assert not (curves / "toy-egnn.png").exists()
    assert not (curves / "compare-toy-hegnn.png").exists()
    assert "compare-" not in out.read_text()
