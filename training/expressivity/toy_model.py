r"""The one-layer toy classifier of HEGNN.md §2 ("Toy variant") and §6.

Graphs are tiny, so the batch is held as dense operators (mean over in-neighbours,
sum-pool, centroid); every map is then a matmul, which keeps the model ``vmap``-able
over stacked per-seed parameters. Knows nothing of training.
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hegnn.nn.layer import Edges, HEGNNLayer
from hegnn.nn.mlp import MLP
from hegnn.nn.spherical import SphericalHarmonics, degree_index
from hegnn_serve.training.expressivity.structures import Structure


@dataclass(frozen=True)
class ToySpec:
    """Which toy model: EGNN (``lmax=None``), HEGNN_{l=L} or HEGNN_{l<=L}."""

    name: str
    lmax: int | None
    single_degree: bool = False

    @property
    def readout_degrees(self) -> list[int]:
        """Degrees of v read out: [L] for a single degree, 0..L otherwise."""
        if self.lmax is None:
            return []
        return [self.lmax] if self.single_degree else list(range(self.lmax + 1))


def egnn() -> ToySpec:
    return ToySpec("EGNN", None)


def single_degree(L: int) -> ToySpec:
    return ToySpec(f"HEGNN l={L}", L, single_degree=True)


def up_to_degree(L: int) -> ToySpec:
    return ToySpec(f"HEGNN l<={L}", L)


@dataclass(frozen=True)
class GraphBatch:
    """Disjoint union of G graphs as dense operators (float64).

    ``x: [n, 3]``, ``edge_index: [2, n_edges]`` (rows j, i),
    ``mean_in: [n, n_edges]`` (row i averages the edges into i),
    ``pool: [G, n]`` (sum over each graph's nodes), ``centroid: [n, n]``
    (row i averages the nodes of i's graph), ``labels: [G]``.
    """

    x: Tensor
    edge_index: Tensor
    mean_in: Tensor
    pool: Tensor
    centroid: Tensor
    labels: Tensor


def batch_graphs(structures: list[Structure], labels: list[int]) -> GraphBatch:
    """Join structures into one :class:`GraphBatch` with the given labels."""
    offsets = torch.tensor([0] + [len(s.positions) for s in structures]).cumsum(0)
    n = int(offsets[-1])
    x = torch.cat([s.positions for s in structures]).to(torch.float64)
    edge_index = torch.cat(
        [s.edge_index + offsets[g] for g, s in enumerate(structures)], dim=1
    )
    graph = torch.repeat_interleave(
        torch.arange(len(structures)), torch.diff(offsets)
    )  # [n]
    pool = nn.functional.one_hot(graph, len(structures)).T.to(torch.float64)
    centroid = pool.T @ (pool / pool.sum(1, keepdim=True))
    incoming = nn.functional.one_hot(edge_index[1], n).T.to(torch.float64)
    mean_in = incoming / incoming.sum(1, keepdim=True).clamp(min=1.0)
    return GraphBatch(x, edge_index, mean_in, pool, centroid, torch.tensor(labels))


class ToyHEGNN(nn.Module):
    r"""One-layer HEGNN (or EGNN) with an equivariant linear readout.

    .. math::
        h_i = W s_i + b,\ s_i = 1 \quad (E1)

        w_{ij} = \phi_{init}([d_{ij}, h_i, h_j]),\quad
        c_i = \phi_c(h_i) \in R^{L+1} \quad (E2)

        v_i^{(l)} = \mathrm{mean}_j\, w_{ij,l} Y^{(l)}(\hat x_{ij})
            + c_{i,l}\, Y^{(l)}(x_i - \bar x) \quad (E3 + toy centroid term)

        (h, x', v) = \mathrm{HEGNNLayer}(h, x, v) \quad (E4-E8)

        \mathrm{logits} = W_o [\textstyle\sum_i h_i,\ \sum_i (x'_i - x_i),\
            \sum_i v_i^{(read)}] + b_o

    HEGNN_{l=L} multiplies v by a mask that zeroes blocks l < L after the init and
    after the layer, and reads out block L only. Σ h is rotation invariant, so only
    the pooled displacement (degree 1) and pooled v (degree l) can tell a structure
    from its rotated copy, and both are zero when their degree is blind.
    Y(0) = 0 for l >= 1 (the centre node of a k-fold star sits at x̄).
    Shapes: ``GraphBatch`` with n nodes and G graphs -> logits ``[G, 2]``.
    """

    def __init__(self, spec: ToySpec, hidden_dim: int = 128) -> None:
        super().__init__()
        H, L = hidden_dim, spec.lmax
        self.spec = spec
        self.embed = nn.Linear(1, H)  # E1
        if L is not None:
            self.phi_init = MLP(1 + 2 * H, H, L + 1, final_activation=True)  # E2
            self.phi_c = MLP(H, H, L + 1)
            self.sh = SphericalHarmonics(L)
            degree = degree_index(L)
            self.register_buffer("degree", degree, persistent=False)
            low = spec.lmax if spec.single_degree else 0
            mask = (degree >= low).to(torch.get_default_dtype())
            self.register_buffer("mask", mask, persistent=False)
            read = torch.isin(degree, torch.tensor(spec.readout_degrees))
            self.register_buffer("read", read.nonzero().squeeze(-1), persistent=False)
        self.layer = HEGNNLayer(H, 1, L, update_positions=True, use_velocity=False)
        n_read = sum(2 * d + 1 for d in spec.readout_degrees)
        self.readout = nn.Linear(H + 3 + n_read, 2)

    def steerable_init(self, h: Tensor, x: Tensor, graph: GraphBatch) -> Tensor:
        """v ``[n, (L+1)^2]`` from edge directions and centred positions (E2-E3)."""
        j, i = graph.edge_index
        x_ij = x[i] - x[j]  # [n_edges, 3]
        d_ij = x_ij.norm(dim=-1, keepdim=True)  # [n_edges, 1]
        w_ij = self.phi_init(torch.cat([d_ij, h[i], h[j]], dim=-1))  # [n_edges, L+1]
        v = graph.mean_in @ (w_ij[:, self.degree] * self.sh(x_ij / d_ij))
        r = x - graph.centroid @ x  # [n, 3]
        r_hat = r / r.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        v = v + self.phi_c(h)[:, self.degree] * self.sh(r_hat)
        return v * self.mask

    def pooled(self, graph: GraphBatch) -> dict[str, Tensor]:
        """Sum-pooled h ``[G, H]``, displacement ``[G, 3]``, v ``[G, (L+1)^2]``."""
        x = graph.x
        h = self.embed(torch.ones_like(x[:, :1]))  # [n, H]   E1
        v = None if self.spec.lmax is None else self.steerable_init(h, x, graph)
        j, i = graph.edge_index
        x_ij = x[i] - x[j]
        d2_ij = (x_ij * x_ij).sum(-1, keepdim=True)  # [n_edges, 1]
        h, x_new, v = self.layer(h, x, v, Edges(graph.edge_index, x_ij, d2_ij, None))
        out = {"h": graph.pool @ h, "dx": graph.pool @ (x_new - x)}
        if v is not None:
            out["v"] = graph.pool @ (v * self.mask)
        return out

    def forward(self, graph: GraphBatch) -> Tensor:
        p = self.pooled(graph)
        features = [p["h"], p["dx"]]
        if "v" in p:
            features.append(p["v"][:, self.read])
        return self.readout(torch.cat(features, dim=-1))  # [G, 2]
