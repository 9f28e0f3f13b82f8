"""Seeded Maxwell-Boltzmann start velocities for ASE MD, on every supported ASE."""

import numpy as np
from ase import Atoms
from ase.md import velocitydistribution

# ASE >= 3.29 renamed MaxwellBoltzmannDistribution to thermalize_momenta (same draws).
_thermalize_momenta = getattr(
    velocitydistribution,
    "thermalize_momenta",
    velocitydistribution.MaxwellBoltzmannDistribution,
)


def thermalize(
    atoms: Atoms,
    temperature_K: float,
    rng: np.random.Generator,
    zero_rotation: bool = True,
) -> None:
    """Momenta p ~ N(0, m k_B T) from ``rng``, then no net momentum (and, with
    ``zero_rotation``, no net angular momentum)."""
    _thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    velocitydistribution.Stationary(atoms)
    if zero_rotation:
        velocitydistribution.ZeroRotation(atoms)
