r"""Steerable vectors: Y^(l) of edge directions and per-degree inner products z^(l).

A node's steerable state is one vector per degree l = 0..L stacked in e3nn order,
``v: [n, (L+1)^2]`` with block l at offset l^2 (irreps 1x0e + 1x1o + 1x2e + ...).
"""

import torch
from e3nn import o3
from torch import Tensor, nn


def degree_index(lmax: int) -> Tensor:
    """Degree l of each component of the stacked vector: ``[(lmax+1)^2]``."""
    return torch.repeat_interleave(
        torch.arange(lmax + 1), torch.arange(lmax + 1) * 2 + 1
    )


class PerDegree(nn.Module):
    r"""Copies one scalar per degree onto that degree's 2l+1 components.

    ``g: [n_edges, L+1] -> [n_edges, (L+1)^2]``, as ``g[:, degree_index(L)]`` but as a
    matmul with a fixed 0/1 matrix, whose backward is a matmul too (the index's
    backward is a scatter, slower on CPU).
    """

    def __init__(self, lmax: int) -> None:
        super().__init__()
        blocks = torch.nn.functional.one_hot(degree_index(lmax), lmax + 1).T
        self.register_buffer(
            "blocks", blocks.to(torch.get_default_dtype()), persistent=False
        )

    def forward(self, g: Tensor) -> Tensor:
        return g @ self.blocks.to(g.dtype)


class SphericalHarmonics(nn.Module):
    r"""Y^(l)(\hat x) for l = 0..L, each block of unit norm (Y^(0) = 1).

    e3nn with ``normalization="norm"``. Never detached: forces need the angular path.
    Shapes: ``unit_vectors: [n_edges, 3]`` -> ``[n_edges, (L+1)^2]``.
    """

    def __init__(self, lmax: int) -> None:
        super().__init__()
        # degrees as plain ints: an o3.Irreps attribute breaks torch.compile's guards
        self.degrees = list(range(lmax + 1))

    def forward(self, unit_vectors: Tensor) -> Tensor:
        return o3.spherical_harmonics(
            self.degrees, unit_vectors, normalize=False, normalization="norm"
        )


INNER_PRODUCT_MAPS = ("bounded", "identity", "asinh")


class InnerProducts(nn.Module):
    r"""z^{(l)}_{ij} = \langle v_i^{(l)}, v_j^{(l)} \rangle for l = 0..L  (HEGNN Eq. 4).

    Invariant under O(3) because each block transforms by the orthogonal Wigner matrix
    D^(l). ``mapping`` is applied to z (all smooth and odd, so forces stay
    conservative and no ``detach`` is needed):

    - ``bounded``: z / sqrt(1 + z^2), bounded in (-1, 1) and monotone, so messages
      cannot blow up as the quadratic z grows (the official code's NaN problem); it
      saturates once |z| >> 1 and then discards magnitude.
    - ``identity``: z as is (the official code).
    - ``asinh``: asinh(z), ≈ z near 0 and logarithmic for large |z|: keeps magnitude
      information without the identity's unbounded growth.

    Shapes: ``v_i, v_j: [n_edges, (L+1)^2]`` -> ``[n_edges, L+1]``.
    """

    def __init__(self, lmax: int, mapping: str = "bounded") -> None:
        super().__init__()
        if mapping not in INNER_PRODUCT_MAPS:
            raise ValueError(
                f"mapping: expected one of {INNER_PRODUCT_MAPS}, got {mapping!r}"
            )
        self.mapping = mapping
        block = torch.nn.functional.one_hot(degree_index(lmax), lmax + 1)
        self.register_buffer("block", block.to(torch.get_default_dtype()))

    def forward(self, v_i: Tensor, v_j: Tensor) -> Tensor:
        z = (v_i * v_j) @ self.block.to(v_i.dtype)
        if self.mapping == "bounded":
            return z * torch.rsqrt(1.0 + z * z)
        if self.mapping == "asinh":
            return torch.asinh(z)
        return z
