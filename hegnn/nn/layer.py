"""One HEGNN layer: messages from inner products, then v, x and h updates."""

from typing import NamedTuple

import torch
from torch import Tensor, nn

from hegnn.nn.aggregation import AGGREGATIONS
from hegnn.nn.mlp import MLP
from hegnn.nn.spherical import InnerProducts, PerDegree


class Edges(NamedTuple):
    """The edge state a layer reads (all from the layer-input positions)."""

    index: Tensor  # [2, n_edges] rows j, i
    vectors: Tensor  # [n_edges, 3] x_ij = x_i - x_j (+ periodic shift)
    features: Tensor  # [n_edges, d_e + d_r] static attributes e_ij and radial r_ij
    weight: Tensor | None  # [n_edges] cutoff envelope u_ij, None = 1


class HEGNNLayer(nn.Module):
    r"""One HEGNN layer (Cen et al., NeurIPS 2024, Eqs. 4-8 of paper/HEGNN.md §2).

    .. math::
        z_{ij}^{(l)} = \langle v_i^{(l)}, v_j^{(l)} \rangle \quad (E4)

        m_{ij} = \phi_m([h_i, h_j, e_{ij}, r_{ij}, \zeta(z_{ij}^{(0..L)})]) \quad (E5)

        v_i^{(l)} \mathrel{+}= \mathrm{agg}_j\, u_{ij}\, g_{ij,l}\,
            (v_i^{(l)} - v_j^{(l)}),\quad g_{ij} = \phi_v(m_{ij}) \quad (E6)

        x_i \mathrel{+}= \mathrm{agg}_j\, x_{ij}\, \phi_x(m_{ij})
            + \phi_{vel}(h_i)\, vel_i \quad (E7)

        h_i = \phi_h([h_i, \mathrm{agg}_j\, u_{ij} m_{ij}]) \quad (E8)

    r_ij are the radial edge features (d_ij^2, or a Bessel basis times the envelope),
    e_ij the static edge attributes, ζ the inner-product map, u_ij the cutoff envelope
    (1 without cutoff), agg the layer's aggregation (``"mean"`` or
    ``"normalized_sum"``, hegnn/nn/aggregation.py). ``lmax=None`` drops z and (E6):
    the EGNN layer. Without ``update_positions`` (E7) is skipped.

    Shapes: ``h: [n, H]``, ``x: [n, 3]``, ``v: [n, (L+1)^2]``, ``vel: [n, 3]``;
    edges as in :class:`Edges`.
    """

    def __init__(
        self,
        hidden_dim: int,
        edge_dim: int,
        lmax: int | None,
        activation: str = "silu",
        aggregation: str = "mean",
        update_positions: bool = True,
        use_velocity: bool = False,
        inner_product_map: str = "bounded",
        phi_v: str = "mlp",
        coord_gain: float = 1.0,
        coord_clamp: float | None = None,
    ) -> None:
        super().__init__()
        H = hidden_dim
        self.lmax = lmax
        self.coord_clamp = coord_clamp
        self.aggregate = AGGREGATIONS[aggregation]()
        n_z = 0 if lmax is None else lmax + 1
        self.phi_m = MLP(
            2 * H + edge_dim + n_z, H, H, activation, final_activation=True
        )
        self.phi_h = MLP(2 * H, H, H, activation)
        self.phi_v: nn.Module | None = None
        if lmax is not None:
            self.inner_products = InnerProducts(lmax, inner_product_map)
            self.phi_v = (
                MLP(H, H, lmax + 1, activation)
                if phi_v == "mlp"
                else nn.Linear(H, lmax + 1)
            )
            self.per_degree = PerDegree(lmax)
        self.phi_x = (
            MLP(H, H, 1, activation, out_gain=coord_gain, out_bias=coord_gain == 1.0)
            if update_positions
            else None
        )
        self.phi_vel = MLP(H, H, 1, activation) if use_velocity else None

    def forward(
        self,
        h: Tensor,
        x: Tensor,
        v: Tensor | None,
        edges: Edges,
        vel: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        j, i = edges.index
        n = h.shape[-2]
        edge_inputs = edges.features
        if v is not None:
            v_i, v_j = v[..., i, :], v[..., j, :]  # gathered once: E4 and E6 share them
            z_ij = self.inner_products(v_i, v_j)  # [n_edges, L+1]   E4
            edge_inputs = torch.cat([edge_inputs, z_ij], dim=-1)
        no_inputs = edge_inputs[..., :0]
        m_ij = self.phi_m.forward_pairwise(h, i, j, no_inputs, edge_inputs)  # E5
        u = 1.0 if edges.weight is None else edges.weight.unsqueeze(-1)

        v_new = v
        if v is not None:
            g_ij = self.per_degree(self.phi_v(m_ij))  # [n_edges, (L+1)^2]
            v_new = v + self.aggregate(u * g_ij * (v_i - v_j), i, n)  # E6

        x_new = x
        if self.phi_x is not None:
            dx_ij = edges.vectors * self.phi_x(m_ij)  # [n_edges, 3]
            if self.coord_clamp is not None:  # clamp the length: stays equivariant
                length = dx_ij.norm(dim=-1, keepdim=True)
                dx_ij = dx_ij * (self.coord_clamp / length.clamp(min=self.coord_clamp))
            x_new = x + self.aggregate(u * dx_ij, i, n)  # E7
            if self.phi_vel is not None and vel is not None:
                x_new = x_new + self.phi_vel(h) * vel

        h_new = self.phi_h(torch.cat([h, self.aggregate(u * m_ij, i, n)], dim=-1))  # E8
        return h_new, x_new, v_new
