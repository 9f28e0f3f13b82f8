r"""The symmetric structures of HEGNN.md §5: k-fold stars and the five Platonic solids.

Every structure is centred (centroid at the origin) with its vertices on the unit
sphere. k-fold stars carry a centre node at the origin joined to every spoke by edges
in both directions; polyhedra use the complete graph. Positions are float64.
Knows nothing of models.
"""

import math
from dataclasses import dataclass
from itertools import product

import torch
from torch import Tensor

PHI = (1.0 + math.sqrt(5.0)) / 2.0  # golden ratio φ


@dataclass(frozen=True)
class Structure:
    """One symmetric graph.

    ``positions: [n, 3]`` (float64, centred, vertices of unit norm),
    ``edge_index: [2, n_edges]`` (rows j, i; both directions present),
    ``centre``: index of the centre node of a k-fold star, else None.
    """

    name: str
    positions: Tensor
    edge_index: Tensor
    centre: int | None = None

    @property
    def vertices(self) -> Tensor:
        """Positions without the centre node: ``[n_vertices, 3]``."""
        if self.centre is None:
            return self.positions
        keep = torch.arange(len(self.positions)) != self.centre
        return self.positions[keep]

    def rotated(self, rotation: Tensor) -> "Structure":
        """The copy with x -> R x (``rotation: [3, 3]``); same graph."""
        positions = self.positions @ rotation.to(self.positions).T
        return Structure(self.name, positions, self.edge_index, self.centre)


def random_rotation(seed: int) -> Tensor:
    """A Haar-uniform rotation ``[3, 3]`` (float64, det +1) from a seeded Gaussian.

    Q of the QR decomposition of a 3x3 Gaussian, with the signs fixed by diag(R), is
    Haar on O(3); a fixed reflection maps the det -1 coset onto SO(3).
    """
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 2] = -q[:, 2]
    return q


def _unit(points: list[tuple[float, float, float]]) -> Tensor:
    """Rows scaled to unit norm after removing the centroid: ``[n, 3]``."""
    x = torch.tensor(points, dtype=torch.float64)
    x = x - x.mean(dim=0)
    return x / x.norm(dim=-1, keepdim=True)


def complete_graph(n: int) -> Tensor:
    """All ordered pairs j != i: ``[2, n (n - 1)]``."""
    j, i = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = j != i
    return torch.stack([j[keep], i[keep]])


def _cyclic(points: list[tuple[float, float, float]]) -> list[tuple[float, ...]]:
    """The three cyclic permutations of each point."""
    return [p[k:] + p[:k] for p in points for k in range(3)]


def k_fold(k: int) -> Structure:
    r"""Centre plus k spokes (cos 2πj/k, sin 2πj/k, 0); centre-spoke edges both ways."""
    angles = 2.0 * math.pi * torch.arange(k, dtype=torch.float64) / k
    spokes = torch.stack(
        [torch.cos(angles), torch.sin(angles), torch.zeros_like(angles)], dim=-1
    )
    positions = torch.cat([torch.zeros(1, 3, dtype=torch.float64), spokes])
    centre = torch.zeros(k, dtype=torch.long)
    spoke = torch.arange(1, k + 1)
    edge_index = torch.cat(
        [torch.stack([centre, spoke]), torch.stack([spoke, centre])], dim=1
    )
    return Structure(f"{k}-fold", positions, edge_index, centre=0)


def polyhedron(name: str, points: list[tuple[float, ...]]) -> Structure:
    """Vertices scaled onto the unit sphere, complete graph."""
    return Structure(name, _unit(points), complete_graph(len(points)))


def platonic_solids() -> list[Structure]:
    """Tetrahedron, cube, octahedron, dodecahedron, icosahedron (HEGNN.md §5)."""
    cube = [p for p in product((1.0, -1.0), repeat=3)]
    tetrahedron = [p for p in cube if math.prod(p) > 0]  # even number of minus signs
    octahedron = _cyclic([(1.0, 0.0, 0.0), (-1.0, 0.0, 0.0)])
    icosahedron = _cyclic([(0.0, a, b) for a in (1.0, -1.0) for b in (PHI, -PHI)])
    dodecahedron = cube + _cyclic(
        [(0.0, a, b) for a in (1 / PHI, -1 / PHI) for b in (PHI, -PHI)]
    )
    return [
        polyhedron("tetrahedron", tetrahedron),
        polyhedron("cube", cube),
        polyhedron("octahedron", octahedron),
        polyhedron("dodecahedron", dodecahedron),
        polyhedron("icosahedron", icosahedron),
    ]


def all_structures() -> dict[str, Structure]:
    """The nine structures of the degeneration table, in table order."""
    stars = [k_fold(k) for k in (2, 3, 5, 10)]
    return {s.name: s for s in stars + platonic_solids()}


STRUCTURES: dict[str, Structure] = all_structures()
