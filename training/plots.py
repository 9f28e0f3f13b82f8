"""Loss curves from a run's metrics.jsonl (matplotlib, no display needed)."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(metrics_file: Path, out: Path, val_key: str) -> Path | None:
    """Train loss and validation metric against epoch, log scale; None if no data."""
    if not metrics_file.is_file():
        return None
    records = [json.loads(line) for line in metrics_file.read_text().splitlines()]
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
