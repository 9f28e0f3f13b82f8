"""GFN2-xTB surrogate MD17 trajectories: NVT MD (ASE) with tblite's calculator.

MD17's protocol: 500 K, 0.5 fs, every step recorded, starting from one of the shipped
geometries (``training/geometries/<molecule>.xyz``), first relaxed with the same
method (BFGS, max force ``RELAX_FMAX``) unless ``relax`` is off: the md17-traj graph
is built from frame 0, and a shipped geometry can have a bond stretched past the 1.6 Å
rule (ethanol's C-C is 1.602 Å). Frame 0 is that structure, with Maxwell-Boltzmann
velocities at the temperature and zero total linear and angular momentum; frame k is
after k steps, so ``steps`` steps give ``steps + 1`` frames. The centre of mass is held
fixed (``FixCom``); recorded forces are the calculator's, unconstrained.

Thermostats, both with time constant ``tau_fs``:

- ``bussi`` (default): velocity Verlet with stochastic global velocity rescaling
  (Bussi et al. 2007). Rescaling every velocity by one factor keeps the angular
  momentum zero, so the molecule does not tumble, as in MD17's trajectories (real
  ethanol: mean squared heavy-atom displacement over 500 frames 0.04 Å², 0.005 Å²
  after alignment). Its 3N - 6 internal degrees of freedom are held at the temperature.
- ``langevin``: ASE's Langevin (friction 1/tau). Its per-atom noise spins the molecule
  up to thermal rotation (1.5 ps rotational diffusion dominates a 3000-frame target:
  0.77 Å² over 500 frames for ethanol at 500 K).

The output is an sGDML .npz (``R`` Å, ``E [F, 1]`` kcal/mol, ``F`` kcal/mol/Å, ``z``)
plus a metadata record, so :func:`training.data.md17.load_frames` reads it. Work is
saved in chunks under ``<out>.partial/`` with the state needed to go on (positions,
velocities, RNG state); running the same command again resumes there. ``tblite`` is an
optional extra, imported only when a run starts.
"""

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ase import Atoms, units
from ase.io import read
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from hegnn_serve.training.data.md17 import energy_factor
from hegnn_serve.training.data.store import file_sha256, write_npz

logger = logging.getLogger(__name__)

GEOMETRIES = Path(__file__).resolve().parent.parent / "geometries"
KCAL_MOL = "kcal/mol"
RELAX_FMAX = 0.01  # eV/Å, convergence of the start-geometry relaxation
DYNAMICS = {
    "bussi": "Bussi (velocity Verlet, stochastic velocity rescaling, ndof 3N-6)",
    "langevin": "Langevin (friction 1/tau_fs, fixcm=False)",
}


@dataclass(frozen=True)
class XTBRun:
    """Settings that define a trajectory; a resumed run must use the same."""

    molecule: str
    seed: int = 0
    temperature_K: float = 500.0
    timestep_fs: float = 0.5
    thermostat: Literal["bussi", "langevin"] = "bussi"
    tau_fs: float = 500.0  # thermostat time constant (Langevin friction = 1 / tau)
    method: str = "GFN2-xTB"
    relax: bool = True  # relax the start geometry before MD


def starting_geometry(molecule: str) -> tuple[Atoms, Path]:
    """The shipped start structure of ``molecule`` (Å) and its file."""
    path = GEOMETRIES / f"{molecule}.xyz"
    if not path.is_file():
        known = sorted(p.stem for p in GEOMETRIES.glob("*.xyz"))
        raise ValueError(f"molecule: no geometry for {molecule!r}; known: {known}")
    return read(path), path


def partial_dir(out: Path) -> Path:
    """Where the chunks of an unfinished run to ``out`` are kept."""
    return out.with_name(out.name + ".partial")


def _load_chunks(folder: Path) -> list[dict[str, np.ndarray]]:
    """The saved chunks in order (frames R, E, F in Å, eV, eV/Å, and the state)."""
    chunks = []
    for path in sorted(folder.glob("chunk_" + "[0-9]" * 6 + ".npz")):
        with np.load(path, allow_pickle=False) as npz:
            chunks.append({k: npz[k] for k in npz.files})
    return chunks


def _save_chunk(folder: Path, index: int, arrays: dict[str, np.ndarray]) -> None:
    """Write one chunk atomically (temporary file, then rename)."""
    tmp = folder / "chunk.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.rename(folder / f"chunk_{index:06d}.npz")


def _open_partial(folder: Path, run: XTBRun) -> list[dict[str, np.ndarray]]:
    """Create the partial folder, or check its settings match ``run``; chunks so far."""
    settings = folder / "run.json"
    if folder.exists():
        saved = json.loads(settings.read_text())
        if saved != asdict(run):
            raise ValueError(
                f"out: unfinished run in {folder} has settings {saved}, not "
                f"{asdict(run)}; use the same settings or delete that folder"
            )
        return _load_chunks(folder)
    folder.mkdir(parents=True)
    settings.write_text(json.dumps(asdict(run)))
    return []


def _initial_state(
    atoms: Atoms,
    run: XTBRun,
    rng: np.random.Generator,
    chunks: list[dict[str, np.ndarray]],
) -> int:
    """Set positions, velocities and RNG state; return the number of frames done.

    Resuming: the state saved with the last chunk. Starting: the relaxed start
    geometry (if ``run.relax``), Maxwell-Boltzmann velocities, zero linear and angular
    momentum.
    """
    from ase.optimize import BFGS

    from hegnn.thermal import thermalize

    if chunks:
        atoms.positions = chunks[-1]["R"][-1]
        atoms.set_velocities(chunks[-1]["velocities"])
        rng.bit_generator.state = json.loads(str(chunks[-1]["rng_state"]))
        done = sum(len(c["E"]) for c in chunks)
        logger.info("resuming %s at frame %d", run.molecule, done)
        return done
    if run.relax:
        relax = BFGS(atoms, logfile=None)
        if not relax.run(fmax=RELAX_FMAX, steps=1000):
            raise RuntimeError(f"{run.molecule}: relaxation did not converge")
        logger.info("relaxed %s in %d steps", run.molecule, relax.nsteps)
    thermalize(atoms, run.temperature_K, rng)
    return 0


def _dynamics(atoms: Atoms, run: XTBRun, rng: np.random.Generator):
    """The ASE integrator of ``run.thermostat`` (atoms need velocities already)."""
    dt, tau = run.timestep_fs * units.fs, run.tau_fs * units.fs
    if run.thermostat == "langevin":
        from ase.md.langevin import Langevin

        return Langevin(
            atoms,
            dt,
            temperature_K=run.temperature_K,
            friction=1 / tau,
            rng=rng,
            fixcm=False,
        )
    if run.thermostat not in DYNAMICS:
        raise ValueError(f"thermostat: expected one of {list(DYNAMICS)}")
    from ase.md.bussi import Bussi

    dyn = Bussi(atoms, dt, temperature_K=run.temperature_K, taut=tau, rng=rng)
    dyn.ndof = 3 * len(atoms) - 6  # no net translation or rotation
    dyn.target_kinetic_energy = 0.5 * dyn.temp * dyn.ndof
    return dyn


def run_xtb_md(
    run: XTBRun,
    steps: int,
    out: str | Path,
    chunk: int = 1000,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) ``steps`` NVT MD steps with GFN2-xTB; write ``out``.

    Returns the metadata written to the file, including ``s_per_step`` (wall
    seconds per MD step, averaged over all chunks of the run).
    """
    from ase.constraints import FixCom
    from tblite.ase import TBLite

    out = Path(out)
    if steps < 1 or chunk < 1:
        raise ValueError(f"steps, chunk: expected >= 1, got {steps}, {chunk}")
    if out.suffix != ".npz":
        raise ValueError(f"out: expected a .npz path, got {out}")
    if out.exists():
        raise FileExistsError(f"out: {out} exists; remove it or choose another path")
    atoms, geometry = starting_geometry(run.molecule)
    folder = partial_dir(out)
    chunks = _open_partial(folder, run)
    rng = np.random.default_rng(run.seed)
    atoms.calc = TBLite(method=run.method, verbosity=0)
    done = _initial_state(atoms, run, rng, chunks)
    atoms.set_constraint(FixCom())
    dyn = _dynamics(atoms, run, rng)
    n_frames = steps + 1
    with _progress_bar(progress, n_frames, done, run.molecule) as advance:
        while done < n_frames:
            t0 = time.perf_counter()
            frames: dict[str, list] = {"R": [], "E": [], "F": []}
            for _ in range(min(chunk, n_frames - done)):
                if done > 0:
                    dyn.step()
                frames["R"].append(atoms.get_positions())
                frames["E"].append(atoms.get_potential_energy())
                frames["F"].append(atoms.get_forces(apply_constraint=False))
                done += 1
                advance()
            wall = time.perf_counter() - t0
            state = {
                "velocities": atoms.get_velocities(),
                "rng_state": np.array(json.dumps(rng.bit_generator.state)),
                "wall_s": np.array(wall),
            }
            chunks.append({**_stack(frames), **state})
            _save_chunk(folder, len(chunks) - 1, chunks[-1])
            logger.info(
                "%s: %d / %d frames, %.4f s/step, ETA %.0f s",
                run.molecule,
                done,
                n_frames,
                wall / len(frames["E"]),
                (n_frames - done) * wall / len(frames["E"]),
            )
    metadata = _write_sgdml(out, run, atoms, chunks, n_frames, geometry)
    shutil.rmtree(folder)
    return metadata


def _stack(frames: dict[str, list]) -> dict[str, np.ndarray]:
    """Lists of per-frame values -> arrays."""
    return {k: np.asarray(v, dtype=np.float64) for k, v in frames.items()}


@contextmanager
def _progress_bar(
    enabled: bool, total: int, done: int, label: str
) -> Iterator[Callable[[], None]]:
    """A rich progress bar with ETA; yields a callable that advances it by one."""
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not enabled) as bar:
        task = bar.add_task(f"xTB MD {label}", total=total, completed=done)
        yield lambda: bar.advance(task)


def _write_sgdml(
    out: Path,
    run: XTBRun,
    atoms: Atoms,
    chunks: list[dict[str, np.ndarray]],
    n_frames: int,
    geometry: Path,
) -> dict[str, Any]:
    """Join the chunks into an sGDML .npz in kcal/mol; return the metadata."""
    import ase

    per_kcal = 1.0 / energy_factor(KCAL_MOL)  # kcal/mol per eV
    r = np.concatenate([c["R"] for c in chunks])[:n_frames]
    e = np.concatenate([c["E"] for c in chunks])[:n_frames]
    f = np.concatenate([c["F"] for c in chunks])[:n_frames]
    wall = float(sum(float(c["wall_s"]) for c in chunks))
    arrays = {
        "R": r,
        "E": (e * per_kcal)[:, None],
        "F": f * per_kcal,
        "z": atoms.numbers.astype(np.uint8),
        "name": np.array(run.molecule),
        "theory": np.array(f"{run.method} (tblite)"),
        "type": np.array("d"),
        "r_unit": np.array("Ang"),
        "e_unit": np.array("kcal/mol"),
    }
    metadata = {
        "format": "sgdml",
        "generator": "hegnn-serve training.data.xtb",
        **asdict(run),
        "steps": n_frames - 1,
        "n_frames": n_frames,
        "frame_spacing_fs": run.timestep_fs,
        "dynamics": f"ase {DYNAMICS[run.thermostat]}, FixCom; forces unconstrained",
        "start_geometry": geometry.name,
        "start_geometry_sha256": file_sha256(geometry),
        "relax_fmax_eV_per_A": RELAX_FMAX if run.relax else None,
        "units": {"positions": "Å", "energy": KCAL_MOL, "forces": "kcal/mol/Å"},
        "wall_time_s": round(wall, 3),
        "s_per_step": wall / n_frames,
        "versions": {"ase": ase.__version__, "tblite": _tblite_version()},
    }
    metadata = write_npz(out, arrays, metadata)
    logger.info("wrote %s: %d frames, %.4f s/step", out, n_frames, wall / n_frames)
    return metadata


def _tblite_version() -> str:
    """Installed tblite version, or 'unknown'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tblite")
    except PackageNotFoundError:
        return "unknown"
