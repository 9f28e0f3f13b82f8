"""From a TrainConfig to graphs per split, the ModelConfig and the data's record."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from hegnn import keys
from hegnn.config import ModelConfig
from training.config import TrainConfig
from training.data.md17 import load_frames
from training.data.store import file_sha256, read_metadata
from training.data.tasks import (
    fit_reference_energies,
    md17_force_dataset,
    md17_trajectory_dataset,
    nbody_dataset,
)

NBODY_STEPS_PER_FRAME = 100  # both N-body protocols save every 100th step
NBODY_DT = 0.001


@dataclass
class Prepared:
    """Everything a run needs besides the optimiser."""

    splits: dict[str, list[Data]]
    model_config: ModelConfig
    delta_t: float | None = None
    statistics: dict[str, Any] = field(default_factory=dict)
    data_card: dict[str, Any] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)


def prepare(config: TrainConfig) -> Prepared:
    """Load the task's data and derive the architecture and statistics."""
    dtype = getattr(torch, config.dtype)
    d = config.data
    arch = config.model.model_dump()
    data_card = {
        "path": str(d.path),
        "sha256": file_sha256(d.path),
        "content_sha256": content_sha256(d.path),
        "task": config.task,
    }
    if config.task == "nbody":
        splits = {
            s: nbody_dataset(d.path, s, d.frame_in, d.frame_out, dtype=dtype)
            for s in ("train", "val", "test")
        }
        if d.rotate_test:
            splits["test_rotated"] = nbody_dataset(
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
        arch.pop("r_max")
        model_config = ModelConfig(task="dynamics", features="nbody", **arch)
        steps = (d.frame_out - d.frame_in) * NBODY_STEPS_PER_FRAME
        data_card.update(frames=[d.frame_in, d.frame_out], protocol_steps=steps)
        units = {
            "positions": "simulation length unit",
            "velocities": "length / time unit (dt = 0.001 per integrator step)",
            "time": f"time unit; the model advances {steps * NBODY_DT:g}",
        }
        return Prepared(splits, model_config, steps * NBODY_DT, {}, data_card, units)

    frames = load_frames(d.path, d.unit)
    data_card["source"] = frames.source
    if config.task == "md17-traj":
        sizes = d.sizes or (500, 2000, 2000)
        splits = md17_trajectory_dataset(
            frames, d.delta, d.split_seed, sizes, d.margin, dtype=dtype
        )
        arch.pop("r_max")
        model_config = ModelConfig(task="dynamics", features="md17-traj", **arch)
        data_card.update(
            delta_frames=d.delta,
            margin=d.margin,
            split_seed=d.split_seed,
            sizes=list(sizes),
            frame_time_fs=d.frame_time_fs,
        )
        units = {
            "positions": "Å",
            "velocities": f"Å/frame (1 frame = {d.frame_time_fs:g} fs)",
            "time": f"frames; the model advances {d.delta} frames "
            f"= {d.delta * d.frame_time_fs:g} fs",
        }
        return Prepared(splits, model_config, float(d.delta), {}, data_card, units)

    sizes = d.sizes or (650, 50, 100)
    r_max = config.model.r_max or 5.0
    splits = md17_force_dataset(frames, r_max, sizes, d.seed, dtype=dtype)
    arch["r_max"] = r_max
    species = tuple(sorted({int(z) for z in frames.numbers}))
    model_config = ModelConfig(
        task="potential", features="species", species=species, **arch
    )
    data_card.update(sizes=list(sizes), split_seed=d.seed)
    units = {"energy": "eV", "forces": "eV/Å", "positions": "Å"}
    statistics = potential_statistics(splits["train"], species)
    return Prepared(splits, model_config, None, statistics, data_card, units)


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
