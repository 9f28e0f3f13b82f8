"""BFGS relaxation of a perturbed MD17 molecule through RemoteCalculator.

    python examples/relax_remote.py --url http://127.0.0.1:8000 \\
        --model md17-aspirin-ff-hegnn --molecule aspirin --rattle 0.1

Writes ``<out>/relax_remote.extxyz`` (every BFGS step with energy and forces) and
``<out>/relax_remote.png`` (energy in eV and max force in eV/Å per step). Needs numpy,
httpx, ase and matplotlib; no torch.
"""

import logging
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.optimize import BFGS
from common import load_molecule, server_parser, setup_logging
from matplotlib.figure import Figure

from hegnn_serve.service.calculator import RemoteCalculator

logger = logging.getLogger("relax_remote")


def relax(atoms: Atoms, fmax: float, steps: int) -> tuple[list[Atoms], bool]:
    """BFGS until max |F_i| < ``fmax`` (eV/Å) or ``steps``; frames and convergence."""
    frames: list[Atoms] = []

    def record() -> None:
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(
            frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces()
        )
        frames.append(frame)

    optimizer = BFGS(atoms, logfile=None)
    optimizer.attach(record)
    converged = optimizer.run(fmax=fmax, steps=steps)
    return frames, bool(converged)


def plot_relaxation(frames: list[Atoms], fmax: float, path: Path) -> None:
    """Energy (eV) and max force (eV/Å, log scale) against BFGS step."""
    energy = [f.get_potential_energy() for f in frames]
    max_force = [np.linalg.norm(f.get_forces(), axis=1).max() for f in frames]
    fig = Figure(figsize=(7, 4))
    ax_e, ax_f = fig.subplots(1, 2)
    ax_e.plot(energy, marker=".")
    ax_e.set(xlabel="BFGS step", ylabel="energy (eV)")
    ax_f.semilogy(max_force, marker=".")
    ax_f.axhline(fmax, color="grey", ls=":", label="fmax")
    ax_f.set(xlabel="BFGS step", ylabel="max |F| (eV/Å)")
    ax_f.legend()
    fig.suptitle(path.stem)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = server_parser(__doc__, "md17-aspirin-ff-hegnn")
    parser.add_argument("--molecule", default="aspirin", help="name or .xyz path")
    parser.add_argument("--rattle", type=float, default=0.1, help="σ of the noise, Å")
    parser.add_argument("--fmax", type=float, default=0.05, help="eV/Å")
    parser.add_argument("--steps", type=int, default=200, help="max BFGS steps")
    args = parser.parse_args(argv)
    setup_logging()

    atoms = load_molecule(args.molecule)
    atoms.rattle(stdev=args.rattle, seed=args.seed)
    atoms.calc = RemoteCalculator(args.url, args.model, api_key=args.api_key)
    logger.info("relaxing %s on %s", atoms.get_chemical_formula(), args.model)
    frames, converged = relax(atoms, args.fmax, args.steps)
    atoms.calc.close()

    args.out.mkdir(parents=True, exist_ok=True)
    trajectory = args.out / "relax_remote.extxyz"
    write(trajectory, frames, format="extxyz")
    plot = args.out / "relax_remote.png"
    plot_relaxation(frames, args.fmax, plot)
    first, last = frames[0], frames[-1]
    print(  # noqa: T201  (the one summary line)
        f"{'converged' if converged else 'not converged'} in {len(frames) - 1} "
        f"steps: E {first.get_potential_energy():.4f} -> "
        f"{last.get_potential_energy():.4f} eV, max |F| "
        f"{np.linalg.norm(last.get_forces(), axis=1).max():.3g} eV/Å; "
        f"{trajectory}, {plot}"
    )


if __name__ == "__main__":
    main()
