"""The HEGNN backbone (``lmax=None`` is EGNN): embed -> steerable init -> K layers."""

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from hegnn import keys
from hegnn.config import ModelConfig
from hegnn.features import attribute_dims, node_and_edge_attributes
from hegnn.nn.layer import HEGNNLayer
from hegnn.nn.mlp import MLP
from hegnn.nn.radial import BesselBasis, PolynomialEnvelope
from hegnn.nn.spherical import SphericalHarmonics, degree_index


def optional(data, key: str) -> Tensor | None:
    """``data[key]`` if present (PyG Data/Batch or dict), else None."""
    return data[key] if key in data else None


def edge_vectors(
    x: Tensor, edge_index: Tensor, shifts: Tensor | None
) -> tuple[Tensor, Tensor]:
    """x_ij = x_i - x_j (+ periodic shift) ``[n_edges, 3]`` and d_ij ``[n_edges]``."""
    j, i = edge_index
    x_ij = x[i] - x[j]
    if shifts is not None:
        x_ij = x_ij + shifts.to(x.dtype)
    return x_ij, x_ij.norm(dim=-1)


class HEGNN(nn.Module):
    r"""HEGNN backbone (Cen et al., NeurIPS 2024; paper/HEGNN.md §2 and §4).

    .. math::
        h_i = W s_i + b \quad (E1)

        w_{ij} = \phi_{init}([r^0_{ij}, h_i, h_j, e_{ij}]) \in R^{L+1} \quad (E2)

        v_i^{(l)} = \mathrm{agg}_j\, u_{ij} w_{ij,l}\, Y^{(l)}(\hat x_{ij}) \quad (E3)

    then K :class:`HEGNNLayer` (E4-E8). Radial inputs r: dynamics models use d_ij in
    E2 and d_ij^2 (recomputed from the current x) in E5, and the mean over neighbours;
    potential models use a Bessel basis times the envelope u(d_ij) everywhere, weight
    every aggregated term by u, and divide neighbour sums by their training-set
    average count (buffer ``avg_num_neighbors``), so E is smooth across the cutoff.

    ``forward(data)`` reads positions ``[n, 3]``, edge_index ``[2, n_edges]``,
    optional edge_shifts ``[n_edges, 3]`` and velocities ``[n, 3]``, and the inputs of
    the feature rule; returns ``h [n, H]``, ``x [n, 3]``, ``v [n, (L+1)^2] | None``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        H, L = config.hidden_dim, config.lmax
        node_dim, edge_dim = attribute_dims(config)
        self.is_potential = config.task == keys.TASK_POTENTIAL
        if self.is_potential:
            self.bessel = BesselBasis(config.r_max, config.num_bessel)
            self.envelope = PolynomialEnvelope(config.r_max, config.envelope_p)
            n_radial = config.num_bessel
            self.register_buffer("species", torch.tensor(config.species))
            self.register_buffer("avg_num_neighbors", torch.tensor(1.0))
        else:
            n_radial = 1
        self.embed = nn.Linear(node_dim, H)  # E1
        if L is not None:
            self.phi_init = MLP(
                n_radial + 2 * H + edge_dim, H, L + 1, config.activation, True
            )
            self.sh = SphericalHarmonics(L)
            self.register_buffer("degree", degree_index(L), persistent=False)
        self.layers = nn.ModuleList(
            HEGNNLayer(
                H,
                edge_dim + n_radial,
                L,
                config.activation,
                update_positions=not self.is_potential,
                use_velocity=not self.is_potential,
                bounded_inner_products=config.inner_product_map == "bounded",
                coord_gain=config.coord_gain,
                coord_clamp=config.coord_clamp,
            )
            for _ in range(config.num_layers)
        )

    def aggregate(self, src: Tensor, index: Tensor, n_nodes: int) -> Tensor:
        """Mean over neighbours (dynamics) or sum / avg_num_neighbors (potential)."""
        if self.is_potential:
            out = scatter(src, index, dim=0, dim_size=n_nodes, reduce="sum")
            return out / self.avg_num_neighbors.to(src.dtype)
        return scatter(src, index, dim=0, dim_size=n_nodes, reduce="mean")

    def radial(self, d: Tensor, in_layer: bool) -> tuple[Tensor, Tensor | None]:
        """Radial edge features ``[n_edges, n_radial]`` and envelope ``[n_edges]``."""
        if self.is_potential:
            u = self.envelope(d)
            return self.bessel(d) * u.unsqueeze(-1), u
        return (d * d if in_layer else d).unsqueeze(-1), None

    def forward(self, data) -> tuple[Tensor, Tensor, Tensor | None]:
        x = data[keys.POSITIONS]
        edge_index = data[keys.EDGE_INDEX]
        shifts = optional(data, keys.EDGE_SHIFTS)
        vel = optional(data, keys.VELOCITIES)
        j, i = edge_index
        n = x.shape[0]
        species = self.species if self.is_potential else None

        x_ij, d = edge_vectors(x, edge_index, shifts)  # [n_edges, 3], [n_edges]
        s, e_ij = node_and_edge_attributes(self.config, data, x_ij, species)
        h = self.embed(s)  # [n, H]   E1

        v = None
        if self.config.lmax is not None:
            r0, u = self.radial(d, in_layer=False)
            w_ij = self.phi_init.forward_pairwise(h, i, j, r0, e_ij)  # E2
            if u is not None:
                w_ij = w_ij * u.unsqueeze(-1)
            # d_ij > 0: graphs have no self loops and coincident atoms are rejected.
            y_ij = self.sh(x_ij / d.unsqueeze(-1))  # [n_edges, (L+1)^2]
            v = self.aggregate(w_ij[:, self.degree] * y_ij, i, n)  # E3

        for k, layer in enumerate(self.layers):
            if k > 0 and not self.is_potential:  # x moved: recompute geometry
                x_ij, d = edge_vectors(x, edge_index, shifts)
            r, u = self.radial(d, in_layer=True)
            edge_features = torch.cat([e_ij, r], dim=-1)
            h, x, v = layer(
                h, x, v, x_ij, edge_index, edge_features, self.aggregate, u, vel
            )
        return h, x, v
