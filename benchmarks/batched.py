"""Batched energy + forces: 1, 8 and 32 aspirins and one 100-atom all-pairs cluster.

EGNN, HEGNN L = 1..3, HEGNN L = 3 through ``torch.compile`` and, with a MACE
overlay (``--mace-path``, see benchmarks/mace_anchor.py), MACE 64 channels, all timed
in the same interleaved rounds: with MACE the whole benchmark runs in one MACE
interpreter (``python -m hegnn_serve.benchmarks.mace_anchor --batched``), so every
ratio is taken within one run. Random weights, float32, frozen parameters (as served).
"""

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ase import Atoms
from torch_geometric.data import Batch

from hegnn import ModelConfig, build_model, compile_backbones, keys, make_graph_data
from hegnn.testing import random_structure
from hegnn_serve.benchmarks.common import (
    Run,
    Target,
    aspirin,
    interleaved,
    median,
    paired_ratio,
    run_in_mace,
)
from hegnn_serve.benchmarks.model import R_MAX, SPECIES

logger = logging.getLogger(__name__)

# A 100-atom cluster (radius 6.7 Å at 0.08 atoms/Å^3) with a cutoff above its diameter:
# every pair is an edge (9900), the dense end of what a force call can meet.
CLUSTER_ATOMS, CLUSTER_R_MAX = 100, 14.0
# A make_calls(structures, r_max, n_avg) -> {model name: energy+forces call} hook for
# models outside this project (MACE, in its own interpreter).
ExtraModels = Callable[[list[Atoms], float, float], dict[str, Callable[[], None]]]


@dataclass(frozen=True)
class BatchedBenchConfig:
    """Batch sizes of aspirin, the models, and the timing budget."""

    aspirin_batches: tuple[int, ...] = (1, 8, 32)
    cluster: bool = True
    hegnn_lmax: tuple[int, ...] = (1, 2, 3)
    compiled: bool = True
    hidden_dim: int = 64
    num_layers: int = 4
    rounds: int = 7
    budget_s: float = 8.0
    min_round_s: float = 0.1
    mace_path: Path | None = None

    @classmethod
    def quick(cls) -> "BatchedBenchConfig":
        return cls(
            aspirin_batches=(1, 2),
            cluster=False,
            hegnn_lmax=(1,),
            compiled=False,
            hidden_dim=8,
            num_layers=1,
            rounds=1,
            budget_s=1.0,
            min_round_s=0.0,
        )


def structures() -> dict[str, tuple[list[Atoms], float]]:
    """Each setting's structures and cutoff: aspirins (5 Å) and the cluster."""
    cluster = random_structure(n_atoms=CLUSTER_ATOMS, seed=0, species=SPECIES)
    return {
        "aspirin": ([aspirin()], R_MAX),
        "cluster-100": (
            [Atoms(numbers=cluster.numbers, positions=cluster.positions)],
            CLUSTER_R_MAX,
        ),
    }


def potential_model(
    lmax: int | None, r_max: float, n_avg: float, cfg: BatchedBenchConfig
) -> torch.nn.Module:
    """A seeded random-weight force field (EGNN for ``lmax=None``), frozen, eval."""
    torch.manual_seed(0)
    config = ModelConfig(
        task=keys.TASK_POTENTIAL,
        lmax=lmax,
        hidden_dim=cfg.hidden_dim,
        num_layers=cfg.num_layers,
        species=SPECIES,
        r_max=r_max,
    )
    model = build_model(config)
    model.set_statistics(torch.zeros(len(SPECIES)), 1.0, 0.0, n_avg)
    return model.eval().requires_grad_(False)


def graph_batch(atoms: list[Atoms], r_max: float) -> Batch:
    config = ModelConfig(task=keys.TASK_POTENTIAL, species=SPECIES, r_max=r_max)
    graphs = [
        make_graph_data(config, a.positions, numbers=a.numbers, dtype=torch.float32)
        for a in atoms
    ]
    return Batch.from_data_list(graphs)


def energy_forces_call(model: torch.nn.Module, batch: Batch) -> Callable[[], None]:
    positions = batch[keys.POSITIONS]

    def call() -> None:
        data = copy.copy(batch)
        data[keys.POSITIONS] = positions.detach().clone()
        model(data)

    return call


def settings(
    cfg: BatchedBenchConfig, extra: ExtraModels | None = None
) -> dict[str, Any]:
    """Every setting: its size and each model's ms per call and ratio to EGNN."""
    found = structures()
    cases = [(f"aspirin-x{b}", found["aspirin"], b) for b in cfg.aspirin_batches]
    if cfg.cluster:
        cases.append(("cluster-100", found["cluster-100"], 1))
    out: dict[str, Any] = {}
    for name, (atoms, r_max), copies in cases:
        batch = graph_batch(atoms * copies, r_max)
        n_edges = int(batch[keys.EDGE_INDEX].shape[1])
        n_avg = n_edges / batch.num_nodes
        models = {"egnn": potential_model(None, r_max, n_avg, cfg)}
        for lmax in cfg.hegnn_lmax:
            models[f"hegnn-l{lmax}"] = potential_model(lmax, r_max, n_avg, cfg)
        calls = {k: energy_forces_call(m, batch) for k, m in models.items()}
        if cfg.compiled:
            lmax = max(cfg.hegnn_lmax)
            compiled = compile_backbones(potential_model(lmax, r_max, n_avg, cfg))
            calls[f"hegnn-l{lmax}-compiled"] = energy_forces_call(compiled, batch)
            calls[f"hegnn-l{lmax}-compiled"]()  # compiles (seconds): not a sample
        if extra is not None:
            calls.update(extra(atoms * copies, r_max, n_avg))
        logger.info("%s: %d atoms, %d edges", name, batch.num_nodes, n_edges)
        samples = interleaved(calls, cfg.rounds, cfg.min_round_s, cfg.budget_s)
        out[name] = {
            "structures": copies,
            "atoms": batch.num_nodes,
            "edges": n_edges,
            "models": {
                k: {
                    "ms": 1000 * median(v),
                    "ratio_to_egnn": paired_ratio(v, samples["egnn"]),
                    "samples_ms": [1000 * s for s in v],
                }
                for k, v in samples.items()
            },
        }
        logger.info(
            "%s: %s",
            name,
            ", ".join(f"{k} {v['ms']:.1f} ms" for k, v in out[name]["models"].items()),
        )
    return out


def _ratio(found: dict, setting: str, num: str, den: str) -> float:
    try:
        models = found[setting]["models"]
        return paired_ratio(models[num]["samples_ms"], models[den]["samples_ms"])
    except KeyError:
        return float("nan")


def targets(found: dict[str, Any]) -> list[Target]:
    return [
        Target(
            "MACE / HEGNN L=3 energy+forces, 32 batched aspirins",
            _ratio(found, "aspirin-x32", "mace", "hegnn-l3"),
            10.0,
            True,
            "x",
            "nan: MACE not measured (--mace-path)",
        ),
    ]


def in_mace_interpreter(cfg: BatchedBenchConfig) -> dict[str, Any]:
    """The settings measured by mace_anchor.py --batched with the overlay first."""
    config = json.dumps({**cfg.__dict__, "mace_path": None})
    return run_in_mace(
        cfg.mace_path,
        "hegnn_serve.benchmarks.mace_anchor",
        ["--batched", "--config", config],
        timeout=3000,
    )


def run(cfg: BatchedBenchConfig, device: torch.device) -> dict[str, Any]:
    """The whole batched benchmark (CPU); returns the JSON payload."""
    if device.type != "cpu":
        raise ValueError("hegnn bench batched runs on the CPU (MACE's interpreter)")
    run_ = Run(
        "batched",
        device,
        {
            **{k: v for k, v in cfg.__dict__.items() if k != "mace_path"},
            "dtype": "float32",
            "weights": "random (timing only)",
            "cluster": f"{CLUSTER_ATOMS} atoms, cutoff {CLUSTER_R_MAX} Å (all pairs)",
        },
    )
    if cfg.mace_path is not None:
        found = in_mace_interpreter(cfg)
        run_.notes.append("all models timed together in a MACE interpreter")
    else:
        found = settings(cfg)
        run_.notes.append("MACE not measured (give --mace-path)")
    run_.notes.append(
        "ms: median over interleaved rounds; ratio_to_egnn: median of per-round ratios"
    )
    return run_.finish({"settings": found}, targets(found))
