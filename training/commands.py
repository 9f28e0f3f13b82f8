"""`hegnn train` and `hegnn eval`."""

import copy
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated

import torch
import typer

from hegnn import load
from hegnn.checkpoint import add_card_metrics
from hegnn_serve.training.config import apply_overrides, load_config, stored_config
from hegnn_serve.training.evaluate import evaluate
from hegnn_serve.training.prepare import prepare
from hegnn_serve.training.train import (
    ForkSourceMissing,
    Interrupted,
    run_training,
)

logger = logging.getLogger(__name__)


def train(
    config: Annotated[Path, typer.Option(help="YAML config (configs/*.yaml)")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override, e.g. optim.lr=1e-3 (repeatable)"),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    resume: Annotated[bool, typer.Option(help="resume a saved run")] = True,
    fork_from: Annotated[
        Path | None,
        typer.Option(
            help="start from this run folder's saved state (weights, optimiser, EMA, "
            "lr reached, best model) under this config's optim settings, e.g. a "
            "paused run finished with a shorter plateau patience; needs a new name",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="torch CPU threads (default torch's: all cores; beside another "
            "job on a 2-core machine, 1 ran ~20x more epochs per minute)",
        ),
    ] = None,
) -> None:
    """Train a model; the checkpoint goes to checkpoint_dir/name."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if threads is not None:
        torch.set_num_threads(threads)
    overrides = list(set_ or [])
    if device:
        overrides.append(f"device={device}")
    try:
        cfg = load_config(config, overrides)
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from err
    command = shlex.join(["hegnn", *sys.argv[1:]])
    try:
        card = run_training(cfg, command, resume=resume, fork_from=fork_from)
    except ForkSourceMissing as err:  # checked after the fork's own saved state
        raise typer.BadParameter(str(err)) from err
    except (KeyboardInterrupt, Interrupted) as err:  # logged with how to resume
        raise typer.Exit(130 if isinstance(err, KeyboardInterrupt) else 143) from None
    if card:
        typer.echo(
            json.dumps(
                {
                    "checkpoint": str(cfg.checkpoint_dir / cfg.name),
                    "metrics": card["metrics"],
                },
                indent=2,
            )
        )


def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint folder")],
    data: Annotated[
        Path | None, typer.Option(help="dataset file (default: card's)")
    ] = None,
    split: Annotated[
        str, typer.Option(help="train | val | test | test_rotated")
    ] = "test",
    limit: Annotated[int | None, typer.Option(help="score only the first N")] = None,
    write_card: Annotated[
        bool, typer.Option(help="store the metrics in card.json")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="write metrics JSON here")] = None,
) -> None:
    """Metrics of a checkpoint on a split of its protocol, as JSON."""
    metrics = evaluate_checkpoint(checkpoint, data, split, limit)
    text = json.dumps(metrics, indent=2)
    typer.echo(text)
    if out:
        out.write_text(text + "\n")
    if write_card:
        add_card_metrics(checkpoint, f"eval_{split}", metrics)


def evaluate_checkpoint(
    checkpoint: Path,
    data: Path | None = None,
    split: str = "test",
    limit: int | None = None,
) -> dict:
    """Rebuild the card's data protocol (optionally on another file) and score."""
    model, card = load(checkpoint)
    raw = copy.deepcopy(card.model_extra["training"]["config"])
    overrides = [f"data.path={data}"] if data else []
    cfg = stored_config(apply_overrides(raw, overrides))
    graphs = prepare(cfg).splits[split]
    graphs = graphs[:limit] if limit else graphs  # built in the card's dtype
    return {
        "checkpoint": str(checkpoint),
        "split": split,
        "n": len(graphs),
        **evaluate(model, graphs),
    }
