"""`hegnn report`: the shipped checkpoints' metrics next to published reference values.

Writes docs/results/checkpoints.md (and .json) from the cards alone, so the README's
table never drifts from the files. Where the training runs are at hand (``runs/``), it
also keeps their metric logs and loss curves beside the table (``curves/``) and plots
each HEGNN against its EGNN twin.
"""

import gzip
import json
import logging
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from hegnn import read_card
from hegnn_serve.training.metrics import primary_metric
from hegnn_serve.training.plots import plot_comparison, read_metrics
from hegnn_serve.training.train import METRICS_FILE

logger = logging.getLogger(__name__)

# Published values (paper/HEGNN.md §10); each row names its protocol.
REFERENCES: dict[str, list[dict[str, Any]]] = {
    "nbody": [
        {
            "model": "EGNN (EGNN paper)",
            "protocol": "EGNN 5-body, 3000 train",
            "test_mse": 0.0071,
        },
        {
            "model": "SEGNN (SEGNN paper)",
            "protocol": "EGNN 5-body, 3000 train",
            "test_mse": 0.0043,
        },
    ],
    "md17-force:aspirin": [
        {
            "model": "MACE",
            "protocol": "rMD17, 950 train + 50 val",
            "energy_mae_mev": 2.2,
            "force_mae_mev_per_a": 6.6,
        },
        {
            "model": "NequIP",
            "protocol": "rMD17, 1000 train",
            "energy_mae_mev": 2.3,
            "force_mae_mev_per_a": 8.2,
        },
    ],
    "md17-force:ethanol": [
        {
            "model": "MACE",
            "protocol": "rMD17, 950 train + 50 val",
            "energy_mae_mev": 0.4,
            "force_mae_mev_per_a": 2.1,
        },
        {
            "model": "NequIP",
            "protocol": "rMD17, 1000 train",
            "energy_mae_mev": 0.4,
            "force_mae_mev_per_a": 2.8,
        },
    ],
    "md17-traj": [
        {
            "model": "HEGNN / EGNN (REMUL table, one molecule, weak source)",
            "protocol": "DFT MD17, GMN split",
            "test_mse": "0.0037 / 0.0047",
        },
    ],
}


def _row(path: Path) -> dict[str, Any]:
    card = read_card(path)
    extra = card.model_extra
    metrics = card.metrics
    test = metrics.get("test", {})
    lmax = card.model.lmax
    architecture = "EGNN" if lmax is None else f"HEGNN L={lmax}"
    row = {
        "name": card.name,
        "task": card.task,
        "dataset": extra.get("dataset"),
        "data": extra.get("data", {}).get("path"),
        "architecture": architecture,
        "split": extra.get("data", {}).get("split_sizes"),
        "test": test,
        "test_rotated": metrics.get("test_rotated"),
        "best_epoch": metrics.get("best_epoch"),
        "epochs": metrics.get("epochs"),
        "device": extra.get("training", {}).get("device"),
        "wall_time_s": extra.get("training", {}).get("wall_time_s"),
        "command": extra.get("training", {}).get("command"),
        # the training run's folder name: a seed shipped under another name
        # (`hegnn committee --best-to`) keeps the run it came from
        "run": extra.get("training", {}).get("config", {}).get("name", card.name),
        "run_dir": extra.get("training", {}).get("config", {}).get("run_dir"),
    }
    if card.committee is not None:  # its members' epochs and summed training time
        row["run"] = None  # no run of its own (the card copies a member's config)
        members = [_row(path / m.folder) for m in card.committee.members]
        row["architecture"] = f"{architecture}, committee of {len(members)}"
        for key in ("epochs", "best_epoch"):
            row[key] = "/".join(str(m[key]) for m in members)
        row["wall_time_s"] = sum(m["wall_time_s"] or 0 for m in members) or None
    return row


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return "" if value is None else str(value)


LOG_SUFFIX = ".jsonl.gz"  # kept logs are data, not sources: gzip (mtime 0)


def kept_log(curves: Path, name: str) -> Path:
    """Where ``hegnn report`` keeps a checkpoint's metrics log."""
    return curves / f"{name}{LOG_SUFFIX}"


def last_epoch(metrics_file: Path) -> int | None:
    """The epoch of a metrics log's last record (None for an empty log)."""
    records = read_metrics(metrics_file)
    return records[-1].get("epoch") if records else None


def keep_run_logs(rows: list[dict[str, Any]], runs: Path, curves: Path) -> None:
    """Keep each checkpoint's metrics log (gzipped) and loss curve from the run
    that trained it (its card's ``run_dir/<run>/``, else ``runs/<run>/``) under the
    checkpoint's name.

    A log that does not end at the card's last epoch is another run's (an earlier
    training under the same name): it is not kept, and a kept one is dropped with
    its curve, so no plot shows a model that is no longer shipped."""
    curves.mkdir(parents=True, exist_ok=True)
    for r in rows:
        if r["run"] is None:
            continue
        folder = runs / r["run"]
        if r["run_dir"] and (Path(r["run_dir"]) / r["run"]).is_dir():
            folder = Path(r["run_dir"]) / r["run"]  # the card's own run_dir
        log, kept = folder / METRICS_FILE, kept_log(curves, r["name"])
        curve, kept_curve = folder / "curve.png", curves / f"{r['name']}.png"
        if log.is_file() and last_epoch(log) == r["epochs"]:
            packed = gzip.compress(log.read_bytes(), compresslevel=9, mtime=0)
            kept.write_bytes(packed)
            if curve.is_file():
                shutil.copyfile(curve, kept_curve)
        elif kept.is_file() and last_epoch(kept) != r["epochs"]:
            logger.warning("%s: kept log is another run's; dropped", r["name"])
            kept.unlink()
            kept_curve.unlink(missing_ok=True)


def twins(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(HEGNN, EGNN) pairs: the one single model of each kind on the same task and
    data (committees have no run of their own to plot)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["run"] is not None:
            groups[(r["dataset"], r["data"])].append(r)
    pairs = []
    for group in groups.values():
        hegnn = [r for r in group if r["architecture"] != "EGNN"]
        egnn = [r for r in group if r["architecture"] == "EGNN"]
        if len(hegnn) == 1 and len(egnn) == 1:
            pairs.append((hegnn[0], egnn[0]))
    return pairs


def plot_twins(rows: list[dict[str, Any]], curves: Path) -> list[str]:
    """``compare-<hegnn>.png`` for each twin pair with both logs; their file names."""
    written = []
    for hegnn, egnn in twins(rows):
        logs = {r["architecture"]: kept_log(curves, r["name"]) for r in (hegnn, egnn)}
        png = curves / f"compare-{hegnn['name']}.png"
        if not all(path.is_file() for path in logs.values()):
            png.unlink(missing_ok=True)  # an earlier pair's plot
            continue
        title = f"{hegnn['name']} vs {egnn['name']}"
        if plot_comparison(logs, png, primary_metric(hegnn["task"]), title):
            written.append(png.name)
    return written


def markdown(rows: list[dict[str, Any]], comparisons: Sequence[str] = ()) -> str:
    lines = [
        "# Shipped checkpoints",
        "",
        "Generated by `hegnn report` from each `checkpoints/<name>/card.json`. "
        "Metrics are on the test split named in the card (all test samples).",
        "",
        "| model | task | data | arch | test metric | epochs (best) | training time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r["test"]
        if "mse" in t:
            metric = f"MSE {_fmt(t['mse'])}"
            if r["test_rotated"]:
                metric += f" (rotated {_fmt(r['test_rotated']['mse'])})"
        else:
            metric = (
                f"E {_fmt(t.get('energy_mae_mev'), 3)} meV, "
                f"F {_fmt(t.get('force_mae_mev_per_a'), 3)} meV/Å"
            )
        minutes = f"{r['wall_time_s'] / 60:.0f} min" if r["wall_time_s"] else ""
        lines.append(
            f"| `{r['name']}` | {r['dataset']} | `{r['data']}` | {r['architecture']} "
            f"| {metric} | {r['epochs']} ({r['best_epoch']}) | {minutes} |"
        )
    lines += [
        "",
        "## Published reference values (other protocols noted)",
        "",
        "| task | model | protocol | value |",
        "|---|---|---|---|",
    ]
    for task, refs in REFERENCES.items():
        for ref in refs:
            value = ", ".join(
                f"{k} {v}" for k, v in ref.items() if k not in ("model", "protocol")
            )
            lines.append(f"| {task} | {ref['model']} | {ref['protocol']} | {value} |")
    lines += [
        "",
        "Reproduce a row: the card's `training.command` (also in the table's "
        "JSON twin).",
    ]
    if comparisons:
        lines += [
            "",
            "## HEGNN against its EGNN twin during training",
            "",
            "Validation metric against epoch (left) and wall-clock time (right); the "
            "logs are `curves/<name>.jsonl.gz`.",
            "",
        ]
        lines += [f"![{png}](curves/{png})" for png in comparisons]
    return "\n".join(lines) + "\n"


def report(
    checkpoints: Annotated[Path, typer.Option(help="checkpoints folder")] = Path(
        "checkpoints"
    ),
    out: Annotated[Path, typer.Option(help="Markdown file to write")] = Path(
        "docs/results/checkpoints.md"
    ),
    runs: Annotated[
        Path, typer.Option(help="training runs whose logs and curves to keep")
    ] = Path("runs"),
) -> None:
    """Write the shipped models' metrics table (Markdown + JSON) and their curves."""
    rows = [_row(p.parent) for p in sorted(checkpoints.glob("*/card.json"))]
    curves = out.parent / "curves"
    keep_run_logs(rows, runs, curves)
    out.write_text(markdown(rows, plot_twins(rows, curves)))
    out.with_suffix(".json").write_text(
        json.dumps({"checkpoints": rows, "references": REFERENCES}, indent=2) + "\n"
    )
    typer.echo(out.read_text())
