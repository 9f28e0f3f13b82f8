"""`hegnn committee`: seed members into one committee checkpoint, calibrated.

The committee's spread is calibrated on structures no member saw in training or
model selection, in three sets:

- held-out labelled configurations: the members' test split (shared: same data
  file, sizes and split seed) plus any ``--heldout`` file, minus frames that are in
  the training data. Here ``max_force_std`` is set against the true max force error
  (Spearman, with a 95 % bootstrap interval over the frames), and the threshold
  ``max_force_std`` is chosen: its 95th percentile, so that 5 % of in-distribution
  structures are flagged;
- equilibrium MD configurations (``--md``, no labels needed): the fraction flagged
  there is the false-flag rate on what an MD user runs;
- distorted structures: each held-out configuration with one bond stretched by a
  factor drawn from [1.2, 1.5] (the lighter atom moved along the bond): the
  fraction flagged should be near 1.

The threshold and the measurements go into the card (``committee.uncertainty``),
the figures into ``--report`` (JSON and PNG). Recalibrating a committee in place
keeps its card's NVE check (``metrics.nve``) while its members' weights are the same.

``--best-to DIR`` also ships the member with the lowest validation force MAE as a
model of its own (seed selection on validation data only; the card says which seed
won and what each scored).
"""

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from ase.data import atomic_masses
from scipy.stats import spearmanr
from torch_geometric.data import Batch

from hegnn import keys, load, make_graph_data, read_card, save_committee
from hegnn.checkpoint import (
    CARD_FILE,
    add_card_metrics,
    copy_checkpoint,
    members_sha256,
)
from hegnn.structure import StructureInput, centred
from hegnn_serve.training.commands import evaluate_checkpoint
from hegnn_serve.training.config import stored_config
from hegnn_serve.training.data.md17 import (
    SPLIT_NAMES,
    MD17Frames,
    load_frames,
    subset,
    unseen,
)
from hegnn_serve.training.prepare import md17_force_frames

logger = logging.getLogger(__name__)

FLAG_QUANTILE = 0.95  # threshold: 5 % of held-out structures flagged
STRETCH = (1.2, 1.5)  # bond stretch factors of the distorted set
BOND_LENGTH = 1.6  # Å, pairs closer than this are bonds
BATCH = 32
BOOTSTRAP = 2000  # resamples of the held-out frames for the Spearman interval
SELECTION_METRIC = "force_mae_mev_per_a"  # on the validation split: which seed ships


def spearman_interval(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> list[float]:
    """95 % percentile-bootstrap interval of Spearman(x, y), frames resampled."""
    index = rng.integers(len(x), size=(BOOTSTRAP, len(x)))
    rho = [spearmanr(x[i], y[i]).statistic for i in index]
    return [float(q) for q in np.quantile(rho, [0.025, 0.975])]


def frame_outputs(
    model: torch.nn.Module, config, positions: np.ndarray, numbers: np.ndarray
) -> dict[str, np.ndarray]:
    """``energy`` [n] eV and ``forces`` [n, atoms, 3] eV/Å (float64) of frames;
    a committee's also ``max_force_std`` and ``energy_std`` [n]."""
    dtype = next(model.parameters()).dtype
    found: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(positions), BATCH):
        graphs = []
        for x in positions[start : start + BATCH]:
            structure, _ = centred(StructureInput(positions=x, numbers=numbers))
            graphs.append(
                make_graph_data(
                    config, structure.positions, numbers=numbers, dtype=dtype
                )
            )
        out = model(Batch.from_data_list(graphs))
        out[keys.FORCES] = out[keys.FORCES].reshape(-1, len(numbers), 3)
        for key in (keys.ENERGY, keys.FORCES, keys.MAX_FORCE_STD, keys.ENERGY_STD):
            if key in out:
                found.setdefault(key, []).append(out[key].detach().numpy())
    return {k: np.concatenate(v).astype(np.float64) for k, v in found.items()}


def stretch_one_bond(
    positions: np.ndarray, numbers: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Copies of ``positions`` [n, atoms, 3], each with one random bond stretched."""
    out = positions.copy()
    masses = atomic_masses[numbers]
    for frame in out:
        distance = np.linalg.norm(frame[:, None] - frame[None], axis=-1)
        i, j = np.nonzero(np.triu(distance < BOND_LENGTH, k=1))
        k = rng.integers(len(i))
        a, b = (i[k], j[k]) if masses[i[k]] >= masses[j[k]] else (j[k], i[k])
        bond = frame[b] - frame[a]  # b, the lighter atom, moves
        frame[b] = frame[a] + rng.uniform(*STRETCH) * bond
    return out


def member_frames(member: Path) -> dict[str, MD17Frames]:
    """The train / val / test frames a member was trained and tested on."""
    config = stored_config(read_card(member).model_extra["training"]["config"])
    return md17_force_frames(config.data)


def same_split(a: Path, split_a: dict[str, MD17Frames], b: Path) -> bool:
    """Whether members ``a`` (its frames ``split_a``, from :func:`member_frames`)
    and ``b`` share a data file (by sha256) and its split."""
    files = [read_card(m).model_extra.get("data", {}).get("sha256") for m in (a, b)]
    split_b = member_frames(b)
    return files[0] == files[1] and all(
        np.array_equal(split_a[name].positions, split_b[name].positions)
        for name in SPLIT_NAMES
    )


def ship_best(members: list[Path], target: Path, command: str) -> dict[str, Any]:
    """Copy the member with the lowest validation force MAE to ``target`` (named
    after it); returns the ``selection`` written to its card. Checks measured on
    the target since it was shipped (``nve``, ``eval_*``) stay if the weights do."""
    cards = {m: read_card(m) for m in members}
    scores = {m: cards[m].metrics["val"][SELECTION_METRIC] for m in members}
    best = min(members, key=scores.__getitem__)
    selection = {
        "by": f"val {SELECTION_METRIC}",
        "chosen": best.name,
        "seed": cards[best].model_extra["training"]["config"]["seed"],
        "candidates": {m.name: scores[m] for m in members},
        "command": command,
    }
    kept = measured_on_same_weights(target, cards[best].weights_sha256)
    copy_checkpoint(best, target, name=target.name, selection=selection)
    for key, value in kept.items():
        add_card_metrics(target, key, value)
    return selection


def measured_on_same_weights(target: Path, weights_sha256: str) -> dict[str, Any]:
    """The ``nve`` and ``eval_*`` metrics in ``target``'s card if it holds these
    weights, else none: they were measured on other weights."""
    if not (target / CARD_FILE).is_file():
        return {}
    card = json.loads((target / CARD_FILE).read_text())
    if card.get("weights_sha256") != weights_sha256:
        return {}
    metrics = card.get("metrics", {})
    return {k: v for k, v in metrics.items() if k == "nve" or k.startswith("eval_")}


def nve_of_same_weights(out: Path, members: list[Path]) -> dict[str, Any] | None:
    """The NVE check in the card at ``out`` if that committee has ``members``'
    weights (recalibration in place), else None: a new member makes it stale."""
    hashes = [read_card(m).weights_sha256 for m in members]
    return measured_on_same_weights(out, members_sha256(hashes)).get("nve")


def calibrate(
    model: torch.nn.Module,
    config,
    heldout: list[MD17Frames],
    md: MD17Frames | None,
    seed: int = 0,
) -> dict[str, Any]:
    """The measurements of the module docstring (arrays under ``points``).
    ``heldout``: labelled sets, each in its own atom order."""
    rng = np.random.default_rng(seed)
    std, error, distorted = [], [], []
    for frames in heldout:
        x, z = frames.positions, frames.numbers
        labelled = frame_outputs(model, config, x, z)
        std.append(labelled["max_force_std"])
        error.append(
            np.linalg.norm(labelled["forces"] - frames.forces, axis=-1).max(-1)
        )
        stretched = stretch_one_bond(x, z, rng)
        distorted.append(frame_outputs(model, config, stretched, z))
    std, error = np.concatenate(std), np.concatenate(error)
    distorted = np.concatenate([d["max_force_std"] for d in distorted])
    threshold = float(np.quantile(std, FLAG_QUANTILE))
    worst = error >= np.quantile(error, FLAG_QUANTILE)
    result: dict[str, Any] = {
        "threshold_max_force_std": threshold,
        "threshold_rule": f"{FLAG_QUANTILE:.0%} quantile of max_force_std on held-out",
        "heldout": {
            "n": len(std),
            "spearman_max_force_std_vs_max_force_error": float(
                spearmanr(std, error).statistic
            ),
            "spearman_ci95": spearman_interval(std, error, rng),
            "worst_5pc_errors_flagged": float((std[worst] > threshold).mean()),
            "max_force_std_median": float(np.median(std)),
            "max_force_error_median": float(np.median(error)),
        },
        "distorted": {
            "n": len(distorted),
            "stretch": list(STRETCH),
            "flagged": float((distorted > threshold).mean()),
            "max_force_std_median": float(np.median(distorted)),
        },
        "points": {"heldout_std": std, "heldout_error": error, "distorted": distorted},
    }
    if md is not None:
        md_std = frame_outputs(model, config, md.positions, md.numbers)
        md_std = md_std["max_force_std"]
        result["md"] = {
            "n": len(md_std),
            "flagged": float((md_std > threshold).mean()),
            "max_force_std_median": float(np.median(md_std)),
        }
        result["points"]["md"] = md_std
    return result


def plot(result: dict[str, Any], name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    points, threshold = result["points"], result["threshold_max_force_std"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.scatter(points["heldout_std"], points["heldout_error"], s=8, alpha=0.6)
    left.axvline(threshold, color="k", ls="--", lw=1, label="threshold")
    left.set(
        xscale="log",
        yscale="log",
        xlabel="max_force_std (eV/Å)",
        ylabel="true max force error (eV/Å)",
        title=f"held-out, Spearman "
        f"{result['heldout']['spearman_max_force_std_vs_max_force_error']:.2f}",
    )
    left.legend()
    for axis in (left.xaxis, left.yaxis, right.xaxis):
        axis.set_minor_formatter(NullFormatter())  # labels of 10^k only: no overlap
    sets = {"held-out": points["heldout_std"], "distorted": points["distorted"]}
    if "md" in points:
        sets["equilibrium MD"] = points["md"]
    everything = np.concatenate(list(sets.values()))
    bins = np.geomspace(everything.min(), everything.max(), 40)
    for label, values in sets.items():
        right.hist(values, bins=bins, histtype="step", lw=1.5, label=label)
    right.axvline(threshold, color="k", ls="--", lw=1)
    right.set(xscale="log", xlabel="max_force_std (eV/Å)", ylabel="structures")
    right.set_title("flagged: right of the threshold")
    right.legend()
    fig.suptitle(name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def committee(
    member: Annotated[
        list[Path], typer.Option(help="a member checkpoint folder (repeat, ≥ 2)")
    ],
    out: Annotated[Path, typer.Option(help="the committee's checkpoint folder")],
    heldout: Annotated[
        list[Path] | None,
        typer.Option(help="more labelled held-out frames (extxyz or .npz; repeat)"),
    ] = None,
    heldout_unit: Annotated[
        str, typer.Option(help="energy unit of the --heldout files")
    ] = "kcal/mol",
    md: Annotated[
        Path | None,
        typer.Option(
            help="equilibrium MD frames for false flags (frames seen in training "
            "are dropped); decorrelated frames measure the rate, consecutive ones "
            "one stretch of trajectory"
        ),
    ] = None,
    md_unit: Annotated[str, typer.Option(help="energy unit of an --md extxyz")] = (
        "kcal/mol"
    ),
    md_every: Annotated[int, typer.Option(help="use every n-th --md frame")] = 10,
    report: Annotated[
        Path, typer.Option(help="folder for committee-NAME.json and .png")
    ] = Path("docs/results"),
    seed: Annotated[int, typer.Option(help="seed of the bond stretches")] = 0,
    best_to: Annotated[
        Path | None,
        typer.Option(
            help="also copy the member best on validation (force MAE) to this "
            "checkpoint folder, named after it"
        ),
    ] = None,
) -> None:
    """Put seed members into one committee checkpoint and calibrate its spread."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if len(member) < 2:
        raise typer.BadParameter("a committee needs at least 2 --member folders")
    split = member_frames(member[0])
    seen = (split["train"], split["val"])
    for other in member[1:]:
        if not same_split(member[0], split, other):
            raise typer.BadParameter(f"{other}: trained on another split")
    labelled = [split["test"]]
    for path in heldout or []:
        extra = load_frames(path, heldout_unit)
        keep = unseen(extra, *seen)
        logger.info(
            "%s: %d of %d frames unseen in training", path, len(keep), len(extra)
        )
        labelled.append(subset(extra, keep))
    md_frames = None
    if md is not None:
        every = load_frames(md, None if md.suffix == ".npz" else md_unit)
        keep = unseen(every, *seen)[::md_every]
        logger.info(
            "%s: %d frames unseen in training, every %d-th", md, len(keep), md_every
        )
        md_frames = subset(every, keep)
    command = shlex.join(["hegnn", *sys.argv[1:]])
    first_card = read_card(member[0])
    documentation = {  # the members' data protocol: `hegnn eval` scores the mean
        **{
            key: value
            for key, value in first_card.model_extra.items()
            if key not in ("description", "metrics", "training")
        },
        "description": f"committee of {len(member)} seeds of {first_card.name}",
        "training": {
            "command": command,
            "config": first_card.model_extra["training"]["config"],
        },
    }
    kept_nve = nve_of_same_weights(out, member)
    save_committee(member, out, documentation)
    if best_to is not None:  # after the copy above: best_to may be one of the members
        selection = ship_best(member, best_to, command)
        logger.info("%s: %s (seed %s)", best_to, selection["chosen"], selection["seed"])
    if kept_nve is not None:
        add_card_metrics(out, "nve", kept_nve)
    model, card = load(out)
    result = calibrate(model, card.model, labelled, md_frames, seed)
    points = result.pop("points")
    result["command"] = command
    raw = json.loads((out / CARD_FILE).read_text())
    raw["committee"]["uncertainty"] = result
    (out / CARD_FILE).write_text(json.dumps(raw, indent=2) + "\n")
    scored = evaluate_checkpoint(out, split="test")  # the committee mean's errors
    add_card_metrics(out, "test", scored)
    add_card_metrics(out, "eval_test", scored)
    report.mkdir(parents=True, exist_ok=True)
    stem = report / f"committee-{out.name}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    plot({**result, "points": points}, out.name, stem.with_suffix(".png"))
    typer.echo(json.dumps(result, indent=2))
