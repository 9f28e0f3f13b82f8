"""Server-side MD (``/md``) for potential models: ASE velocity Verlet or Langevin.

Units are ASE's at the edges: positions Å, velocities Å/fs, time fs, energy eV,
forces eV/Å, masses amu (ASE's standard atomic masses), temperature K, friction 1/fs.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet
from numpy.typing import NDArray

from hegnn import keys
from hegnn.structure import StructureInput
from hegnn.thermal import thermalize
from hegnn_serve.service.errors import InputError
from hegnn_serve.service.predictor import Predictor


@dataclass(frozen=True)
class MDRun:
    """What to integrate: Langevin when ``temperature_K`` is set, else NVE."""

    timestep_fs: float
    steps: int
    every: int = 1
    temperature_K: float | None = None
    friction_per_fs: float = 0.01
    seed: int | None = None
    return_forces: bool = False


@dataclass(frozen=True)
class Frame:
    """One recorded MD frame."""

    step: int
    time_fs: float
    positions: NDArray[np.float64]  # [n, 3] Å
    velocities: NDArray[np.float64]  # [n, 3] Å/fs
    energy: float  # potential energy, eV
    forces: NDArray[np.float64] | None  # [n, 3] eV/Å


class PredictorCalculator(Calculator):
    """An ASE calculator over an in-memory Predictor (no checkpoint reload)."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, predictor: Predictor, **kwargs) -> None:
        super().__init__(**kwargs)
        self.predictor = predictor

    def calculate(
        self, atoms=None, properties=None, system_changes=all_changes
    ) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        structure = StructureInput.from_atoms(self.atoms)
        (result,) = self.predictor.forces([self.predictor.prepare(structure)])
        if not result.finite:
            raise InputError(keys.POSITIONS, "the model gave non-finite forces")
        self.results = {
            "energy": result.energy,
            "free_energy": result.energy,
            "forces": result.forces,
        }


def run_md(
    predictor: Predictor,
    structure: StructureInput,
    run: MDRun,
    check: Callable[[], None] | None = None,
) -> list[Frame]:
    """Integrate ``run.steps`` steps; frames at step 0, every, 2·every, ...
    ``check`` is called before each step and may raise to stop the run (the
    service's deadline and cancellation)."""
    atoms = Atoms(
        numbers=structure.numbers,
        positions=structure.positions,
        cell=structure.cell,
        pbc=structure.pbc if structure.pbc is not None else False,
    )
    atoms.calc = PredictorCalculator(predictor)
    rng = np.random.default_rng(run.seed)
    if structure.velocities is not None:
        atoms.set_velocities(structure.velocities / units.fs)  # Å/fs -> ASE units
    elif run.temperature_K:
        # rotation kept: a periodic cell has no free rotation to remove
        thermalize(atoms, run.temperature_K, rng, zero_rotation=False)
    dt = run.timestep_fs * units.fs
    if run.temperature_K is None:
        dyn = VelocityVerlet(atoms, timestep=dt)
    else:
        atoms.set_constraint(FixCom())  # ASE's advice over Langevin(fixcm=True)
        dyn = Langevin(
            atoms,
            timestep=dt,
            temperature_K=run.temperature_K,
            friction=run.friction_per_fs / units.fs,
            fixcm=False,
            rng=rng,
        )

    def frame(step: int) -> Frame:
        energy = atoms.get_potential_energy()
        return Frame(
            step=step,
            time_fs=step * run.timestep_fs,
            positions=atoms.get_positions(),
            velocities=atoms.get_velocities() * units.fs,
            energy=float(energy),
            forces=atoms.get_forces() if run.return_forces else None,
        )

    try:
        frames = [frame(0)]
        for step in range(1, run.steps + 1):
            if check is not None:
                check()
            dyn.run(1)
            if step % run.every == 0:
                frames.append(frame(step))
    except InputError as err:
        step = dyn.nsteps
        raise InputError(
            err.loc, f"at MD step {step}: {err.message} (try a smaller timestep_fs)"
        ) from err
    return frames
