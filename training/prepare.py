"""From a TrainConfig to graphs per split, the ModelConfig and the data's record.

Each training task (its data section, training/config.py) names the input rule its
models use; the ModelConfig is built first, from the architecture and that rule,
and the datasets then build every graph through it (``hegnn.make_graph_data``).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from hegnn import keys
from hegnn.config import ModelConfig
from hegnn.rules import RULES, input_rule
from hegnn_serve.training.config import (
    DataBase,
    MD17ForceData,
    MD17TrajData,
    NBodyData,
    TrainConfig,
)
from hegnn_serve.training.data.md17 import (
    MD17Frames,
    load_frames,
    split_frames,
    subset,
    unseen,
)
from hegnn_serve.training.data.store import file_sha256, read_metadata
from hegnn_serve.training.data.tasks import (
    SPLITS,
    fit_reference_energies,
    force_graphs,
    md17_trajectory_dataset,
    nbody_dataset,
)

NBODY_STEPS_PER_FRAME = 100  # both N-body protocols save every 100th step
NBODY_DT = 0.001
DEFAULT_R_MAX = 5.0  # Å, force fields without model.r_max
DEFAULT_FORCE_SIZES = (650, 50, 100)  # train / val / test of 800 rMD17 frames


@dataclass
class Prepared:
    """Everything a run needs besides the optimiser."""

    splits: dict[str, list[Data]]
    model_config: ModelConfig
    delta_t: float | None = None
    statistics: dict[str, Any] = field(default_factory=dict)
    data_card: dict[str, Any] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)


def model_config(config: TrainConfig, **derived: Any) -> ModelConfig:
    """The run's ModelConfig: the ``model:`` architecture, the input rule the data
    section names (which fixes the task: potential or dynamics), and ``derived``
    fields that follow from the data (species, r_max)."""
    rule = RULES[config.data.features]
    fields = {**config.model.model_dump(), **derived}
    return ModelConfig(task=rule.task, features=rule.name, **fields)


def prepare(config: TrainConfig) -> Prepared:
    """Load the task's data and derive the architecture and statistics."""
    d = config.data
    data_card = {
        "path": str(d.path),
        "sha256": file_sha256(d.path),
        "content_sha256": content_sha256(d.path),
        "task": config.task,
    }
    return PREPARE[type(d)](config, data_card)


def _prepare_nbody(config: TrainConfig, data_card: dict[str, Any]) -> Prepared:
    d: NBodyData = config.data  # type: ignore[assignment]
    dtype = getattr(torch, config.dtype)
    mc = model_config(config, r_max=None)
    splits = {
        s: nbody_dataset(mc, d.path, s, d.frame_in, d.frame_out, dtype=dtype)
        for s in SPLITS
    }
    if d.rotate_test:
        splits["test_rotated"] = nbody_dataset(
            mc,
            d.path,
            "test",
            d.frame_in,
            d.frame_out,
            rotate=True,
            seed=config.seed,
            dtype=dtype,
        )
    if d.sizes:
        splits = _truncate(splits, d.sizes)
    steps = (d.frame_out - d.frame_in) * NBODY_STEPS_PER_FRAME
    data_card.update(frames=[d.frame_in, d.frame_out], protocol_steps=steps)
    units = {
        keys.POSITIONS: input_rule(mc).length_unit,
        keys.VELOCITIES: "length / time unit (dt = 0.001 per integrator step)",
        keys.TIME: f"time unit; the model advances {steps * NBODY_DT:g}",
    }
    return Prepared(splits, mc, steps * NBODY_DT, {}, data_card, units)


def _prepare_md17_traj(config: TrainConfig, data_card: dict[str, Any]) -> Prepared:
    d: MD17TrajData = config.data  # type: ignore[assignment]
    frames = _frames(d, data_card)
    mc = model_config(config, r_max=None)
    sizes = d.sizes or (500, 2000, 2000)
    splits = md17_trajectory_dataset(
        frames,
        mc,
        d.delta,
        d.split_seed,
        sizes,
        d.margin,
        dtype=getattr(torch, config.dtype),
    )
    data_card.update(
        delta_frames=d.delta,
        margin=d.margin,
        split_seed=d.split_seed,
        sizes=list(sizes),
        frame_time_fs=d.frame_time_fs,
    )
    length = input_rule(mc).length_unit
    units = {
        keys.POSITIONS: length,
        keys.VELOCITIES: f"{length}/frame (1 frame = {d.frame_time_fs:g} fs)",
        keys.TIME: f"frames; the model advances {d.delta} frames "
        f"= {d.delta * d.frame_time_fs:g} {keys.UNITS[keys.TIME]}",
    }
    return Prepared(splits, mc, float(d.delta), {}, data_card, units)


def md17_force_frames(
    d: MD17ForceData, data_card: dict[str, Any] | None = None
) -> dict[str, MD17Frames]:
    """Train / val / test frames of a force-field data section: ``path`` shuffled
    by ``seed`` and cut into ``sizes``; with ``test_path``, the test split is that
    file's frames that are in neither train nor val (to 1e-4 Å, any atom order).
    What was used is recorded in ``data_card``."""
    card = {} if data_card is None else data_card
    frames = _frames(d, card)
    sizes = d.sizes or DEFAULT_FORCE_SIZES
    split = split_frames(frames, sizes, d.seed)
    card.update(sizes=list(sizes), split_seed=d.seed)
    if d.test_path is not None:
        extra = load_frames(d.test_path, d.test_unit or d.unit)
        foreign = set(extra.numbers.tolist()) - set(frames.numbers.tolist())
        if foreign:
            raise ValueError(
                f"data.test_path: {d.test_path} has species {sorted(foreign)} "
                f"that {d.path} lacks"
            )
        keep = unseen(extra, split["train"], split["val"])
        if not len(keep):
            raise ValueError(
                f"data.test_path: every frame of {d.test_path} is in train or val"
            )
        split["test"] = subset(extra, keep)
        card["test"] = {
            "path": str(d.test_path),
            "sha256": file_sha256(d.test_path),
            "frames_in_file": len(extra),
            "frames_seen_in_training": len(extra) - len(keep),
            "source": extra.source,
        }
    return split


def _prepare_md17_force(config: TrainConfig, data_card: dict[str, Any]) -> Prepared:
    d: MD17ForceData = config.data  # type: ignore[assignment]
    split = md17_force_frames(d, data_card)
    species = tuple(sorted({int(z) for z in split["train"].numbers}))
    mc = model_config(
        config, r_max=config.model.r_max or DEFAULT_R_MAX, species=species
    )
    dtype = getattr(torch, config.dtype)
    splits = {name: force_graphs(part, mc, dtype) for name, part in split.items()}
    statistics = potential_statistics(splits["train"], species)
    return Prepared(splits, mc, None, statistics, data_card, dict(keys.POTENTIAL_UNITS))


def _frames(d: MD17TrajData | MD17ForceData, data_card: dict[str, Any]) -> MD17Frames:
    frames = load_frames(d.path, d.unit)
    data_card["source"] = frames.source
    return frames


PREPARE: dict[type[DataBase], Callable[[TrainConfig, dict[str, Any]], Prepared]] = {
    NBodyData: _prepare_nbody,
    MD17TrajData: _prepare_md17_traj,
    MD17ForceData: _prepare_md17_force,
}


def content_sha256(path: Path) -> str | None:
    """sha256 of the arrays recorded by the project's generators (None otherwise).

    Unlike the file's hash it does not change with the wall time in the metadata, so
    a regenerated dataset can be checked against a card.
    """
    if path.suffix != ".npz":
        return None
    with np.load(path, allow_pickle=False) as npz:
        meta = read_metadata(npz)
    return meta.get("sha256") if meta else None


def potential_statistics(train: list[Data], species: tuple[int, ...]) -> dict[str, Any]:
    """E0 per species (least squares), σ_E = force RMS, μ_E = mean residual per atom,
    and the mean neighbour count, all from the training split."""
    numbers = [g[keys.NUMBERS].numpy() for g in train]
    energies = np.array([float(g[keys.ENERGY]) for g in train])
    e0 = fit_reference_energies(numbers, energies, species)
    counts = np.array([len(z) for z in numbers])
    baseline = np.array([e0[np.searchsorted(species, z)].sum() for z in numbers])
    forces = torch.cat([g[keys.FORCES] for g in train]).double()
    neighbours = [g[keys.EDGE_INDEX].shape[1] / g.num_nodes for g in train]
    return {
        "atomic_energies": e0.tolist(),
        "energy_shift": float(((energies - baseline) / counts).mean()),
        "energy_scale": float(forces.pow(2).mean().sqrt()),
        "avg_num_neighbors": float(np.mean(neighbours)),
    }


def _truncate(splits: dict[str, list[Data]], sizes) -> dict[str, list[Data]]:
    limit = {
        "train": sizes[0],
        "val": sizes[1],
        "test": sizes[2],
        "test_rotated": sizes[2],
    }
    return {k: v[: limit[k]] for k, v in splits.items()}
