"""ASE molecular dynamics: steps/s in-process vs through a server, and NVE drift.

Aspirin (21 atoms) with the shipped potential ``md17-aspirin-ff-hegnn`` (a random
weight HEGNN of the same architecture when that checkpoint is absent), velocity
Verlet at 0.5 fs from a 300 K Maxwell-Boltzmann start. Three calculators, timed in
interleaved segments of the same trajectory length:

- ``hegnn_calculator``: ``hegnn.HEGNNCalculator`` in this process (the library);
- ``predictor``: the server's own compute path (``Predictor`` + ASE adapter from
  service.md) in this process: the server's cost without HTTP;
- ``remote``: ``service.RemoteCalculator`` to a real server on 127.0.0.1.

HTTP overhead per step = remote − predictor, from the median step times (ms);
steps/s come from the total time of all timed steps. The server's /metrics give its
compute time per call, so the rest of a remote step (JSON, HTTP, checks, graph,
client) is also reported. NVE: a fixed run in process; the drift is the slope of a
straight-line fit of the total energy per atom, in meV/atom/ps.
"""

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md import velocitydistribution
from ase.md.verlet import VelocityVerlet

from benchmarks.common import (
    SHIPPED_CHECKPOINT,
    Run,
    Target,
    aspirin,
    median,
    percentiles,
)
from benchmarks.server import copy_checkpoint, delta, running_servers, scrape
from hegnn import HEGNNCalculator, ModelConfig, build_model, save
from service.calculator import RemoteCalculator
from service.md import PredictorCalculator
from service.predictor import Predictor

logger = logging.getLogger(__name__)

FALLBACK_NAME = "aspirin-random-hegnn"


@dataclass(frozen=True)
class MDBenchConfig:
    """Integration settings, timing segments and the NVE run length."""

    timestep_fs: float = 0.5
    temperature_K: float = 300.0
    segment_steps: int = 10
    rounds: int = 15
    nve_steps: int = 2000
    checkpoint: Path = SHIPPED_CHECKPOINT

    @classmethod
    def quick(cls, checkpoint: Path = SHIPPED_CHECKPOINT) -> "MDBenchConfig":
        return cls(segment_steps=3, rounds=1, nve_steps=10, checkpoint=checkpoint)


def random_checkpoint(root: Path) -> Path:
    """An aspirin-capable HEGNN (L=3, 64 wide, 4 layers) with random weights."""
    torch.manual_seed(0)
    config = ModelConfig(task="potential", species=(1, 6, 8), r_max=5.0)
    model = build_model(config)
    model.set_statistics(torch.zeros(3), 1.0, 0.0, 14.0)
    save(model.eval(), root / FALLBACK_NAME, {"units": {"energy": "eV"}})
    return root / FALLBACK_NAME


def start_state(temperature_K: float) -> Atoms:
    """Aspirin with seeded Maxwell-Boltzmann velocities, no net momentum."""
    atoms = aspirin()
    # ASE >= 3.29 renamed MaxwellBoltzmannDistribution to thermalize_momenta.
    thermalize = getattr(
        velocitydistribution,
        "thermalize_momenta",
        velocitydistribution.MaxwellBoltzmannDistribution,
    )
    thermalize(atoms, temperature_K=temperature_K, rng=np.random.default_rng(0))
    velocitydistribution.Stationary(atoms)
    return atoms


def step_times(
    calculator: Calculator, start: Atoms, steps: int, dt_fs: float
) -> list[float]:
    """Wall time of each velocity-Verlet step (one force call each) from ``start``."""
    atoms = start.copy()
    atoms.calc = calculator
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    atoms.get_forces()  # the first call happens before the steps
    stamps = [time.perf_counter()]
    dyn.attach(lambda: stamps.append(time.perf_counter()), interval=1)
    dyn.run(steps)
    # ASE calls observers once before the first step too.
    return list(np.diff(stamps[1:] if len(stamps) == steps + 2 else stamps))


def nve_drift(
    calculator: Calculator, start: Atoms, steps: int, dt_fs: float
) -> dict[str, Any]:
    """Total energy along an NVE run: drift (slope) and fluctuation per atom."""
    atoms = start.copy()
    atoms.calc = calculator
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    energies, temperatures = [], []

    def record() -> None:
        energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        temperatures.append(atoms.get_temperature())

    dyn.attach(record, interval=1)
    begin = time.perf_counter()
    dyn.run(steps)
    wall = time.perf_counter() - begin
    n = len(atoms)
    t_ps = np.arange(len(energies)) * dt_fs / 1000
    e_mev = (np.asarray(energies) - energies[0]) * 1000 / n  # meV/atom
    slope = float(np.polyfit(t_ps, e_mev, 1)[0]) if len(e_mev) > 2 else float("nan")
    return {
        "steps": steps,
        "timestep_fs": dt_fs,
        "duration_ps": steps * dt_fs / 1000,
        "drift_mev_per_atom_per_ps": slope,
        "max_abs_deviation_mev_per_atom": float(np.abs(e_mev).max()),
        "rms_fluctuation_mev_per_atom": float(np.std(e_mev)),
        "mean_temperature_K": float(np.mean(temperatures)),
        "final_energy_mev_per_atom": float(e_mev[-1]),
        "steps_per_s": steps / wall,
        "trace": {
            "time_ps": t_ps[:: max(1, steps // 400)].tolist(),
            "total_energy_mev_per_atom": e_mev[:: max(1, steps // 400)].tolist(),
        },
    }


def targets(results: dict[str, Any]) -> list[Target]:
    return [
        Target(
            "RemoteCalculator HTTP overhead per MD step (remote − in-process "
            "Predictor), aspirin",
            results["overhead_ms_per_step"]["remote_minus_predictor"],
            2.0,
            False,
            "ms",
        )
    ]


def run(cfg: MDBenchConfig, device: torch.device) -> dict[str, Any]:
    """The whole MD benchmark; returns the JSON payload."""
    start = start_state(cfg.temperature_K)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "checkpoints"
        root.mkdir()
        checkpoint = cfg.checkpoint
        shipped = checkpoint.is_dir()
        if shipped:
            copy_checkpoint(checkpoint, root)
        else:
            checkpoint = random_checkpoint(root)
        run_ = Run(
            "md",
            device,
            {
                **{k: v for k, v in cfg.__dict__.items() if k != "checkpoint"},
                "checkpoint": checkpoint.name,
                "weights": "shipped checkpoint" if shipped else "random",
                "molecule": f"aspirin ({len(start)} atoms)",
                "integrator": "ASE VelocityVerlet (NVE)",
            },
        )
        calculators: dict[str, Calculator] = {
            "hegnn_calculator": HEGNNCalculator(checkpoint, device=str(device)),
            "predictor": PredictorCalculator(Predictor.load(checkpoint, device)),
        }
        variants = [{"device": device, "torch_threads": 1}]
        with running_servers(root, variants) as (server,):
            remote = RemoteCalculator(server.url, checkpoint.name)
            calculators["remote"] = remote
            samples: dict[str, list[float]] = {name: [] for name in calculators}
            compute: list[float] = []
            for r in range(cfg.rounds):
                names = list(calculators)
                for name in names[r % 3 :] + names[: r % 3]:
                    before = scrape(server.url) if name == "remote" else None
                    samples[name] += step_times(
                        calculators[name], start, cfg.segment_steps, cfg.timestep_fs
                    )
                    if before is not None:
                        after = scrape(server.url)
                        calls = delta(before, after, "hegnn_compute_seconds_count")
                        seconds = delta(before, after, "hegnn_compute_seconds_sum")
                        compute.append(seconds / calls)
            remote.close()
        ms = {name: 1000 * median(values) for name, values in samples.items()}
        logger.info("ms per MD step: %s", ms)
        nve = nve_drift(calculators["predictor"], start, cfg.nve_steps, cfg.timestep_fs)
        logger.info(
            "NVE %d steps: drift %.3g meV/atom/ps",
            cfg.nve_steps,
            nve["drift_mev_per_atom_per_ps"],
        )
    server_compute_ms = 1000 * median(compute)
    results = {
        "n_atoms": len(start),
        "ms_per_step": ms,
        "steps_per_s": {k: len(v) / sum(v) for k, v in samples.items()},
        "step_ms": {
            k: {"mean": 1000 * float(np.mean(v)), **percentiles(v)}
            for k, v in samples.items()
        },
        "server_compute_ms_per_call": server_compute_ms,
        "overhead_ms_per_step": {
            "remote_minus_predictor": ms["remote"] - ms["predictor"],
            "remote_minus_hegnn_calculator": ms["remote"] - ms["hegnn_calculator"],
            "remote_minus_server_compute": ms["remote"] - server_compute_ms,
        },
        "nve": nve,
    }
    return run_.finish(results, targets(results))
