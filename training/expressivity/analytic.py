r"""Blind degrees from the vertex sums S_l = Σ_v Y^(l)(p̂_v) (HEGNN.md §5).

S_l is invariant under the structure's point group, so it is zero whenever degree l
holds no invariant vector; for these structures the converse holds too. A degree-l
equivariant readout of the structure is then zero for every orientation: blind.
"""

import torch
from e3nn import o3
from torch import Tensor

from hegnn_serve.training.expressivity.structures import Structure

TOLERANCE = 1e-8


def vertex_sum(structure: Structure, degree: int) -> Tensor:
    r"""S_l = Σ_v Y^(l)(p_v / |p_v|), centre excluded, float64: ``[2l + 1]``.

    e3nn real harmonics with ``normalization="norm"`` (each block of unit norm).
    """
    p = structure.vertices.to(torch.float64)
    y = o3.spherical_harmonics(degree, p, normalize=True, normalization="norm")
    return y.sum(0)


def blind_degrees(
    structure: Structure, lmax: int = 12, tol: float = TOLERANCE
) -> list[int]:
    """Degrees 1 <= l <= lmax with |S_l| < tol."""
    degrees = range(1, lmax + 1)
    return [d for d in degrees if vertex_sum(structure, d).norm() < tol]


def blind_degree_table(
    structures: dict[str, Structure], lmax: int = 12
) -> dict[str, list[int]]:
    """Blind degrees of every structure: name -> sorted degrees."""
    return {name: blind_degrees(s, lmax) for name, s in structures.items()}
