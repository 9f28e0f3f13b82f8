"""Model cost: EGNN, HEGNN L = 1, 2, 3, 6 and the e3nn tensor-product baseline.

Two settings, random weights (timing only):

- ``nbody-N``: dynamics models (x, v, charges -> x after Δt) on fully connected
  graphs of N = 5, 20, 50, 100 bodies (the paper's inference-time setting).
  ``fwd``: a prediction under no_grad; ``fwd_bwd``: prediction, MSE loss, backward
  to the parameters (one training step without the optimiser).
- ``aspirin``: potential models on aspirin (21 atoms, radius graph 5 Å).
  ``fwd``: energy only, no_grad; ``energy_forces``: E and F = -dE/dx by autograd
  with frozen parameters (what the server and MD do); ``train_step``: E and F with
  create_graph, energy + force loss, backward to the parameters.

Per candidate: median ms per call over interleaved rounds, the ratio to EGNN (median
of the ratios within each round), peak memory of one call (see benchmarks/memory.py)
and the parameter count. HEGNN and EGNN share one code path (``lmax=None`` is EGNN) and
width H; the tensor-product model (benchmarks/tp_baseline.py) uses H channels per
degree, the same depth and L.
"""

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Data

from hegnn import ModelConfig, build_model, keys, make_graph_data
from hegnn_serve.benchmarks import memory
from hegnn_serve.benchmarks.common import (
    ROOT,
    Run,
    Target,
    aspirin,
    interleaved,
    median,
    paired_ratio,
    synchronize,
)
from hegnn_serve.benchmarks.tp_baseline import TPDynamics, TPPotential

logger = logging.getLogger(__name__)

SPECIES = (1, 6, 8)
R_MAX = 5.0
# Tensor-product models whose cost makes a bounded run impossible beyond this many
# edges (L = 6: ~0.6 s per training step on 5 bodies, ~4.4 s on 20, on one core).
TP_MAX_EDGES = {6: 20}
DYNAMICS_METRICS = ("fwd", "fwd_bwd")
POTENTIAL_METRICS = ("fwd", "energy_forces", "train_step")


@dataclass(frozen=True)
class Candidate:
    """One model to time: ``family`` egnn, hegnn or tp (tensor product)."""

    family: str
    lmax: int | None

    @property
    def name(self) -> str:
        return "egnn" if self.family == "egnn" else f"{self.family}-l{self.lmax}"


@dataclass(frozen=True)
class ModelBenchConfig:
    """What to run; ``quick`` shrinks everything to a seconds-long smoke run."""

    nodes: tuple[int, ...] = (5, 20, 50, 100)
    hegnn_lmax: tuple[int, ...] = (1, 2, 3, 6)
    tp_lmax: tuple[int, ...] = (1, 2, 3, 6)
    hidden_dim: int = 64
    num_layers: int = 4
    rounds: int = 9
    budget_s: float = 6.0  # timing budget per candidate, metric and setting
    min_round_s: float = 0.05
    molecule: bool = True
    mace_path: Path | None = None  # a mace-torch overlay: see benchmarks/mace_anchor.py

    @classmethod
    def quick(cls) -> "ModelBenchConfig":
        return cls(
            nodes=(5,),
            hegnn_lmax=(1,),
            tp_lmax=(1,),
            hidden_dim=8,
            num_layers=1,
            rounds=1,
            budget_s=1.0,
            min_round_s=0.0,
        )

    def candidates(self) -> list[Candidate]:
        return [
            Candidate("egnn", None),
            *(Candidate("hegnn", L) for L in self.hegnn_lmax),
            *(Candidate("tp", L) for L in self.tp_lmax),
        ]


def build(c: Candidate, task: str, cfg: ModelBenchConfig, n_avg: float) -> nn.Module:
    """A random-weight model of candidate ``c`` for ``task`` (seeded)."""
    torch.manual_seed(0)
    H, K = cfg.hidden_dim, cfg.num_layers
    if c.family == "tp":
        if task == keys.TASK_POTENTIAL:
            return TPPotential(SPECIES, c.lmax, H, K, R_MAX, avg_num_neighbors=n_avg)
        return TPDynamics(c.lmax, H, K)
    if task == keys.TASK_POTENTIAL:
        config = ModelConfig(
            task=task,
            lmax=c.lmax,
            hidden_dim=H,
            num_layers=K,
            species=SPECIES,
            r_max=R_MAX,
        )
        model = build_model(config)
        model.set_statistics(torch.zeros(len(SPECIES)), 1.0, 0.0, n_avg)
        return model
    config = ModelConfig(
        task=task, lmax=c.lmax, hidden_dim=H, num_layers=K, features="nbody"
    )
    return build_model(config)


def nbody_graph(n: int, seed: int = 0) -> Data:
    """N charged bodies as in the EGNN protocol: x ~ N(0, σ²), σ = (N/5)^(1/3),
    speed 0.5, q = ±1; fully connected."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, (n / 5) ** (1 / 3), (n, 3))
    v = rng.normal(size=(n, 3))
    v *= 0.5 / np.linalg.norm(v, axis=-1, keepdims=True)
    q = rng.choice([-1.0, 1.0], n)
    config = ModelConfig(task="dynamics", features="nbody")
    data = make_graph_data(config, x, velocities=v, charges=q, dtype=torch.float32)
    data[keys.TARGET_POSITIONS] = data[keys.POSITIONS] + 0.1
    return data


def aspirin_graph() -> Data:
    """Aspirin as a radius graph (5 Å), with zero reference energy and forces."""
    atoms = aspirin()
    config = ModelConfig(task="potential", species=SPECIES, r_max=R_MAX)
    data = make_graph_data(
        config, atoms.positions, numbers=atoms.numbers, dtype=torch.float32
    )
    data["energy_ref"] = torch.zeros(1, dtype=torch.float64)
    data["forces_ref"] = torch.zeros(len(atoms), 3)
    return data


def dynamics_calls(
    model: nn.Module, data: Data, device: torch.device
) -> dict[str, Callable[[], None]]:
    """``fwd`` (no_grad) and ``fwd_bwd`` (MSE to target positions, backward)."""

    def fwd() -> None:
        with torch.no_grad():
            model(data)
        synchronize(device)

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        x = model(data)[keys.POSITIONS]
        ((x - data[keys.TARGET_POSITIONS]) ** 2).mean().backward()
        synchronize(device)

    model.train()
    return {"fwd": fwd, "fwd_bwd": fwd_bwd}


def potential_calls(
    model: nn.Module, data: Data, device: torch.device
) -> dict[str, Callable[[], None]]:
    """``fwd`` (energy, no_grad), ``energy_forces`` (frozen parameters, as served)
    and ``train_step`` (forces with create_graph, loss, backward)."""
    positions = data[keys.POSITIONS]

    def fresh() -> Data:
        out = data.clone()
        out[keys.POSITIONS] = positions.detach().clone()
        return out

    def fwd() -> None:
        model.eval()
        with torch.no_grad():
            model(fresh(), compute_forces=False)
        synchronize(device)

    def energy_forces() -> None:
        model.eval().requires_grad_(False)
        model(fresh())
        synchronize(device)

    def train_step() -> None:
        model.train().requires_grad_(True)
        model.zero_grad(set_to_none=True)
        sample = fresh()
        out = model(sample)
        loss = ((out[keys.ENERGY] - sample["energy_ref"]) ** 2).mean() + (
            (out[keys.FORCES] - sample["forces_ref"]) ** 2
        ).mean().double()
        loss.backward()
        synchronize(device)

    return {"fwd": fwd, "energy_forces": energy_forces, "train_step": train_step}


def bench_setting(
    name: str,
    task: str,
    data: Data,
    cfg: ModelBenchConfig,
    device: torch.device,
) -> dict[str, Any]:
    """Time, measure and count every candidate on one graph."""
    n_nodes, n_edges = data.num_nodes, data[keys.EDGE_INDEX].shape[1]
    n_avg = n_edges / n_nodes
    data = data.to(device)
    make_calls = potential_calls if task == keys.TASK_POTENTIAL else dynamics_calls
    models, skipped, calls = {}, {}, {}
    for c in cfg.candidates():
        limit = TP_MAX_EDGES.get(c.lmax) if c.family == "tp" else None
        if limit is not None and n_edges > limit:
            skipped[c.name] = f"not run: over {limit} edges (cost of a call)"
            continue
        models[c.name] = build(c, task, cfg, n_avg).to(device)
        for metric, fn in make_calls(models[c.name], data, device).items():
            calls[f"{c.name}/{metric}"] = fn
    logger.info("%s: %d nodes, %d edges, %d calls", name, n_nodes, n_edges, len(calls))
    samples = interleaved(calls, cfg.rounds, cfg.min_round_s, cfg.budget_s)
    peaks = {}
    if device.type == "cpu":
        memory.prepare_cpu_measurement()
    for key, fn in calls.items():
        peaks[key] = memory.peak_bytes(fn, device)
    metrics = POTENTIAL_METRICS if task == keys.TASK_POTENTIAL else DYNAMICS_METRICS
    out: dict[str, Any] = {}
    for model_name, model in models.items():
        entry: dict[str, Any] = {
            "params": sum(p.numel() for p in model.parameters()),
        }
        for m in metrics:
            key = f"{model_name}/{m}"
            ms = median(samples[key]) * 1000
            entry[m] = {
                "ms": ms,
                "ratio_to_egnn": paired_ratio(samples[key], samples[f"egnn/{m}"]),
                "peak_mib": None if peaks[key] is None else peaks[key] / 2**20,
                "rounds": len(samples[key]),
                "samples_ms": [s * 1000 for s in samples[key]],
            }
        out[model_name] = entry
        logger.info(
            "%s %-9s %s",
            name,
            model_name,
            "  ".join(f"{m} {entry[m]['ms']:8.2f} ms" for m in metrics),
        )
    for model_name, reason in skipped.items():
        out[model_name] = {"skipped": reason}
    return {
        "task": task,
        "nodes": n_nodes,
        "edges": n_edges,
        "metrics": list(metrics),
        "models": out,
    }


def mace_setting(cfg: ModelBenchConfig) -> dict[str, Any]:
    """EGNN, HEGNN L=3 and MACE on aspirin, timed together in a MACE interpreter."""
    path = os.pathsep.join([str(cfg.mace_path), str(ROOT)])
    command = [sys.executable, "-m", "hegnn_serve.benchmarks.mace_anchor"]
    command += ["--rounds", str(cfg.rounds), "--budget-s", str(cfg.budget_s)]
    logger.info("aspirin-mace: MACE from %s", cfg.mace_path)
    try:
        done = subprocess.run(
            command,
            env={**os.environ, "PYTHONPATH": path},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        setting = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as err:
        stderr = getattr(err, "stderr", "") or ""
        logger.warning("MACE anchor failed: %s %s", err, stderr[-2000:])
        return {"skipped": f"MACE anchor failed: {err}"}
    for name, entry in setting["models"].items():
        logger.info(
            "aspirin-mace %-9s E+F %8.2f ms", name, entry["energy_forces"]["ms"]
        )
    return setting


def _ratio(settings: dict, setting: str, num: str, den: str, metric: str) -> float:
    """``num`` over ``den``: paired per round when ``den`` is EGNN, else of medians."""
    models = settings.get(setting, {}).get("models", {})
    try:
        if den == "egnn":
            return models[num][metric]["ratio_to_egnn"]
        return models[num][metric]["ms"] / models[den][metric]["ms"]
    except KeyError:
        return float("nan")


def targets(settings: dict[str, Any]) -> list[Target]:
    """The §10 model targets, from the 100-body and aspirin settings."""
    return [
        Target(
            "HEGNN L=3 fwd+bwd / EGNN fwd+bwd, 100 bodies",
            _ratio(settings, "nbody-100", "hegnn-l3", "egnn", "fwd_bwd"),
            1.5,
            False,
            "x",
        ),
        Target(
            "e3nn TP L=3 / HEGNN L=3 fwd+bwd, 100 bodies",
            _ratio(settings, "nbody-100", "tp-l3", "hegnn-l3", "fwd_bwd"),
            5.0,
            True,
            "x",
        ),
        Target(
            "e3nn TP L=3 / HEGNN L=3 energy+forces, aspirin",
            _ratio(settings, "aspirin", "tp-l3", "hegnn-l3", "energy_forces"),
            5.0,
            True,
            "x",
        ),
    ]


def run(cfg: ModelBenchConfig, device: torch.device) -> dict[str, Any]:
    """The whole model benchmark; returns the JSON payload."""
    run_ = Run(
        "model",
        device,
        {
            **{k: v for k, v in cfg.__dict__.items() if k != "mace_path"},
            "width": f"HEGNN/EGNN: H={cfg.hidden_dim} hidden channels, one "
            f"steerable vector per degree; TP: {cfg.hidden_dim} channels per degree",
            "dtype": "float32",
            "weights": "random (timing only)",
        },
    )
    method = memory.cpu_method() if device.type == "cpu" else "cuda max_memory"
    run_.notes.append(f"peak memory: {method or 'not measurable on this system'}")
    run_.notes.append(
        "ms: median over interleaved rounds; ratio_to_egnn: median over rounds of "
        "ms / EGNN's ms in the same round; TP L=6 runs only on graphs of at most 20 "
        "edges"
    )
    settings: dict[str, Any] = {}
    for n in cfg.nodes:
        settings[f"nbody-{n}"] = bench_setting(
            f"nbody-{n}", keys.TASK_DYNAMICS, nbody_graph(n), cfg, device
        )
    if cfg.molecule:
        settings["aspirin"] = bench_setting(
            "aspirin", keys.TASK_POTENTIAL, aspirin_graph(), cfg, device
        )
    if cfg.mace_path is not None and device.type == "cpu":
        settings["aspirin-mace"] = mace_setting(cfg)
    else:
        run_.notes.append(
            "MACE not measured (give --mace-path, see benchmarks/mace_anchor.py)"
        )
    return run_.finish({"settings": settings}, targets(settings))
