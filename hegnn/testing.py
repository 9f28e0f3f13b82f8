"""Reusable checks: O(3)/translation/permutation equivariance and FD forces.

Every model test uses these, so every path is checked the same way.
"""

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from hegnn import keys
from hegnn.inputs import make_graph_data


@dataclass(frozen=True)
class Structure:
    """Raw inputs of one structure (numpy, float64)."""

    positions: np.ndarray  # [n, 3]
    numbers: np.ndarray  # [n]
    velocities: np.ndarray  # [n, 3]
    charges: np.ndarray  # [n]

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> "Structure":
        """x -> x R^T + t, v -> v R^T."""
        return replace(
            self,
            positions=self.positions @ rotation.T + translation,
            velocities=self.velocities @ rotation.T,
        )

    def permuted(self, perm: np.ndarray) -> "Structure":
        return Structure(
            self.positions[perm],
            self.numbers[perm],
            self.velocities[perm],
            self.charges[perm],
        )


def random_structure(
    n_atoms: int = 20,
    seed: int = 0,
    species: tuple[int, ...] = (1, 6, 8),
    min_distance: float = 0.9,
    density: float = 0.08,
) -> Structure:
    """A random molecule-like cluster with no pair closer than ``min_distance`` Å."""
    rng = np.random.default_rng(seed)
    radius = (3 * n_atoms / (4 * np.pi * density)) ** (1 / 3)
    points: list[np.ndarray] = []
    while len(points) < n_atoms:
        p = rng.uniform(-radius, radius, 3)
        if np.linalg.norm(p) <= radius and all(
            np.linalg.norm(p - q) >= min_distance for q in points
        ):
            points.append(p)
    return Structure(
        positions=np.array(points),
        numbers=rng.choice(species, n_atoms),
        velocities=rng.normal(0.0, 0.5, (n_atoms, 3)),
        charges=rng.choice([-1.0, 1.0], n_atoms),
    )


def random_orthogonal(seed: int, reflect: bool) -> np.ndarray:
    """A random rotation (det +1), or a rotation times -1 (det -1) if ``reflect``."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if reflect else q


def predict(model: nn.Module, structure: Structure) -> dict[str, Tensor]:
    """Run a model on a structure in the model's dtype (graph built by its rule)."""
    dtype = next(model.parameters()).dtype
    data = make_graph_data(
        model.config,
        structure.positions,
        numbers=structure.numbers,
        velocities=structure.velocities,
        charges=structure.charges,
        dtype=dtype,
    )
    out = model(data)
    return {k: v.detach() for k, v in out.items()}


def equivariance_errors(
    model: nn.Module, structure: Structure, seed: int = 0
) -> dict[str, float]:
    """Max abs errors of outputs under rotation, reflection, translation, permutation.

    Potential: E invariant, F -> F R^T, permuted with the atoms (a committee's
    per-atom force spread permuted, its other spreads invariant). Dynamics:
    x' -> x' R^T + t, permuted with the atoms.
    """
    rng = np.random.default_rng(seed)
    reference = predict(model, structure)
    errors: dict[str, float] = {}

    def compare(name: str, out: dict[str, Tensor], rotation, shift, perm) -> None:
        for key, ref in reference.items():
            expected = ref.numpy()
            if key in (keys.FORCES, keys.POSITIONS):
                expected = expected[perm] @ rotation.T
                if key == keys.POSITIONS:
                    expected = expected + shift
            elif key == keys.FORCES_STD:  # per-atom invariant (committees)
                expected = expected[perm]
            err = float(np.abs(out[key].numpy() - expected).max())
            errors[f"{name}/{key}"] = err

    identity, zero, keep = np.eye(3), np.zeros(3), np.arange(len(structure.numbers))
    for reflect in (False, True):
        rotation = random_orthogonal(seed, reflect)
        out = predict(model, structure.transformed(rotation, zero))
        compare("reflection" if reflect else "rotation", out, rotation, zero, keep)
    shift = rng.normal(0.0, 3.0, 3)
    out = predict(model, structure.transformed(identity, shift))
    compare("translation", out, identity, shift, keep)
    perm = rng.permutation(len(structure.numbers))
    out = predict(model, structure.permuted(perm))
    compare("permutation", out, identity, zero, perm)
    return errors


def assert_equivariant(
    model: nn.Module,
    structure: Structure,
    atol: float = 1e-9,
    seed: int = 0,
) -> None:
    """Raise AssertionError naming every symmetry whose error exceeds ``atol``."""
    errors = equivariance_errors(model, structure, seed)
    bad = {k: v for k, v in errors.items() if not v <= atol}
    assert not bad, f"equivariance errors above {atol}: {bad}"


def finite_difference_forces(
    model: nn.Module, structure: Structure, step: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """(autograd forces, central-difference -dE/dx), both ``[n, 3]`` eV/Å.

    The default step balances truncation (O(step^4), five-point stencil) against
    float64 round-off of total energies of order 1e4 eV (about 1e-12 eV / step).
    """
    analytic = predict(model, structure)[keys.FORCES].numpy()
    numeric = np.zeros_like(analytic)
    stencil = ((2, -1.0), (1, 8.0), (-1, -8.0), (-2, 1.0))  # 4th-order central
    for a in range(len(structure.numbers)):
        for c in range(3):
            dE = 0.0
            for k, weight in stencil:
                x = structure.positions.copy()
                x[a, c] += k * step
                data = make_graph_data(
                    model.config, x, structure.numbers, dtype=torch.float64
                )
                energy = model(data, compute_forces=False)[keys.ENERGY]
                dE += weight * float(energy.detach().sum())
            numeric[a, c] = -dE / (12 * step)
    return analytic, numeric
