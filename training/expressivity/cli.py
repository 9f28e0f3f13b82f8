"""`hegnn expressivity`: the degeneration table, analytic (--analytic) and trained
(--train), printed with rich and written to docs/results/expressivity.{json,md,png}."""

import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markdown import Markdown

from hegnn_serve.training.expressivity.analytic import blind_degree_table
from hegnn_serve.training.expressivity.experiment import (
    ToyConfig,
    default_specs,
    run_experiment,
)
from hegnn_serve.training.expressivity.report import (
    analytic_markdown,
    plot_heatmap,
    results_page,
    train_markdown,
    write_json,
)
from hegnn_serve.training.expressivity.structures import STRUCTURES

logger = logging.getLogger(__name__)
ANALYTIC_LMAX = 12


def expressivity(
    analytic: Annotated[
        bool, typer.Option("--analytic", help="blind degrees from vertex sums")
    ] = False,
    train: Annotated[
        bool, typer.Option("--train", help="train the toy classifiers (HEGNN.md §6)")
    ] = False,
    seeds: Annotated[int, typer.Option(help="fresh models per cell")] = 5,
    epochs: Annotated[int, typer.Option(help="full-batch epochs per model")] = 100,
    hidden_dim: Annotated[int, typer.Option(help="width H")] = 128,
    out: Annotated[Path, typer.Option(help="folder for the results")] = Path(
        "docs/results"
    ),
) -> None:
    """Which output degrees see a symmetric structure's orientation.

    --analytic prints the blind degrees l <= 12 of every structure; --train trains
    EGNN, HEGNN_{l=L} (L = 1..7) and HEGNN_{l<=L} (L = 1, 2, 3, 6) to tell each
    structure from a rotated copy, prints mean ± std accuracy and writes
    expressivity.json, .md and .png under --out.
    """
    handlers = [RichHandler()]
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=handlers)
    if not (analytic or train):
        raise typer.BadParameter("give --analytic, --train or both")
    console = Console(width=None if sys.stdout.isatty() else 120)
    table = blind_degree_table(STRUCTURES, ANALYTIC_LMAX)
    analytic_md = analytic_markdown(table, ANALYTIC_LMAX)
    console.print(Markdown("### Blind degrees (analytic)\n\n" + analytic_md))
    if not train:
        return

    torch.set_num_threads(1)
    config = ToyConfig(seeds=seeds, epochs=epochs, hidden_dim=hidden_dim)
    wall, cpu = time.perf_counter(), time.process_time()
    results = run_experiment(STRUCTURES, default_specs(), config)
    runtime = {
        "wall_s": round(time.perf_counter() - wall, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }
    train_md = train_markdown(results)
    console.print(Markdown("### Toy experiment: accuracy (%)\n\n" + train_md))
    n_disagree = sum(not r.agrees for r in results)
    logger.info("%d of %d cells disagree; %s", n_disagree, len(results), runtime)

    write_json(
        out / "expressivity.json",
        {
            "analytic": {"lmax": ANALYTIC_LMAX, "blind_degrees": table},
            "config": asdict(config),
            "runtime": runtime,
            "cells": [
                asdict(r) | {"mean": r.mean, "std": r.std, "agrees": r.agrees}
                for r in results
            ],
        },
    )
    (out / "expressivity.md").write_text(
        results_page(analytic_md, train_md, config, runtime, n_disagree, len(results))
    )
    plot_heatmap(
        out / "expressivity.png",
        results,
        f"Structure vs rotated copy, {config.seeds} seeds, H={config.hidden_dim}, "
        f"{config.epochs} epochs (hatched: predicted blind; *: disagrees)",
    )
    logger.info("wrote %s/expressivity.{json,md,png}", out)
