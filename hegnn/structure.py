"""Raw inputs of one structure, as float64/int64 numpy arrays (shapes checked)."""

from dataclasses import dataclass

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
