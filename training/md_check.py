"""`hegnn md-check`: NVE stability and energy drift of a potential checkpoint in ASE.

Velocity Verlet through ``hegnn.HEGNNCalculator``, started from an equilibrated state:
the configuration is relaxed (BFGS), given Maxwell-Boltzmann velocities and thermalised
by Langevin dynamics at the target temperature, so the NVE run samples that temperature
instead of settling wherever a random snapshot's excess potential energy puts it.
Drift is the slope of a linear fit of the total energy, in meV/atom/ps. The result can
be written into the card (``metrics.nve``), and the NVE frames, with the model's energy
and forces (eV, eV/Å), into any file ase.io writes (``--trajectory``): equilibrium-MD
configurations for ``hegnn committee --md FILE --md-unit eV``.
"""

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from ase import units
from ase.constraints import FixCom
from ase.io import read, write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from hegnn import HEGNNCalculator
from hegnn.checkpoint import add_card_metrics
from hegnn.thermal import thermalize

logger = logging.getLogger(__name__)


def run_nve(
    checkpoint: Path,
    structure: Path,
    temperature_k: float = 300.0,
    timestep_fs: float = 0.5,
    picoseconds: float = 10.0,
    seed: int = 0,
    unit_index: int = 0,
    relax_fmax: float = 0.05,
    equilibrate_ps: float = 2.0,
    friction_per_fs: float = 0.01,
    trajectory: Path | None = None,
    trajectory_every_fs: float = 50.0,
) -> dict[str, Any]:
    """Relax, thermalise (Langevin, ``equilibrate_ps``), then run NVE MD; return
    drift, fluctuation and stability figures of the NVE part. With ``trajectory``, an
    NVE frame every ``trajectory_every_fs`` (from the first step) is written there."""
    atoms = read(structure, index=unit_index)
    atoms.calc = HEGNNCalculator(checkpoint, device="cpu")
    rng = np.random.default_rng(seed)
    e_start = atoms.get_potential_energy()
    relax = BFGS(atoms, logfile=None)
    relaxed = relax.run(fmax=relax_fmax, steps=500)
    relax_record = {
        "fmax_ev_per_a": relax_fmax,
        "converged": bool(relaxed),
        "steps": relax.nsteps,
        "energy_change_ev": float(atoms.get_potential_energy() - e_start),
    }
    thermalize(atoms, temperature_k, rng)
    if equilibrate_ps > 0:
        atoms.set_constraint(FixCom())  # ASE's advice over Langevin(fixcm=True)
        Langevin(
            atoms,
            timestep=timestep_fs * units.fs,
            temperature_K=temperature_k,
            friction=friction_per_fs / units.fs,
            fixcm=False,
            rng=rng,
        ).run(int(round(equilibrate_ps * 1000 / timestep_fs)))
        atoms.set_constraint()  # NVE runs unconstrained, as before
        Stationary(atoms)
        ZeroRotation(atoms)
    steps = int(round(picoseconds * 1000 / timestep_fs))
    every = max(1, steps // 2000)
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    times, energies, temperatures, min_dist = [], [], [], []

    def record() -> None:
        times.append(dyn.nsteps * timestep_fs / 1000)  # ps
        energies.append(atoms.get_total_energy())
        temperatures.append(atoms.get_temperature())
        d = atoms.get_all_distances()
        min_dist.append(float(d[np.triu_indices(len(atoms), 1)].min()))

    dyn.attach(record, interval=every)
    if trajectory is not None:
        trajectory.unlink(missing_ok=True)
        every_frame = max(1, int(round(trajectory_every_fs / timestep_fs)))
        dyn.attach(write, every_frame, trajectory, atoms, append=True)
    start = time.perf_counter()
    dyn.run(steps)
    wall = time.perf_counter() - start
    t, e = np.array(times), np.array(energies)
    n = len(atoms)
    slope = np.polyfit(t, e, 1)[0]  # eV/ps
    result = {
        "structure": str(structure),
        "n_atoms": n,
        "temperature_k": temperature_k,
        "relaxation": relax_record,
        "equilibration": {
            "thermostat": "Langevin",
            "picoseconds": equilibrate_ps,
            "friction_per_fs": friction_per_fs,
        },
        "timestep_fs": timestep_fs,
        "steps": steps,
        "simulated_ps": steps * timestep_fs / 1000,
        "drift_mev_per_atom_per_ps": float(slope * 1000 / n),
        "energy_fluctuation_mev_per_atom": float(e.std() * 1000 / n),
        "max_abs_energy_change_mev_per_atom": float(np.abs(e - e[0]).max() * 1000 / n),
        "mean_temperature_k": float(np.mean(temperatures)),
        "min_interatomic_distance_a": float(min(min_dist)),
        "stable": bool(np.isfinite(e).all() and min(min_dist) > 0.5),
        "wall_time_s": round(wall, 1),
        "ms_per_step": round(1000 * wall / steps, 2),
        "torch_threads": torch.get_num_threads(),
    }
    if trajectory is not None:
        frames = steps // every_frame + 1  # observers also run at step 0
        result["trajectory"] = {"file": str(trajectory), "frames": frames}
    return result


def md_check(
    checkpoint: Annotated[Path, typer.Argument(help="potential checkpoint folder")],
    structure: Annotated[Path, typer.Option(help="start structure (any ASE file)")],
    picoseconds: Annotated[float, typer.Option(help="simulated time")] = 10.0,
    timestep_fs: Annotated[float, typer.Option(help="time step")] = 0.5,
    temperature: Annotated[float, typer.Option(help="target temperature, K")] = 300.0,
    seed: Annotated[int, typer.Option(help="velocity and thermostat seed")] = 0,
    relax_fmax: Annotated[
        float, typer.Option(help="relax (BFGS) to this max force first, eV/Å")
    ] = 0.05,
    equilibrate_ps: Annotated[
        float, typer.Option(help="Langevin thermalisation before NVE (0: none)")
    ] = 2.0,
    threads: Annotated[
        int, typer.Option(min=1, help="torch threads (molecules: 1 is fastest)")
    ] = 1,
    write_card: Annotated[bool, typer.Option(help="store as metrics.nve")] = False,
    trajectory: Annotated[
        Path | None,
        typer.Option(
            help="write NVE frames with the model's E and F here (extxyz, eV)"
        ),
    ] = None,
    trajectory_every_fs: Annotated[
        float, typer.Option(min=0, help="time between written frames, fs")
    ] = 50.0,
) -> None:
    """Relax, thermalise, then NVE MD through HEGNNCalculator: stability and drift
    (meV/atom/ps)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(threads)  # more threads only slow a molecule down
    result = run_nve(
        checkpoint,
        structure,
        temperature,
        timestep_fs,
        picoseconds,
        seed,
        relax_fmax=relax_fmax,
        equilibrate_ps=equilibrate_ps,
        trajectory=trajectory,
        trajectory_every_fs=trajectory_every_fs,
    )
    text = json.dumps(result, indent=2)
    typer.echo(text)
    if write_card:
        add_card_metrics(checkpoint, "nve", result)
