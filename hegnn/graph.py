"""Graphs over atoms: fully connected, bond + 2-hop, and radius (vesin, with PBC).

Every builder returns directed edges j -> i (``edge_index[0]`` = j, ``[1]`` = i), both
directions present, no self loops. Knows nothing of models.
"""

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.sparse import csr_matrix
from scipy.spatial import cKDTree
from torch import LongTensor, Tensor
from vesin import NeighborList

from hegnn.errors import InputError


def full_graph(n_nodes: int) -> LongTensor:
    """All ordered pairs j != i. Returns ``[2, n_nodes * (n_nodes - 1)]``."""
    j, i = torch.meshgrid(torch.arange(n_nodes), torch.arange(n_nodes), indexing="ij")
    keep = j != i
    return torch.stack([j[keep], i[keep]])


def bond_2hop_graph(
    positions: ArrayLike, cutoff: float
) -> tuple[LongTensor, LongTensor]:
    """Bonds (pairs closer than ``cutoff`` Å) plus pairs two bonds apart.

    The MD17 trajectory protocol (GMN, reused by HEGNN) builds this once from frame 0.
    Returns ``edge_index [2, n_edges]`` and ``hop [n_edges]`` (1 = bond, 2 = two-hop).
    """
    x = np.asarray(positions, dtype=np.float64)
    n = len(x)
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    bond = (d < cutoff) & ~np.eye(n, dtype=bool)
    two_hop = (
        ((bond.astype(int) @ bond.astype(int)) > 0) & ~bond & ~np.eye(n, dtype=bool)
    )
    hop = np.where(bond, 1, np.where(two_hop, 2, 0))
    j, i = np.nonzero(hop)
    edge_index = torch.as_tensor(np.stack([j, i]), dtype=torch.long)
    return edge_index, torch.as_tensor(hop[j, i], dtype=torch.long)


def count_bond_2hop_edges(positions: ArrayLike, cutoff: float) -> int:
    """Edges of ``bond_2hop_graph`` from sparse neighbour lists (no n x n matrix)."""
    x = np.asarray(positions, dtype=np.float64)
    n = len(x)
    if n < 2:
        return 0
    pairs = cKDTree(x).query_pairs(cutoff, p=2.0, output_type="ndarray")
    # query_pairs keeps d <= cutoff, the graph d < cutoff: drop the boundary.
    if len(pairs):
        d = np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=-1)
        pairs = pairs[d < cutoff]
    i = np.concatenate([pairs[:, 0], pairs[:, 1]])
    j = np.concatenate([pairs[:, 1], pairs[:, 0]])
    bond = csr_matrix((np.ones(len(i), dtype=np.int64), (i, j)), shape=(n, n))
    reach = (bond + bond @ bond).tocoo()
    return int(np.count_nonzero(reach.row != reach.col))


def _periodic_box(
    cell: ArrayLike | None, pbc: ArrayLike | bool | None
) -> tuple[np.ndarray, list[bool]]:
    """vesin's ``box`` (zeros when nothing is periodic) and ``periodic`` flags;
    InputError at ``cell`` for a periodic cell without volume."""
    periodic = np.zeros(3, dtype=bool) if pbc is None else np.broadcast_to(pbc, 3)
    box = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    if periodic.any() and abs(np.linalg.det(box)) < 1e-12:
        raise InputError("cell", "periodic boundaries need a cell with non-zero volume")
    if not periodic.any():
        box = np.zeros((3, 3))
    return box, [bool(p) for p in periodic]


def count_radius_edges(
    positions: ArrayLike,
    cutoff: float,
    cell: ArrayLike | None = None,
    pbc: ArrayLike | bool | None = None,
) -> int:
    """Edges of ``radius_graph``, from vesin's half list of pair indices only."""
    x = np.ascontiguousarray(positions, dtype=np.float64)
    box, periodic = _periodic_box(cell, pbc)
    nl = NeighborList(cutoff=float(cutoff), full_list=False)
    (i,) = nl.compute(points=x, box=box, periodic=periodic, quantities="i")
    return 2 * len(i)


def radius_graph(
    positions: ArrayLike,
    cutoff: float,
    cell: ArrayLike | None = None,
    pbc: ArrayLike | bool | None = None,
) -> tuple[LongTensor, Tensor]:
    """Pairs closer than ``cutoff`` Å, with periodic images when ``pbc`` is set.

    Returns ``edge_index [2, n_edges]`` and ``shifts [n_edges, 3]`` (Å, float64) such
    that ``x_ij = x_i - x_j + shift`` is the vector from the image of j to i.
    """
    x = np.ascontiguousarray(positions, dtype=np.float64)
    box, periodic = _periodic_box(cell, pbc)
    nl = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, S = nl.compute(points=x, box=box, periodic=periodic, quantities="ijS")
    # vesin: D = x_j - x_i + S @ box, hence x_i - x_j + shift with shift = -S @ box.
    shifts = -(S.astype(np.float64) @ box)
    edge_index = torch.as_tensor(np.stack([j, i]).astype(np.int64))
    return edge_index, torch.as_tensor(shifts)
