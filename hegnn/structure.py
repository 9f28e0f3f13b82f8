"""Raw inputs of one structure, as float64/int64 numpy arrays (shapes checked), and
``centred``: the structure next to the origin before a float32 model sees it."""

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class StructureInput:
    """One structure as posted or read: positions plus what its rule needs."""

    positions: NDArray[np.float64]  # [n, 3] Å (N-body: simulation units)
    numbers: NDArray[np.int64] | None = None  # [n]
    velocities: NDArray[np.float64] | None = None  # [n, 3]
    charges: NDArray[np.float64] | None = None  # [n]
    cell: NDArray[np.float64] | None = None  # [3, 3] Å, rows are lattice vectors
    pbc: NDArray[np.bool_] | None = None  # [3]

    @property
    def periodic(self) -> bool:
        return self.pbc is not None and bool(self.pbc.any())

    @classmethod
    def from_atoms(cls, atoms) -> "StructureInput":
        """Positions and numbers of an ``ase.Atoms``; cell and pbc only when some
        direction is periodic."""
        periodic = bool(atoms.pbc.any())
        return cls(
            positions=atoms.get_positions(),
            numbers=atoms.get_atomic_numbers(),
            cell=atoms.get_cell().array if periodic else None,
            pbc=atoms.pbc.copy() if periodic else None,
        )


def centred(s: StructureInput) -> tuple[StructureInput, NDArray[np.float64]]:
    """``s`` moved next to the origin, in float64, and the shift that moves it back.

    A float32 model sees coordinates of the size of the structure, not of where it
    sits: a molecule at 1e5 Å would otherwise lose 0.01 Å of precision per
    coordinate. Non-periodic: the centroid moves to the origin. Periodic: atoms are
    wrapped into the cell along periodic vectors, and centred along the others.
    Energies and forces are unchanged (the models are translation invariant);
    positions a model returns are moved back by adding ``shift`` (``[n, 3]``, or
    ``[1, 3]`` when the same for every atom): ``original = moved + shift``.
    """
    x = np.asarray(s.positions, dtype=np.float64)
    if len(x) == 0:
        return s, np.zeros((1, 3))
    if not s.periodic or s.cell is None:
        shift = x.mean(axis=0, keepdims=True)
        return replace(s, positions=x - shift), shift
    cell = np.asarray(s.cell, dtype=np.float64)
    periodic = np.broadcast_to(np.asarray(s.pbc, dtype=bool), 3)
    frac = np.linalg.solve(cell.T, x.T).T  # x = frac @ cell
    frac[:, periodic] -= np.floor(frac[:, periodic])
    if not periodic.all():
        frac[:, ~periodic] -= frac[:, ~periodic].mean(axis=0)
    moved = frac @ cell
    return replace(s, positions=moved), x - moved
