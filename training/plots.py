"""Loss curves from a run's metrics.jsonl (matplotlib, no display needed)."""

import gzip
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(metrics_file: Path) -> list[dict]:
    """The records of a run's metrics.jsonl (or a kept ``.jsonl.gz``), one per epoch."""
    if metrics_file.suffix == ".gz":
        text = gzip.decompress(metrics_file.read_bytes()).decode()
    else:
        text = metrics_file.read_text()
    return [json.loads(line) for line in text.splitlines()]


def plot_curves(metrics_file: Path, out: Path, val_key: str) -> Path | None:
    """Train loss and validation metric against epoch, log scale; None if no data."""
    if not metrics_file.is_file():
        return None
    records = read_metrics(metrics_file)
    if not records:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [r["epoch"] for r in records],
        [r["train_loss"] for r in records],
        label="train loss",
    )
    val = [(r["epoch"], r[f"val_{val_key}"]) for r in records if f"val_{val_key}" in r]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label=f"val {val_key}")
    ax.set_xlabel("epoch")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(metrics_file.parent.name)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _validation(metrics_file: Path, val_key: str) -> list[tuple[int, float, float]]:
    """(epoch, minutes, value) of each validation in a metrics log."""
    key = f"val_{val_key}"
    return [
        (r["epoch"], r["elapsed_s"] / 60, r[key])
        for r in read_metrics(metrics_file)
        if key in r
    ]


def plot_comparison(
    runs: dict[str, Path], out: Path, val_key: str, title: str
) -> Path | None:
    """Validation metric of several runs against epoch and against wall-clock minutes.

    Equal epochs and equal time can rank two models differently when one costs more
    per epoch; the two panels show both. None if no run has validations.
    """
    series = {label: _validation(path, val_key) for label, path in runs.items()}
    series = {label: s for label, s in series.items() if s}
    if not series:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for label, points in series.items():
        epochs, minutes, values = zip(*points, strict=True)
        axes[0].plot(epochs, values, "o-", markersize=2, label=label)
        axes[1].plot(minutes, values, "o-", markersize=2, label=label)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("training time (min)")
    axes[0].set_ylabel(f"val {val_key}")
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
