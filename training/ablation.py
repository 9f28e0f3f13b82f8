"""`hegnn ablate`: a config against variants of it, paired by seed, judged on val.

A recipe change (a loss weight, the batch size, a second stage) is chosen on the
validation split only. Each arm is the config plus ``--set`` items. A seed's arms train
side by side (one process and one torch thread each; ``--jobs`` defaults to the number
of arms), so each seed pairs the arms under the same machine load and the same
initialisation. Per arm and seed the report reads the checkpoint's card (the
best-validation weights, as ``hegnn train`` selects them); against the config it gives
the mean of the seed-paired differences d_s = arm_s − config_s with a Student-t 95 %
interval, d̄ ± t_{0.975, n−1} · s_d / √n. Test metrics are listed beside, not used.
Runs resume and finished runs are skipped, as in ``hegnn study``.
"""

import json
import logging
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
import yaml

from hegnn import keys
from hegnn_serve.training.config import load_config
from hegnn_serve.training.study import (
    MaxEpochsOption,
    MaxMinutesOption,
    ReportFolderOption,
    ReportOnlyOption,
    Run,
    RunRootOption,
    SeedsOption,
    execute,
)

BASELINE = "config"
ARM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
RESERVED_KEYS = ("name", "seed", "run_dir", "checkpoint_dir", "device")
METRICS = {  # task -> (metric, label): the first one decides
    keys.TASK_POTENTIAL: (
        ("force_mae_mev_per_a", "force MAE (meV/Å)"),
        ("energy_mae_mev", "energy MAE (meV)"),
    ),
    keys.TASK_DYNAMICS: (("mse", "MSE"),),
}


@dataclass(frozen=True)
class ArmRun(Run):
    """One (arm, seed): ``model`` holds the arm's name, ``sets`` its ``--set`` items."""

    sets: tuple[str, ...] = ()

    def model_overrides(self) -> list[str]:
        return list(self.sets)


def parse_arm(text: str) -> tuple[str, tuple[str, ...]]:
    """``"NAME: key=value key=value"`` -> (NAME, (key=value, ...))."""
    name, sep, rest = text.partition(":")
    name, sets = name.strip(), tuple(rest.split())
    if not sep or not sets:
        raise ValueError(f"--arm {text!r}: expected 'NAME: key=value [key=value ...]'")
    if not ARM_NAME.fullmatch(name) or name == BASELINE:
        raise ValueError(
            f"--arm {text!r}: the name must be lower-case letters, digits, - or _, "
            f"and not {BASELINE!r} (the unchanged config's arm)"
        )
    for item in sets:
        key = item.split("=", 1)[0]
        if "=" not in item or key in RESERVED_KEYS:
            raise ValueError(
                f"--arm {text!r}: {item!r} must be key=value, and the key none of "
                f"{', '.join(RESERVED_KEYS)} (the ablation sets those)"
            )
    return name, sets


def plan(
    config: Path,
    ablation: str,
    arms: list[tuple[str, tuple[str, ...]]],
    seeds: list[int],
    run_root: Path,
) -> list[ArmRun]:
    """Every (seed, arm), seed by seed, so that a seed's arms start together."""
    names = [name for name, _ in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"--arm: names repeat: {names}")
    for name, sets in arms:
        try:
            load_config(config, list(sets))  # fail early on a bad setting
        except ValueError as err:
            raise ValueError(f"--arm {name}: {err}") from err
    every = [(BASELINE, ()), *arms]
    return [
        ArmRun(ablation, name, seed, run_root / ablation, sets)
        for seed in seeds
        for name, sets in every
    ]


def score(run: ArmRun) -> dict[str, Any]:
    """A finished run's card metrics and validation curve."""
    from hegnn_serve.training.plots import read_metrics

    card = json.loads((run.checkpoint / "card.json").read_text())
    metrics, task = card["metrics"], card["task"]
    names = [m for m, _ in METRICS[task]]
    curve = [
        {"elapsed_s": r["elapsed_s"], "epoch": r["epoch"], "val": r[f"val_{names[0]}"]}
        for r in read_metrics(run.run_dir / "metrics.jsonl")
        if f"val_{names[0]}" in r
    ]
    return {
        "arm": run.model,
        "seed": run.seed,
        "task": task,
        "val": {m: float(metrics["val"][m]) for m in names},
        "test": {m: float(v) for m, v in metrics.get("test", {}).items() if m in names},
        "epochs": int(metrics["epochs"]),
        "best_epoch": int(metrics["best_epoch"]),
        "wall_min": round(card["training"]["wall_time_s"] / 60, 2),
        "stopped_by": card["training"].get("stopped_by"),
        "curve": curve,
    }


def paired_t(diff: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of seed-paired differences with its Student-t interval (None if n < 2)."""
    from scipy.stats import t

    d = np.asarray(diff, dtype=np.float64)
    mean = float(d.mean())
    if len(d) < 2:
        return {"mean": mean, "ci": None, "n": len(d)}
    half = float(t.ppf((1 + level) / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return {
        "mean": mean,
        "ci": [mean - half, mean + half],
        "excludes_zero": bool(abs(mean) > half),
        "n": len(d),
    }


def summarise(
    scores: list[dict[str, Any]], arms: dict[str, tuple[str, ...]]
) -> dict[str, Any]:
    """Per arm: metrics per seed and, against the config, the paired differences."""
    task = scores[0]["task"]
    names = [m for m, _ in METRICS[task]]
    by_arm = {arm: {s["seed"]: s for s in scores if s["arm"] == arm} for arm in arms}
    base = by_arm[BASELINE]
    out: dict[str, Any] = {}
    for arm, runs in by_arm.items():
        if not runs:  # --report-only before any of its runs finished
            continue
        seeds = sorted(runs)
        entry: dict[str, Any] = {
            "sets": list(arms[arm]),
            "seeds": seeds,
            "epochs": [runs[s]["epochs"] for s in seeds],
            "best_epoch": [runs[s]["best_epoch"] for s in seeds],
            "wall_min": [runs[s]["wall_min"] for s in seeds],
            "stopped_by": [runs[s]["stopped_by"] for s in seeds],
        }
        paired = [s for s in seeds if s in base] if arm != BASELINE else []
        for split in ("val", "test"):
            for m in names:
                values = [runs[s][split].get(m) for s in seeds]
                entry[f"{split}_{m}"] = values
                if None in values:
                    continue
                entry[f"{split}_{m}_mean"] = float(np.mean(values))
                if paired:
                    entry[f"{split}_{m}_minus_config"] = paired_t(
                        [runs[s][split][m] - base[s][split][m] for s in paired]
                    )
        out[arm] = entry
    return {"task": task, "metrics": names, "arms": out}


def _interval(p: dict[str, Any] | None) -> str:
    if not p:
        return "–"
    if p["ci"] is None:
        return f"{p['mean']:+.2f} (one seed)"
    return f"{p['mean']:+.2f} [{p['ci'][0]:+.2f}, {p['ci'][1]:+.2f}]"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table, one row per arm."""
    labels = dict(METRICS[report["task"]])
    lines = [
        f"# Ablation {report['ablation']}: {report['config']}, {report['budget']}",
        "",
        f"`{report['command']}`",
        "",
        "Validation decides; test is listed, not used. Δ: mean seed-paired "
        "difference arm − config, [Student-t 95 % interval].",
        "",
    ]
    head = ["arm", "settings", "epochs", "minutes", "stopped by"]
    for split in ("val", "test"):
        for m in report["metrics"]:
            head += [f"{split} {labels[m]} per seed", f"{split} Δ"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, e in report["arms"].items():
        row = [
            arm,
            " ".join(f"`{s}`" for s in e["sets"]) or "–",
            str(e["epochs"]),
            " / ".join(f"{m:.1f}" for m in e["wall_min"]),
            " / ".join(sorted({str(r) for r in e["stopped_by"]})),
        ]
        for split in ("val", "test"):
            for m in report["metrics"]:
                values = e[f"{split}_{m}"]
                row.append(" / ".join("–" if v is None else f"{v:.2f}" for v in values))
                row.append(_interval(e.get(f"{split}_{m}_minus_config")))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"![validation curves]({report['ablation']}.png)", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], scores: list[dict[str, Any]], out: Path) -> Path:
    """The decisive validation metric against training minutes, every arm and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {arm: f"C{i}" for i, arm in enumerate(report["arms"])}
    styles = ("-", "--", ":", "-.")
    seeds = sorted({s["seed"] for s in scores})
    for s in scores:
        c = s["curve"]
        ax.plot(
            [r["elapsed_s"] / 60 for r in c],
            [r["val"] for r in c],
            color=colours[s["arm"]],
            linestyle=styles[seeds.index(s["seed"]) % len(styles)],
            label=f"{s['arm']} s{s['seed']}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("training time (min)")
    ax.set_ylabel(f"validation {dict(METRICS[report['task']])[report['metrics'][0]]}")
    ax.set_title(f"{report['ablation']}: colour = arm, line style = seed")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def ablate(
    config: Annotated[Path, typer.Argument(help="training config YAML (the baseline)")],
    arm: Annotated[
        list[str],
        typer.Option(
            help="'NAME: key=value key=value ...': the config with these --set "
            "items (repeatable; the unchanged config is the arm 'config')"
        ),
    ],
    seeds: SeedsOption = "0,1,2",
    max_minutes: MaxMinutesOption = None,
    max_epochs: MaxEpochsOption = None,
    jobs: Annotated[
        int | None,
        typer.Option(min=1, help="runs in parallel (default: the number of arms)"),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="ablation name (default: the config's stem)")
    ] = None,
    run_root: RunRootOption = Path("runs"),
    out: ReportFolderOption = Path("docs/results"),
    report_only: ReportOnlyOption = False,
) -> None:
    """Train a config and variants of it side by side per seed; compare on val."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    ablation = name or config.stem
    try:
        arms = [parse_arm(a) for a in arm]
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        runs = plan(config, ablation, arms, seed_list, run_root)
    except (ValueError, FileNotFoundError, yaml.YAMLError) as err:
        raise typer.BadParameter(str(err)) from err
    command = shlex.join(["hegnn", *sys.argv[1:]])
    if not report_only:
        codes = execute(config, runs, jobs or len(arms) + 1, max_minutes, max_epochs)
        failed = [n for n, c in codes.items() if c]
        if failed:
            raise typer.Exit(f"failed runs: {', '.join(failed)} (see their study.log)")
    finished = [r for r in runs if r.done]
    if not finished:
        raise typer.Exit("no finished runs to report")
    scores = [score(r) for r in finished]
    optim = load_config(config).optim
    minutes = max_minutes or optim.max_minutes
    report = {
        "ablation": ablation,
        "config": str(config),
        "command": command,
        "budget": f"{minutes:g} min per run"
        if minutes
        else f"{max_epochs or optim.max_epochs} epochs per run",
        "selection": "each run's best-validation weights, as hegnn train keeps them",
        "pairing": "seed s of every arm trained side by side, one thread each",
        **summarise(scores, {BASELINE: (), **dict(arms)}),
        "curves": {f"{s['arm']}-s{s['seed']}": s["curve"] for s in scores},
    }
    out.mkdir(parents=True, exist_ok=True)
    plot(report, scores, out / f"{ablation}.png")
    (out / f"{ablation}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{ablation}.md").write_text(render_markdown(report))
    typer.echo(render_markdown(report))
