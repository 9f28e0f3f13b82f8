"""Equal-budget training: EGNN, HEGNN and MACE on one force-field split (issue 15).

Each model trains for the same wall-clock minutes on one CPU thread (one process per
core, ``jobs`` at a time) on the config's split: ``hegnn train`` for EGNN/HEGNN and
benchmarks/mace_train.py in a MACE interpreter (``--mace-path``) for MACE, with the
same reference energies, scaling and neighbour statistics. Reported per budget: test
energy and force MAE of the best-validation weights, epochs, and the learning curves;
then energy + forces of one test structure for every trained model, timed in
interleaved rounds (in the MACE interpreter when MACE takes part). The question it
answers: at a fixed training budget and a fixed MD cost, which model is most
accurate. Runs are resumable: a finished run (its checkpoint or result) is kept.
"""

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import Batch

from hegnn.checkpoint import load
from hegnn_serve.benchmarks.batched import energy_forces_call
from hegnn_serve.benchmarks.common import (
    ROOT,
    Run,
    Target,
    interleaved,
    mace_pythonpath,
    median,
    paired_ratio,
    run_in_mace,
)
from hegnn_serve.training.plots import read_metrics
from hegnn_serve.training.study import Run as TrainRun
from hegnn_serve.training.study import execute

logger = logging.getLogger(__name__)

MACE = "mace"
# The budget is wall-clock minutes alone, as for MACE's trainer (no epoch cap): the
# config's max_epochs is lifted, which at 120 min had stopped HEGNN at 113 minutes
# and EGNN at 72 (AMD EPYC, configs/md17-ff-aspirin.yaml's 1000).
WALL_CLOCK_ONLY_EPOCHS = 1_000_000


@dataclass(frozen=True)
class TrainBenchConfig:
    """What trains, for how long, and how its inference is timed."""

    config: Path = ROOT / "configs" / "md17-ff-aspirin.yaml"
    budgets_min: tuple[float, ...] = (30.0,)
    models: tuple[str, ...] = ("egnn", "hegnn-l3", MACE)
    seed: int = 0
    jobs: int = 2
    run_root: Path = Path("runs/bench-train")
    # MACE 0.3.16: 32 channels, hidden L = 1, max_ell 2, correlation 3, 2 layers
    mace_args: tuple[str, ...] = (
        "--channels",
        "32",
        "--hidden-l",
        "1",
        "--max-ell",
        "2",
    )
    timing_rounds: int = 15
    timing_budget_s: float = 10.0
    mace_path: Path | None = None
    # an earlier train JSON: its budgets not trained now are carried over
    keep_from: Path | None = None

    @classmethod
    def quick(cls) -> "TrainBenchConfig":
        return cls(
            config=ROOT / "configs" / "md17-force-tiny.yaml",
            budgets_min=(0.02,),
            models=("egnn", "hegnn-l1"),
            run_root=Path("runs/bench-train-quick"),
            timing_rounds=2,
            timing_budget_s=1.0,
        )


@dataclass(frozen=True)
class MaceRun(TrainRun):
    """One MACE training of benchmarks/mace_train.py, run with the overlay first."""

    mace_path: Path = Path()
    mace_args: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return (self.run_dir / "result.json").is_file()

    def command(
        self, config: Path, max_minutes: float | None, max_epochs: int | None
    ) -> list[str]:
        return [
            "env",
            f"PYTHONPATH={mace_pythonpath(self.mace_path)}",
            sys.executable,
            "-m",
            "hegnn_serve.benchmarks.mace_train",
            "--config",
            str(config),
            "--out",
            str(self.run_dir),
            "--minutes",
            str(max_minutes),
            "--seed",
            str(self.seed),
            *self.mace_args,
        ]


def plan(cfg: TrainBenchConfig, budget: float) -> list[TrainRun]:
    name = f"bench-train-{budget:g}min"
    root = cfg.run_root / name
    runs: list[TrainRun] = []
    for model in cfg.models:
        if model != MACE:
            runs.append(TrainRun(name, model, cfg.seed, root))
        elif cfg.mace_path is not None:
            runs.append(
                MaceRun(name, model, cfg.seed, root, cfg.mace_path, cfg.mace_args)
            )
    return runs


def outcome(run: TrainRun) -> dict[str, Any]:
    """Test/val metrics, epochs, wall time and validation curve of a finished run."""
    curve = [
        {"minutes": r["elapsed_s"] / 60, "val_force_mae": r["val_force_mae_mev_per_a"]}
        for r in read_metrics(run.run_dir / "metrics.jsonl")
        if "val_force_mae_mev_per_a" in r
    ]
    if isinstance(run, MaceRun):
        result = json.loads((run.run_dir / "result.json").read_text())
        metrics, params = result["metrics"], result["params"]
        epochs, best_epoch, wall = (
            result["epochs"],
            result["best_epoch"],
            result["wall_s"],
        )
        folder = run.run_dir
    else:
        card = json.loads((run.checkpoint / "card.json").read_text())
        metrics = card["metrics"]
        epochs, best_epoch = metrics["epochs"], metrics["best_epoch"]
        wall = card["training"]["wall_time_s"]
        model, _ = load(run.checkpoint)
        params = sum(p.numel() for p in model.parameters())
        folder = run.checkpoint
    return {
        "folder": str(folder),
        "params": params,
        "epochs": epochs,
        "best_epoch": best_epoch,
        "wall_s": wall,
        "test": metrics["test"],
        "val": metrics["val"],
        "curve": curve,
    }


def checkpoint_call(folder: Path, graph) -> Callable[[], None]:
    """Energy + forces of ``graph`` by a trained checkpoint (fresh positions)."""
    model, _ = load(folder)
    model.eval().requires_grad_(False)  # as served: no parameter gradients
    return energy_forces_call(model, Batch.from_data_list([graph]))


def timings(
    calls: dict[str, Callable[[], None]], rounds: int, budget_s: float
) -> dict[str, Any]:
    """ms per call and the paired ratio to the first call's model."""
    samples = interleaved(calls, rounds, 0.05, budget_s)
    base = next(iter(calls))
    return {
        name: {
            "ms": 1000 * median(s),
            "ratio_to_first": paired_ratio(s, samples[base]),
            "samples_ms": [1000 * x for x in s],
        }
        for name, s in samples.items()
    }


def time_models(cfg: TrainBenchConfig, folders: dict[str, str]) -> dict[str, Any]:
    """E+F timings of one test structure for every trained model."""
    if cfg.mace_path is None:
        from hegnn_serve.training.config import load_config
        from hegnn_serve.training.prepare import prepare

        graph = prepare(load_config(cfg.config)).splits["test"][0]
        calls = {n: checkpoint_call(Path(f), graph) for n, f in folders.items()}
        return timings(calls, cfg.timing_rounds, cfg.timing_budget_s)
    # the MACE interpreter runs in the repository root: absolute paths only
    paths = [str(Path(f).resolve()) for f in folders.values()]
    args = ["--config", str(cfg.config.resolve()), "--time", *paths]
    args += ["--names", *folders, "--rounds", str(cfg.timing_rounds)]
    args += ["--budget-s", str(cfg.timing_budget_s)]
    return run_in_mace(
        cfg.mace_path, "hegnn_serve.benchmarks.mace_train", args, timeout=1200
    )


def _mae_ratio(results: dict, budget: str, num: str, den: str) -> float:
    try:
        found = results[budget]
        return (
            found[num]["test"]["force_mae_mev_per_a"]
            / (found[den]["test"]["force_mae_mev_per_a"])
        )
    except (KeyError, TypeError):  # a model not trained (failed, no MACE overlay)
        return float("nan")


def targets(results: dict[str, Any]) -> list[Target]:
    """HEGNN/EGNN and HEGNN/MACE test force MAE at each budget that trained both."""
    models = {m for found in results.values() for m in found}
    hegnn = min((m for m in models if m.startswith("hegnn")), default=None)
    out: list[Target] = []
    for budget in results:
        for other, note in (
            ("egnn", "≤ 1: HEGNN at or below EGNN at the same budget"),
            (MACE, "> 1: MACE is more accurate at this budget"),
        ):
            ratio = _mae_ratio(results, budget, hegnn, other)
            if ratio == ratio:  # both trained (not NaN)
                name = f"{hegnn} / {other.upper()} test force MAE, {budget} min"
                out.append(Target(name, ratio, 1.0, False, "x", note))
    return out


def earlier_results(cfg: TrainBenchConfig) -> tuple[dict[str, Any], str | None]:
    """Results of ``cfg.keep_from`` (same training config and seed) for every budget
    and model this run does not train, each marked with the run that trained it;
    and a note naming them. A model can so train at a budget in a later session
    without dropping the other models' results at that budget."""
    if cfg.keep_from is None or not cfg.keep_from.is_file():
        return {}, None
    earlier = json.loads(cfg.keep_from.read_text())
    same = Path(earlier["config"]["config"]).name == cfg.config.name
    if not same or earlier["config"]["seed"] != cfg.seed:
        return {}, None
    now = {(f"{b:g}", r.model) for b in cfg.budgets_min for r in plan(cfg, b)}
    machine = earlier["machine"]
    stamp = {"date": earlier["date"], **{k: machine[k] for k in ("commit", "cpu")}}
    kept: dict[str, dict[str, Any]] = {}
    for budget, found in earlier["results"]["budgets"].items():
        for model, r in found.items():
            if (budget, model) not in now and "failed" not in r:
                # a result carried over before keeps the stamp of the run that made it
                kept.setdefault(budget, {})[model] = {"earlier_run": stamp, **r}
    if not kept:
        return {}, None
    origins: dict[str, list[str]] = {}
    for budget, found in kept.items():
        for model, r in found.items():
            by = r["earlier_run"]
            origin = ", ".join(by[k] for k in ("date", "commit", "cpu") if k in by)
            origins.setdefault(origin, []).append(f"{model} {budget} min")
    listed = [f"{', '.join(what)} ({origin})" for origin, what in origins.items()]
    return kept, f"kept from earlier runs (same config, split): {'; '.join(listed)}"


def merged(*parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Budget -> model -> result from several runs, budgets by size, models by name."""
    budgets: dict[str, dict[str, Any]] = {}
    for part in parts:
        for budget, found in part.items():
            budgets.setdefault(budget, {}).update(found)
    return {b: dict(sorted(budgets[b].items())) for b in sorted(budgets, key=float)}


def latest_folders(results: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each model's checkpoint at the largest budget that trained it, if its
    folder is on this machine (results kept from another machine may not be)."""
    folders: dict[str, str] = {}
    for found in results.values():  # budgets ascending: the last one wins
        for model, r in found.items():
            if "failed" not in r and Path(r["folder"]).exists():
                folders[model] = r["folder"]
    return folders


def run(cfg: TrainBenchConfig, device: torch.device) -> dict[str, Any]:
    """Train every model at every budget (resumable), then time them; the payload."""
    if device.type != "cpu":
        raise ValueError("hegnn bench train runs on the CPU (one thread per run)")
    run_ = Run(
        "train",
        device,
        {
            **{
                k: str(v) if isinstance(v, Path) else v
                for k, v in cfg.__dict__.items()
                if k not in ("mace_path", "keep_from")
            },
            "threads_per_run": 1,
            "split": "the config's data.sizes and data.seed (hegnn train's split)",
        },
    )
    trained: dict[str, dict[str, Any]] = {}
    for budget in cfg.budgets_min:
        runs = plan(cfg, budget)
        codes = execute(cfg.config, runs, cfg.jobs, budget, WALL_CLOCK_ONLY_EPOCHS)
        trained[f"{budget:g}"] = {
            r.model: outcome(r)
            if r.done
            else {"failed": f"exit code {codes[r.name]}; see {r.run_dir}/study.log"}
            for r in runs
        }
    kept, note = earlier_results(cfg)
    if note:
        run_.notes.append(note)
    results = merged(kept, trained)
    folders = latest_folders(results)
    timing = time_models(cfg, folders)
    untimed = sorted({m for found in results.values() for m in found} - set(folders))
    if untimed:
        run_.notes.append(
            f"inference not timed for {', '.join(untimed)}: "
            "no checkpoint of theirs on this machine"
        )
    for budget, found in results.items():
        for model, r in found.items():
            if "failed" in r:
                run_.notes.append(f"{model} at {budget} min failed: {r['failed']}")
    if cfg.mace_path is None and MACE in cfg.models:
        run_.notes.append("MACE not trained in this run (give --mace-path)")
    run_.notes += [
        "one seed per model and budget: an anecdote, not a ranking with a CI",
        "budget = wall clock of the whole training, validation included; "
        "runs share the machine two at a time",
        "inference: energy + forces of one test structure, prebuilt graph, "
        "interleaved rounds, one thread",
    ]
    return run_.finish({"budgets": results, "inference": timing}, targets(results))
