"""`hegnn study`: several models × seeds of one training config, then one report.

Every (model, seed) is one ``hegnn train`` process (one torch thread) on the same data
and budget; runs go in parallel (``--jobs``), are resumable (``hegnn train`` resumes
from ``runs/<study>/<run>/state.pt``) and are skipped once their checkpoint exists.
Each checkpoint holds its best-validation weights. The report
``docs/results/<study>.{md,json,png}`` gives, per model: test MSE mean ± std over
seeds, the paired bootstrap 95 % CI of (HEGNN − EGNN) over per-sample test MSE,
the median per-sample MSE, the MSE of close-encounter systems vs the rest, epochs and
wall time, and the learning curves of every seed.
"""

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
import yaml

from hegnn import keys
from hegnn.rules import RULES
from hegnn_serve.training.config import TrainConfig, load_config

logger = logging.getLogger(__name__)

DEFAULT_MODELS = "egnn,hegnn-l1,hegnn-l2,hegnn-l3,hegnn-l6"
BASELINE = "egnn"
CLOSE_ENCOUNTER = 0.2  # minimum pair distance (simulation units) in frames in..out
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def model_lmax(model: str) -> int | None:
    """``egnn`` -> None; ``hegnn-lK`` -> K."""
    if model == BASELINE:
        return None
    prefix = "hegnn-l"
    if model.startswith(prefix) and model[len(prefix) :].isdigit():
        return int(model[len(prefix) :])
    raise ValueError(f"model: expected 'egnn' or 'hegnn-lK' (K = 0..6), got {model!r}")


@dataclass(frozen=True)
class Run:
    """One (model, seed) of a study."""

    study: str
    model: str
    seed: int
    run_root: Path

    @property
    def name(self) -> str:
        return f"{self.study}-{self.model}-s{self.seed}"

    @property
    def run_dir(self) -> Path:
        return self.run_root / self.name

    @property
    def checkpoint(self) -> Path:
        return self.run_root / "checkpoints" / self.name

    @property
    def done(self) -> bool:
        return (self.checkpoint / "card.json").is_file()

    def model_overrides(self) -> list[str]:
        """The ``--set`` items that make this run's variant: its model's degree."""
        lmax = model_lmax(self.model)
        return [f"model.lmax={'null' if lmax is None else lmax}"]

    def overrides(self, max_minutes: float | None, max_epochs: int | None) -> list[str]:
        out = [
            f"name={self.name}",
            f"seed={self.seed}",
            *self.model_overrides(),
            f"run_dir={self.run_root}",
            f"checkpoint_dir={self.run_root / 'checkpoints'}",
            "device=cpu",
        ]
        if max_minutes:
            out.append(f"optim.max_minutes={max_minutes}")
        if max_epochs:
            out.append(f"optim.max_epochs={max_epochs}")
        return out

    def command(
        self, config: Path, max_minutes: float | None, max_epochs: int | None
    ) -> list[str]:
        """The ``hegnn train`` process of this run."""
        args = [sys.executable, "-m", "hegnn_cli", "train", "--config", str(config)]
        for item in self.overrides(max_minutes, max_epochs):
            args += ["--set", item]
        return args


def plan(
    config: Path, study: str, models: list[str], seeds: list[int], run_root: Path
) -> list[Run]:
    for m in models:
        model_lmax(m)
    loaded = load_config(config)  # fail early on a bad config
    rule = RULES[loaded.data.features]
    if rule.task != keys.TASK_DYNAMICS:  # refused before training, not after it
        raise ValueError(
            f"{config}: task {loaded.task} trains a {rule.task} model; hegnn study "
            "reports trajectory MSE. Train force-field seeds with `hegnn train --set "
            "seed=N` or `hegnn ablate`, compare committees with `hegnn compare`"
        )
    return [Run(study, m, s, run_root / study) for m in models for s in seeds]


def _epochs_done(run: Run) -> int:
    path = run.run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    return json.loads(lines[-1])["epoch"] if lines else 0


def execute(
    config: Path,
    runs: list[Run],
    jobs: int,
    max_minutes: float | None,
    max_epochs: int | None,
) -> dict[str, int]:
    """Run every unfinished run, ``jobs`` at a time; return each run's exit code."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    pending = [r for r in runs if not r.done]
    codes = {r.name: 0 for r in runs if r.done}
    active: dict[str, tuple[subprocess.Popen, Any, Run]] = {}
    budget = max_minutes or load_config(config).optim.max_minutes
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:
        tasks = {
            r.name: progress.add_task(
                r.name,
                total=1.0,
                completed=1.0 if r.done else 0.0,
                info="done (checkpoint exists)" if r.done else "waiting",
            )
            for r in runs
        }
        started: dict[str, float] = {}
        while pending or active:
            while pending and len(active) < jobs:
                run = pending.pop(0)
                run.run_dir.mkdir(parents=True, exist_ok=True)
                log = open(run.run_dir / "study.log", "a")  # noqa: SIM115
                args = run.command(config, max_minutes, max_epochs)
                log.write(" ".join(args) + "\n")
                log.flush()
                proc = subprocess.Popen(args, stdout=log, stderr=log, env=env)
                active[run.name] = (proc, log, run)
                started[run.name] = time.perf_counter()
                logger.info("started %s (pid %d)", run.name, proc.pid)
            time.sleep(1.0)
            for name, (proc, log, run) in list(active.items()):
                minutes = (time.perf_counter() - started[name]) / 60
                epochs = _epochs_done(run)
                fraction = min(minutes / budget, 0.99) if budget else 0.5
                progress.update(
                    tasks[name],
                    completed=fraction,
                    info=f"epoch {epochs}, {minutes:.1f} min",
                )
                code = proc.poll()
                if code is None:
                    continue
                log.close()
                del active[name]
                codes[name] = code
                progress.update(
                    tasks[name],
                    completed=1.0,
                    info=f"{'done' if code == 0 else f'FAILED ({code})'}, "
                    f"{epochs} epochs",
                )
                if code:
                    logger.error("%s failed (%d): see %s", name, code, log.name)
                else:
                    logger.info(
                        "finished %s: %d epochs, %.1f min", name, epochs, minutes
                    )
    return codes


# --- evaluation ------------------------------------------------------------------


def close_encounters(cfg: TrainConfig, n: int) -> np.ndarray:
    """Per test system: minimum pair distance below CLOSE_ENCOUNTER in any saved
    frame from frame_in to frame_out. ``[n]`` bool, in the test split's order."""
    d = cfg.data
    with np.load(d.path, allow_pickle=False) as npz:
        index = npz["test_idx"][:n]
        x = npz["positions"][index][:, d.frame_in : d.frame_out + 1]  # [S, F, N, 3]
    diff = x[:, :, :, None, :] - x[:, :, None, :, :]
    r = np.sqrt((diff * diff).sum(-1))
    n_bodies = x.shape[2]
    r[..., np.arange(n_bodies), np.arange(n_bodies)] = np.inf
    return r.min(axis=(1, 2, 3)) < CLOSE_ENCOUNTER


_TEST_GRAPHS: dict[tuple, list] = {}


def _test_graphs(cfg: TrainConfig) -> list:
    """The run's test split as ``hegnn train`` builds it (``prepare``), built once
    per data section, graph parameters and dtype: the models of a study differ in
    their architecture only, and score the same graphs."""
    from hegnn_serve.training.prepare import prepare

    m = cfg.model
    graph = (m.r_max, m.bond_cutoff, m.heavy_atoms_only)
    key = (cfg.data.model_dump_json(), graph, cfg.dtype)
    if key not in _TEST_GRAPHS:
        _TEST_GRAPHS[key] = prepare(cfg).splits["test"]
    return _TEST_GRAPHS[key]


def score_run(run: Run) -> dict[str, Any]:
    """Per-sample test MSE and the card's record of one finished run."""
    import torch

    from hegnn import load
    from hegnn_serve.training.config import stored_config
    from hegnn_serve.training.evaluate import per_sample_mse
    from hegnn_serve.training.plots import read_metrics

    torch.set_num_threads(1)
    model, card = load(run.checkpoint)
    cfg = stored_config(card.model_extra["training"]["config"])
    graphs = _test_graphs(cfg)
    mse = per_sample_mse(model, graphs, cfg.optim.batch_size).numpy()
    metrics = card.metrics
    if not np.isclose(mse.mean(), metrics["test"]["mse"], rtol=1e-4):
        raise ValueError(
            f"{run.name}: per-sample test MSE averages to {mse.mean():.6g}, the "
            f"card's test MSE is {metrics['test']['mse']:.6g}"
        )
    curve = [
        {k: r[k] for k in ("epoch", "train_loss", "val_mse", "elapsed_s") if k in r}
        for r in read_metrics(run.run_dir / "metrics.jsonl")
    ]
    return {
        "model": run.model,
        "seed": run.seed,
        "name": run.name,
        "checkpoint": str(run.checkpoint),
        "per_sample": mse,
        "close": close_encounters(cfg, len(mse)),
        "test_mse": float(metrics["test"]["mse"]),
        "test_rotated_mse": float(metrics.get("test_rotated", {}).get("mse", np.nan)),
        "val_mse": float(metrics["val"]["mse"]),
        "best_epoch": int(metrics["best_epoch"]),
        "epochs": int(metrics["epochs"]),
        "wall_s": float(card.model_extra["training"]["wall_time_s"]),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "data_sha256": card.model_extra["data"].get("content_sha256"),
        "curve": curve,
    }


def bootstrap_ci(
    diff: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap CI of the mean of ``diff``."""
    diff = np.asarray(diff, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for k in range(resamples):  # one resample at a time: bounded memory
        means[k] = diff[rng.integers(0, len(diff), len(diff))].mean()
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(diff.mean()), float(low), float(high)


def common_epoch(scores: list[dict[str, Any]]) -> int:
    """The last validated epoch that every run reached (0 if none)."""
    reached = [
        max((r["epoch"] for r in s["curve"] if "val_mse" in r), default=0)
        for s in scores
    ]
    return min(reached, default=0)


def best_val_until(curve: list[dict[str, Any]], epoch: int) -> float | None:
    """Lowest validation MSE of a run up to ``epoch`` (wall-clock-free comparison:
    what early stopping at that epoch would have kept)."""
    vals = [r["val_mse"] for r in curve if "val_mse" in r and r["epoch"] <= epoch]
    return min(vals) if vals else None


def summarise(scores: list[dict[str, Any]], study: str, config: str) -> dict[str, Any]:
    """The study's statistics per model (JSON-ready)."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for s in scores:
        by_model.setdefault(s["model"], []).append(s)
    close = scores[0]["close"]
    mean_per_sample = {
        m: np.mean([s["per_sample"] for s in ss], axis=0) for m, ss in by_model.items()
    }
    common = common_epoch(scores)
    models: dict[str, Any] = {}
    for m, ss in by_model.items():
        ss = sorted(ss, key=lambda s: s["seed"])
        test = np.array([s["test_mse"] for s in ss])
        per_sample = mean_per_sample[m]
        best = min(ss, key=lambda s: s["val_mse"])
        entry: dict[str, Any] = {
            "seeds": [s["seed"] for s in ss],
            "parameters": ss[0]["parameters"],
            "test_mse_per_seed": test.tolist(),
            "test_mse_mean": float(test.mean()),
            "test_mse_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
            "test_rotated_mse_mean": float(
                np.mean([s["test_rotated_mse"] for s in ss])
            ),
            "val_mse_per_seed": [s["val_mse"] for s in ss],
            "median_per_sample_mse": float(np.median(per_sample)),
            "mse_close_encounter": float(per_sample[close].mean())
            if close.any()
            else None,
            "mse_rest": float(per_sample[~close].mean()) if (~close).any() else None,
            "best_val_mse_to_common_epoch": [
                best_val_until(s["curve"], common) for s in ss
            ],
            "epochs_per_seed": [s["epochs"] for s in ss],
            "best_epoch_per_seed": [s["best_epoch"] for s in ss],
            "wall_min_per_seed": [round(s["wall_s"] / 60, 2) for s in ss],
            "best_validation_seed": best["seed"],
            "best_validation_checkpoint": best["checkpoint"],
        }
        if m != BASELINE and BASELINE in mean_per_sample:
            diff = per_sample - mean_per_sample[BASELINE]
            mean, low, high = bootstrap_ci(diff)
            pairs = {
                s["seed"]: s["per_sample"]
                for s in by_model[BASELINE]
                if s["seed"] in entry["seeds"]
            }
            pair_epoch = common_epoch(ss + by_model[BASELINE])
            entry["vs_egnn"] = {
                "equal_epoch": pair_epoch,
                "best_val_mse_to_equal_epoch": [
                    best_val_until(s["curve"], pair_epoch) for s in ss
                ],
                "egnn_best_val_mse_to_equal_epoch": [
                    best_val_until(s["curve"], pair_epoch) for s in by_model[BASELINE]
                ],
                "mean_diff": mean,
                "ci95": [low, high],
                "excludes_zero": bool(high < 0 or low > 0),
                "fraction_samples_better": float((diff < 0).mean()),
                "seed_paired_mean_diff": {
                    str(s["seed"]): float((s["per_sample"] - pairs[s["seed"]]).mean())
                    for s in ss
                    if s["seed"] in pairs
                },
            }
        models[m] = entry
    return {
        "study": study,
        "config": config,
        "common_epoch": common,
        "data_sha256": scores[0]["data_sha256"],
        "n_test": int(len(close)),
        "close_encounter": {
            "threshold": CLOSE_ENCOUNTER,
            "fraction": float(close.mean()),
            "definition": "minimum pair distance below the threshold in any saved "
            "frame from frame_in to frame_out",
        },
        "bootstrap": {
            "resamples": BOOTSTRAP_RESAMPLES,
            "seed": BOOTSTRAP_SEED,
            "level": 0.95,
            "pairing": "per test system: the model's per-sample MSE averaged over its "
            "seeds minus EGNN's averaged over its seeds (equal to the mean over seeds "
            "of the seed-paired differences); test systems resampled with replacement",
        },
        "models": models,
        "curves": {s["name"]: s["curve"] for s in scores},
    }


def _fmt(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.5f}"


def _mean_std(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.5f} ± {std:.5f}"


def _equal_epochs(vs: dict[str, Any] | None) -> str:
    if not vs or "equal_epoch" not in vs:
        return "–"
    return (
        f"E = {vs['equal_epoch']}: {_mean_std(vs['best_val_mse_to_equal_epoch'])} "
        f"vs {_mean_std(vs['egnn_best_val_mse_to_equal_epoch'])}"
    )


def render_markdown(summary: dict[str, Any], command: str = "") -> str:
    """The report's Markdown table and notes."""
    lines = [
        f"# Study {summary['study']}",
        "",
        f"Config `{summary['config']}`, data content sha256 "
        f"`{str(summary['data_sha256'])[:12]}…`, {summary['n_test']} test systems; "
        f"{summary['close_encounter']['fraction']:.0%} have a close encounter "
        f"(pair distance < {summary['close_encounter']['threshold']} "
        "in frames in..out).",
        "",
    ]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        "| model | params | seeds | test MSE mean ± std | rotated test | median "
        "per-sample | close enc. | rest | − EGNN (95 % CI) | epochs | best epoch "
        "| wall min | equal epochs: best val MSE ≤ epoch E, model vs EGNN |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, e in summary["models"].items():
        vs = e.get("vs_egnn")
        ci = (
            f"{vs['mean_diff']:+.5f} [{vs['ci95'][0]:+.5f}, {vs['ci95'][1]:+.5f}]"
            if vs
            else "–"
        )
        lines.append(
            f"| {m} | {e['parameters']:,} | {len(e['seeds'])} | "
            f"{e['test_mse_mean']:.5f} ± {e['test_mse_std']:.5f} | "
            f"{_fmt(e['test_rotated_mse_mean'])} | "
            f"{_fmt(e['median_per_sample_mse'])} | {_fmt(e['mse_close_encounter'])} | "
            f"{_fmt(e['mse_rest'])} | {ci} | "
            f"{'/'.join(map(str, e['epochs_per_seed']))} | "
            f"{'/'.join(map(str, e['best_epoch_per_seed']))} | "
            f"{'/'.join(f'{w:.1f}' for w in e['wall_min_per_seed'])} | "
            f"{_equal_epochs(vs)} |"
        )
    b = summary["bootstrap"]
    lines += [
        "",
        f"Per-seed test MSE, best-validation weights of each run. CI: percentile "
        f"bootstrap ({b['resamples']:,} resamples, seed {b['seed']}) of the mean "
        f"per-sample difference; pairing: {b['pairing']}. Negative = better than "
        "EGNN. Median, close-encounter and rest columns use the seed-averaged "
        "per-sample MSE. Runs share a wall-clock budget, so their epochs depend on "
        "the machine's load; the last column compares each model with EGNN at equal "
        "epochs (the best validation MSE up to the last epoch that every run of "
        "both reached).",
        "",
        f"![learning curves]({summary['study']}.png)",
        "",
    ]
    return "\n".join(lines)


def plot_study(summary: dict[str, Any], out: Path) -> Path:
    """Validation MSE (solid) and train loss (dotted) of every seed, one panel per
    model, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(summary["models"])
    fig, axes = plt.subplots(
        1, len(models), figsize=(4 * len(models), 3.5), squeeze=False, sharey=True
    )
    for ax, m in zip(axes[0], models, strict=True):
        for seed in summary["models"][m]["seeds"]:
            curve = summary["curves"][f"{summary['study']}-{m}-s{seed}"]
            val = [(r["epoch"], r["val_mse"]) for r in curve if "val_mse" in r]
            (line,) = ax.plot(*zip(*val, strict=True), label=f"seed {seed} val")
            ax.plot(
                [r["epoch"] for r in curve],
                [r["train_loss"] for r in curve],
                ":",
                color=line.get_color(),
            )
        ax.set_yscale("log")
        ax.set_title(m)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("MSE (val solid, train dotted)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def write_report(
    runs: list[Run], out_dir: Path, study: str, config: str, command: str = ""
) -> dict[str, Any]:
    """Score every finished run and write ``out_dir/<study>.{md,json,png}``."""
    finished = [r for r in runs if r.done]
    if not finished:
        raise ValueError("no finished run to report")
    scores = [score_run(r) for r in finished]
    summary = summarise(scores, study, config)
    summary["command"] = command
    missing = [r.name for r in runs if not r.done]
    if missing:
        summary["missing_runs"] = missing
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_study(summary, out_dir / f"{study}.png")
    # Data for programs (per-epoch curves of every run): compact, one line; the
    # Markdown beside it is the human-readable report.
    (out_dir / f"{study}.json").write_text(json.dumps(summary) + "\n")
    (out_dir / f"{study}.md").write_text(render_markdown(summary, command))
    return summary


def ship(
    summary: dict[str, Any],
    model: str,
    dest: Path,
    curves: Path = Path("docs/results/curves"),
) -> Path:
    """Copy ``model``'s best-validation run of a study to checkpoint folder ``dest``;
    its card gains a ``study`` record (the study's statistics and the chosen seed).
    The run's metrics log and curve are kept as ``hegnn report`` keeps a shipped
    model's (``curves/<dest name>.jsonl.gz`` and ``.png``)."""
    import gzip
    import shutil

    from hegnn import load, save
    from hegnn_serve.training.report import kept_log

    entry = summary["models"][model]
    net, card = load(Path(entry["best_validation_checkpoint"]))
    extras = dict(card.model_extra)
    extras["metrics"] = {
        k: v for k, v in card.metrics.items() if not k.startswith("eval_")
    }
    stats = {k: v for k, v in entry.items() if k != "best_validation_checkpoint"}
    extras["study"] = {
        "name": summary["study"],
        "report": f"docs/results/{summary['study']}.md",
        "command": summary.get("command", ""),
        "model": model,
        "seed": entry["best_validation_seed"],
        "selected_by": "lowest validation MSE among the study's seeds",
        "run": Path(entry["best_validation_checkpoint"]).name,
        "data_sha256": summary["data_sha256"],
        "n_test": summary["n_test"],
        "bootstrap": summary["bootstrap"],
        "statistics": stats,
    }
    extras["description"] = (
        f"{dest.name}: {card.model_extra.get('description', '').split(': ', 1)[-1]}"
        f" — study {summary['study']}, seed {entry['best_validation_seed']}"
    )
    save(net, dest, extras)
    run_dir = Path(entry["best_validation_checkpoint"]).parent.parent / (
        Path(entry["best_validation_checkpoint"]).name
    )
    curves.mkdir(parents=True, exist_ok=True)
    log = run_dir / "metrics.jsonl"
    if log.is_file():
        packed = gzip.compress(log.read_bytes(), compresslevel=9, mtime=0)
        kept_log(curves, dest.name).write_bytes(packed)
    if (run_dir / "curve.png").is_file():
        shutil.copyfile(run_dir / "curve.png", curves / f"{dest.name}.png")
    return dest


# Options shared by the commands that run seeds of a config (study, ablate).
SeedsOption = Annotated[str, typer.Option(help="comma-separated seeds")]
MaxMinutesOption = Annotated[
    float | None, typer.Option(help="wall-clock budget per run (minutes)")
]
MaxEpochsOption = Annotated[int | None, typer.Option(help="epoch cap per run")]
RunRootOption = Annotated[Path, typer.Option(help="runs and checkpoints")]
ReportFolderOption = Annotated[Path, typer.Option(help="report folder")]
ReportOnlyOption = Annotated[
    bool, typer.Option(help="only write the report from finished runs")
]


def study(
    config: Annotated[Path, typer.Argument(help="training config YAML")],
    seeds: SeedsOption = "0,1,2",
    models: Annotated[
        str, typer.Option(help="comma-separated: egnn, hegnn-lK")
    ] = DEFAULT_MODELS,
    max_minutes: MaxMinutesOption = None,
    max_epochs: MaxEpochsOption = None,
    jobs: Annotated[int, typer.Option(min=1, help="runs in parallel")] = 2,
    name: Annotated[
        str | None, typer.Option(help="study name (default: the config's stem)")
    ] = None,
    run_root: RunRootOption = Path("runs"),
    out: ReportFolderOption = Path("docs/results"),
    report_only: ReportOnlyOption = False,
    ship_: Annotated[
        list[str] | None,
        typer.Option(
            "--ship",
            help="MODEL=FOLDER: copy MODEL's best-validation run there (repeatable)",
        ),
    ] = None,
) -> None:
    """Train models × seeds on one config and report test MSE with bootstrap CIs."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    study_name = name or config.stem
    try:
        runs = plan(
            config,
            study_name,
            [m.strip() for m in models.split(",") if m.strip()],
            [int(s) for s in seeds.split(",") if s.strip()],
            run_root,
        )
    except (ValueError, FileNotFoundError, yaml.YAMLError) as err:
        raise typer.BadParameter(str(err)) from err
    command = " ".join(["hegnn", *sys.argv[1:]])
    previous = out / f"{study_name}.json"
    if report_only and previous.is_file():  # keep the command that ran the study
        command = json.loads(previous.read_text()).get("command") or command
    t0 = time.perf_counter()
    if not report_only:
        codes = execute(config, runs, jobs, max_minutes, max_epochs)
        failed = [n for n, c in codes.items() if c]
        if failed:
            logger.error("failed runs: %s", ", ".join(failed))
    summary = write_report(runs, out, study_name, str(config), command)
    for item in ship_ or []:
        model, _, folder = item.partition("=")
        if model not in summary["models"] or not folder:
            raise typer.BadParameter(f"--ship {item!r}: expected MODEL=FOLDER")
        logger.info("shipped %s to %s", model, ship(summary, model, Path(folder)))
    logger.info("study %s: %.1f min", study_name, (time.perf_counter() - t0) / 60)
    typer.echo(render_markdown(summary, command))
