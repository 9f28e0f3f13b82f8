"""Langevin then NVE molecular dynamics of an MD17 molecule with a served potential.

By default the ASE script a chemist already has, with the calculator swapped for a
server (``RemoteCalculator``: one request per force call):

    python examples/md_remote.py --url http://127.0.0.1:8000 \\
        --model md17-aspirin-ff-hegnn --molecule aspirin --steps 2000

With ``--server-side`` the same two phases run on the server (``HEGNNClient.md``,
``POST /v1/models/<model>/md``): a few requests instead of one per step, each of at
most ``--chunk`` steps (the server's HEGNN_MAX_STEPS bounds one request).

With a committee model (e.g. ``md17-ethanol-ff-hegnn-committee``) every force call
also carries ``max_force_std``; a step where it passes the card's calibrated
threshold is outside what the committee was trained on: the script warns (once,
then counts), or with ``--on-uncertain stop`` ends the run there and keeps the
frames so far.

Writes ``<out>/md_remote.extxyz`` (every ``--every`` steps of both phases, with energy
and forces) and ``<out>/md_remote_energy.png`` (potential, kinetic and total energy in
eV against time in fs). Needs numpy, httpx, ase and matplotlib; no torch.
"""

import logging
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixCom
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.md import MolecularDynamics
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet
from common import load_molecule, server_parser, setup_logging
from matplotlib.figure import Figure

from hegnn_serve.service.calculator import RemoteCalculator
from hegnn_serve.service.client import HEGNNClient

logger = logging.getLogger("md_remote")


class Extrapolating(RuntimeError):
    """The committee's max_force_std passed its card's threshold."""


class UncertaintyWatch:
    """Called after every MD step: compares ``max_force_std`` of the last force
    call with the calculator's threshold; warns on the first step over it (and
    counts the rest), or raises :class:`Extrapolating` with ``stop``."""

    def __init__(self, atoms: Atoms, stop: bool) -> None:
        self.atoms, self.stop, self.flagged = atoms, stop, 0

    def __call__(self) -> None:
        calc = self.atoms.calc
        std = calc.results.get("max_force_std")
        threshold = getattr(calc, "threshold", None)
        if std is None or threshold is None or std <= threshold:
            return
        self.flagged += 1
        message = (
            f"max_force_std {std:.3g} eV/Å is over the committee's threshold "
            f"{threshold:.3g} eV/Å: this structure is outside its training data"
        )
        if self.stop:
            raise Extrapolating(message)
        if self.flagged == 1:
            logger.warning("%s (further steps over it are counted)", message)


def maxwell_boltzmann(atoms: Atoms, temperature_k: float, rng) -> None:
    """Momenta p ~ N(0, m k_B T) per component, then zero total momentum."""
    sigma = np.sqrt(atoms.get_masses() * units.kB * temperature_k)  # [n] ASE units
    atoms.set_momenta(rng.standard_normal((len(atoms), 3)) * sigma[:, None])
    Stationary(atoms)


def run_md(
    atoms: Atoms,
    langevin_steps: int,
    nve_steps: int,
    timestep_fs: float,
    temperature_k: float,
    every: int,
    seed: int,
    watch: UncertaintyWatch | None = None,
) -> tuple[list[Atoms], np.ndarray]:
    """Langevin (friction 0.01/fs) then velocity-Verlet NVE on ``atoms.calc``.

    Returns the saved frames and a ``[n_saved, 4]`` array of time (fs), potential,
    kinetic and total energy (eV); if ``watch`` stops the run, those up to there.
    """
    rng = np.random.default_rng(seed)
    maxwell_boltzmann(atoms, temperature_k, rng)
    frames: list[Atoms] = []
    log: list[tuple[float, float, float, float]] = []

    def record(dyn: MolecularDynamics, phase: str, t0_fs: float) -> None:
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        time_fs = t0_fs + dyn.get_time() / units.fs
        log.append((time_fs, epot, ekin, epot + ekin))
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(
            frame, energy=epot, forces=atoms.get_forces()
        )
        frame.info.update(time_fs=time_fs, phase=phase)
        frames.append(frame)

    dt = timestep_fs * units.fs
    friction = 0.01 / units.fs
    atoms.set_constraint(FixCom())  # ASE's advice over Langevin(fixcm=True)
    langevin = Langevin(
        atoms, dt, temperature_K=temperature_k, friction=friction, fixcm=False, rng=rng
    )
    langevin.attach(record, every, langevin, "langevin", 0.0)
    nve = VelocityVerlet(atoms, dt)
    nve.attach(record, every, nve, "nve", langevin_steps * timestep_fs)
    if watch is not None:
        langevin.attach(watch, 1)
        nve.attach(watch, 1)
    try:
        langevin.run(langevin_steps)
        atoms.set_constraint()
        nve.run(nve_steps)
    except Extrapolating as stop:
        logger.error("stopped: %s", stop)
    return frames, np.asarray(log)


def run_md_on_server(
    client: HEGNNClient,
    model: str,
    atoms: Atoms,
    langevin_steps: int,
    nve_steps: int,
    timestep_fs: float,
    temperature_k: float,
    every: int,
    seed: int,
    chunk: int,
) -> tuple[list[Atoms], np.ndarray]:
    """The phases of :func:`run_md` as /md requests: Langevin (friction 0.01/fs,
    Maxwell-Boltzmann start drawn by the server), then NVE from its last frame.

    Each phase is sent in pieces of ``chunk`` steps (a multiple of ``every``), each
    continuing from the last frame of the one before. Returns what run_md returns.
    """
    chunk = max(every, chunk // every * every)
    state = atoms.copy()
    frames: list[Atoms] = []
    log: list[tuple[float, float, float, float]] = []
    t0_fs = 0.0
    phases = (("langevin", langevin_steps, temperature_k), ("nve", nve_steps, None))
    for phase, steps, temperature in phases:
        for k, start in enumerate(range(0, steps, chunk)):
            run = client.md(
                model,
                state,
                steps=min(chunk, steps - start),
                every=every,
                timestep_fs=timestep_fs,
                temperature=temperature,
                seed=seed + k,
                return_forces=True,
            )
            for j in range(0 if start == 0 else 1, len(run.steps)):  # no repeats
                frame = atoms.copy()
                frame.positions = run.positions[j]
                frame.set_velocities(run.velocities[j] / units.fs)
                epot, ekin = float(run.energies[j]), frame.get_kinetic_energy()
                time_fs = t0_fs + (start + run.steps[j]) * timestep_fs
                log.append((time_fs, epot, ekin, epot + ekin))
                frame.calc = SinglePointCalculator(
                    frame, energy=epot, forces=run.forces[j]
                )
                frame.info.update(time_fs=time_fs, phase=phase)
                frames.append(frame)
            state.positions = run.positions[-1]
            state.set_velocities(run.velocities[-1] / units.fs)
        t0_fs += steps * timestep_fs
    return frames, np.asarray(log)


def plot_energies(log: np.ndarray, nve_start_fs: float, path: Path) -> None:
    """Potential, kinetic and total energy (eV) against time (fs)."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    time_fs, epot, ekin, etot = log.T
    ax.plot(time_fs, epot - etot[0], label="potential")
    ax.plot(time_fs, ekin, label="kinetic")
    ax.plot(time_fs, etot - etot[0], label="total", color="k")
    ax.axvline(nve_start_fs, color="grey", ls=":", label="Langevin → NVE")
    ax.set(xlabel="time (fs)", ylabel="energy − E_tot(0) (eV)", title=path.stem)
    fig.legend(loc="outside lower center", ncols=4)
    fig.savefig(path, dpi=120)


def nve_drift(log: np.ndarray, nve_start_fs: float, n_atoms: int) -> float:
    """Slope of a linear fit of total energy over the NVE phase, meV/atom/ps."""
    nve = log[log[:, 0] >= nve_start_fs]
    if len(nve) < 2:
        return float("nan")
    slope = np.polyfit(nve[:, 0], nve[:, 3], 1)[0]  # eV/fs
    return float(slope * 1e3 * 1e3 / n_atoms)


def main(argv: list[str] | None = None) -> None:
    parser = server_parser(__doc__, "md17-aspirin-ff-hegnn")
    parser.add_argument("--molecule", default="aspirin", help="name or .xyz path")
    parser.add_argument("--steps", type=int, default=2000, help="NVE steps")
    parser.add_argument(
        "--langevin-steps",
        type=int,
        default=None,
        help="Langevin steps before NVE (default: steps // 2)",
    )
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--every", type=int, default=10, help="save every N steps")
    parser.add_argument(
        "--server-side",
        action="store_true",
        help="integrate on the server (POST /md) instead of through RemoteCalculator",
    )
    parser.add_argument(
        "--chunk", type=int, default=1000, help="--server-side: steps per request"
    )
    parser.add_argument(
        "--on-uncertain",
        choices=("warn", "stop"),
        default="warn",
        help="committee models: when max_force_std passes the card's threshold",
    )
    args = parser.parse_args(argv)
    setup_logging()

    atoms = load_molecule(args.molecule)
    langevin_steps = (
        args.steps // 2 if args.langevin_steps is None else args.langevin_steps
    )
    logger.info(
        "%s (%d atoms) on %s at %s (%s)",
        atoms.get_chemical_formula(),
        len(atoms),
        args.model,
        args.url,
        "server-side MD" if args.server_side else "RemoteCalculator",
    )
    phases = (langevin_steps, args.steps, args.timestep, args.temperature, args.every)
    if args.server_side:
        # One request integrates up to --chunk steps: wait for it longer than 30 s.
        with HEGNNClient(args.url, api_key=args.api_key, timeout=600) as client:
            frames, log = run_md_on_server(
                client, args.model, atoms, *phases, args.seed, args.chunk
            )
    else:
        atoms.calc = RemoteCalculator(args.url, args.model, api_key=args.api_key)
        watch = UncertaintyWatch(atoms, stop=args.on_uncertain == "stop")
        frames, log = run_md(atoms, *phases, args.seed, watch)
        atoms.calc.close()
        if watch.flagged:
            logger.warning("%d steps over the uncertainty threshold", watch.flagged)

    args.out.mkdir(parents=True, exist_ok=True)
    trajectory = args.out / "md_remote.extxyz"
    write(trajectory, frames, format="extxyz")
    nve_start = langevin_steps * args.timestep
    plot = args.out / "md_remote_energy.png"
    plot_energies(log, nve_start, plot)
    drift = nve_drift(log, nve_start, len(atoms))
    print(  # noqa: T201  (the one summary line)
        f"{len(frames)} frames -> {trajectory}; energy plot -> {plot}; "
        f"NVE drift {drift:.3g} meV/atom/ps"
    )


if __name__ == "__main__":
    main()
