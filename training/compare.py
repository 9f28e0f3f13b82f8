"""`hegnn compare A B`: is force field A more accurate than B? Seeds and frames.

A and B are committees (``hegnn committee``) of seed members trained on the same
data split. Every member predicts the same held-out frames: the members' test split
and, per ``--heldout`` file, its frames unseen in training. Per frame and member,
the force MAE (mean |ΔF| over atoms and components, meV/Å) and the energy error
(|ΔE|, meV). Members are paired by seed number and frames by identity, so the
difference A − B is taken on matched units.

The 95 % interval of the mean difference is a two-level percentile bootstrap:
each resample draws seed pairs with replacement, then frames with replacement,
so it holds both the spread between training runs and the sampling of test
frames (a frames-only interval, seeds fixed, is reported beside it). With three
seeds the seed level has few distinct resamples; the interval is wide, as it
should be. The members' budgets (caps on minutes and gradient clip) are recorded:
a comparison is at equal budget only when they match, and the report says so. The
minutes each member used are printed beside the verdict: under a stop rule
(``optim.min_lr``, early stopping) equal caps may still mean unequal CPU time.
"""

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from hegnn import load, read_card
from hegnn_serve.training.committee import frame_outputs, member_frames, same_split
from hegnn_serve.training.data.md17 import MD17Frames, load_frames, subset, unseen
from hegnn_serve.training.study import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, bootstrap_ci

logger = logging.getLogger(__name__)

METRICS = ("force_mae_mev_per_a", "energy_mae_mev")


def members_by_seed(committee: Path) -> dict[int, Path]:
    """The member folders of a committee checkpoint, by training seed."""
    spec = read_card(committee).committee
    if spec is None:
        raise typer.BadParameter(f"{committee}: not a committee (hegnn committee)")
    return {m.seed: committee / m.folder for m in spec.members}


def budget(member: Path) -> dict[str, Any]:
    """What one member's training was given and used."""
    card = read_card(member)
    training = card.model_extra["training"]
    optim = training["config"]["optim"]
    return {
        "max_minutes": optim.get("max_minutes"),
        "grad_clip": optim.get("grad_clip"),
        "wall_minutes": round(training["wall_time_s"] / 60, 1),
        "epochs": card.metrics.get("epochs"),
        "best_epoch": card.metrics.get("best_epoch"),
        "stopped_by": training.get("stopped_by"),
    }


def budget_note(budgets: dict[str, dict[str, dict[str, Any]]]) -> tuple[bool, str]:
    """Equal caps (max_minutes, grad_clip) for every member? And the minutes used,
    per side in seed order, with the ratio of the sides' means."""
    given = {
        side: {(v["max_minutes"], v["grad_clip"]) for v in per_seed.values()}
        for side, per_seed in budgets.items()
    }
    equal = len(given["a"] | given["b"]) == 1
    if equal:
        ((minutes, clip),) = given["a"]
        note = f"equal budget caps (max_minutes {minutes}, grad_clip {clip})"
    else:
        a_given, b_given = (sorted(given[side], key=str) for side in ("a", "b"))
        note = f"NOT an equal budget: (max_minutes, grad_clip) A {a_given}, B {b_given}"
    used = {
        side: [v["wall_minutes"] for v in per_seed.values()]
        for side, per_seed in budgets.items()
    }
    ratio = np.mean(used["a"]) / np.mean(used["b"])
    note += (
        "; minutes used A "
        + " / ".join(f"{m:g}" for m in used["a"])
        + ", B "
        + " / ".join(f"{m:g}" for m in used["b"])
        + f" (A/B {ratio:.2f}x)"
    )
    return equal, note


def frame_errors(member: Path, frames: MD17Frames) -> dict[str, np.ndarray]:
    """Per-frame force MAE (meV/Å) and |energy error| (meV) of one member, and
    its predicted forces (eV/Å)."""
    model, card = load(member)
    out = frame_outputs(model, card.model, frames.positions, frames.numbers)
    return {
        "force_mae_mev_per_a": 1000
        * np.abs(out["forces"] - frames.forces).mean((1, 2)),
        "energy_mae_mev": 1000 * np.abs(out["energy"] - frames.energies),
        "forces": out["forces"],
        "energy": out["energy"],
    }


def two_level_ci(
    diff: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(mean, low, high) of ``diff`` [seed pairs, frames]: percentile bootstrap
    that resamples seed pairs, then frames, each with replacement."""
    diff = np.asarray(diff, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n_seeds, n_frames = diff.shape
    means = np.empty(resamples)
    for k in range(resamples):
        rows = rng.integers(0, n_seeds, n_seeds)
        columns = rng.integers(0, n_frames, n_frames)
        means[k] = diff[np.ix_(rows, columns)].mean()
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(diff.mean()), float(low), float(high)


def committee_mean_errors(errors: list[dict[str, np.ndarray]], frames: MD17Frames):
    """Per-frame errors of the members' mean prediction (what the committee serves)."""
    forces = np.mean([e["forces"] for e in errors], axis=0)
    energy = np.mean([e["energy"] for e in errors], axis=0)
    return {
        "force_mae_mev_per_a": 1000 * np.abs(forces - frames.forces).mean((1, 2)),
        "energy_mae_mev": 1000 * np.abs(energy - frames.energies),
    }


def compare_on(
    frames: MD17Frames, a: dict[int, Path], b: dict[int, Path], seeds: list[int]
) -> dict[str, Any]:
    """Both committees' errors on ``frames`` and the paired differences A − B."""
    errors = {
        side: [frame_errors(members[s], frames) for s in seeds]
        for side, members in (("a", a), ("b", b))
    }
    result: dict[str, Any] = {"n_frames": len(frames.positions)}
    for metric in METRICS:
        per = {
            side: np.stack([e[metric] for e in errs]) for side, errs in errors.items()
        }
        diff = per["a"] - per["b"]
        mean, low, high = two_level_ci(diff)
        _, frames_low, frames_high = bootstrap_ci(diff.mean(0))
        mean_of = {
            side: committee_mean_errors(errs, frames)[metric]
            for side, errs in errors.items()
        }
        _, mean_low, mean_high = bootstrap_ci(mean_of["a"] - mean_of["b"])
        result[metric] = {
            "a_per_seed": per["a"].mean(1).tolist(),
            "b_per_seed": per["b"].mean(1).tolist(),
            "a_mean": float(per["a"].mean()),
            "b_mean": float(per["b"].mean()),
            "diff_mean": mean,
            "ci95": [low, high],
            "ci95_frames_only": [frames_low, frames_high],
            "excludes_zero": bool(high < 0 or low > 0),
            "seed_paired_diff": diff.mean(1).tolist(),
            "fraction_frames_a_better": float((diff.mean(0) < 0).mean()),
            "committee_mean": {
                "a": float(mean_of["a"].mean()),
                "b": float(mean_of["b"].mean()),
                "diff_mean": float((mean_of["a"] - mean_of["b"]).mean()),
                "ci95_frames": [mean_low, mean_high],
            },
        }
    return result


def render_markdown(summary: dict[str, Any]) -> str:
    a, b = summary["a"]["name"], summary["b"]["name"]
    lines = [
        f"# {a} vs {b}",
        "",
        f"Seeds {summary['seeds']}, paired by seed; {summary['equal_budget_note']}",
        "",
        "| frames | metric | A per seed | B per seed | A − B, mean [95 % CI, "
        "seeds and frames] | CI, frames only | committee means A / B |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, found in summary["sets"].items():
        for metric in METRICS:
            m = found[metric]
            per_seed = [
                " / ".join(f"{v:.1f}" for v in m[k])
                for k in ("a_per_seed", "b_per_seed")
            ]
            lo, hi = m["ci95"]
            flo, fhi = m["ci95_frames_only"]
            c = m["committee_mean"]
            lines.append(
                f"| {name} ({found['n_frames']}) | {metric} | {per_seed[0]} | "
                f"{per_seed[1]} | {m['diff_mean']:+.2f} [{lo:+.2f}, {hi:+.2f}] | "
                f"[{flo:+.2f}, {fhi:+.2f}] | {c['a']:.1f} / {c['b']:.1f} |"
            )
    lines += ["", f"Command: `{summary['command']}`", ""]
    return "\n".join(lines)


def compare(
    a: Annotated[Path, typer.Argument(help="committee checkpoint A")],
    b: Annotated[Path, typer.Argument(help="committee checkpoint B")],
    heldout: Annotated[
        list[Path] | None,
        typer.Option(help="more labelled frames (extxyz or .npz; repeat)"),
    ] = None,
    heldout_unit: Annotated[
        str, typer.Option(help="energy unit of the --heldout files")
    ] = "kcal/mol",
    report: Annotated[
        Path, typer.Option(help="folder for compare-A-vs-B.json and .md")
    ] = Path("docs/results"),
) -> None:
    """Paired seeds × frames: force and energy errors of two committees, A − B with
    95 % bootstrap intervals."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    members = {"a": members_by_seed(a), "b": members_by_seed(b)}
    seeds = sorted(set(members["a"]) & set(members["b"]))
    if not seeds:
        raise typer.BadParameter(f"{a} and {b} share no member seed to pair")
    first = {side: m[seeds[0]] for side, m in members.items()}
    split = member_frames(first["a"])
    if not same_split(first["a"], split, first["b"]):
        raise typer.BadParameter(f"{b}: trained on another split than {a}")
    sets = {"test split": split["test"]}
    for path in heldout or []:
        extra = load_frames(path, heldout_unit)
        sets[path.name] = subset(extra, unseen(extra, split["train"], split["val"]))
    budgets = {
        side: {str(s): budget(members[side][s]) for s in seeds} for side in members
    }
    equal, note = budget_note(budgets)
    summary = {
        "a": {"name": a.name, "budgets": budgets["a"]},
        "b": {"name": b.name, "budgets": budgets["b"]},
        "seeds": seeds,
        "equal_budget": equal,
        "equal_budget_note": note,
        "bootstrap": {
            "resamples": BOOTSTRAP_RESAMPLES,
            "seed": BOOTSTRAP_SEED,
            "level": 0.95,
            "ci95": "seed pairs resampled, then frames, with replacement",
            "ci95_frames_only": "per-frame difference averaged over seeds; frames "
            "resampled",
        },
        "sets": {
            name: compare_on(found, members["a"], members["b"], seeds)
            for name, found in sets.items()
        },
        "command": shlex.join(["hegnn", *sys.argv[1:]]),
    }
    report.mkdir(parents=True, exist_ok=True)
    stem = report / f"compare-{a.name}-vs-{b.name}"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    markdown = render_markdown(summary)
    stem.with_suffix(".md").write_text(markdown)
    typer.echo(markdown)
