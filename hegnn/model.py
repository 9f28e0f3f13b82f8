"""The HEGNN backbone (``lmax=None`` is EGNN): embed -> steerable init -> K layers."""

import torch
from torch import Tensor, nn

from hegnn import keys
from hegnn.config import ModelConfig
from hegnn.nn.aggregation import AGGREGATIONS, NormalizedSum
from hegnn.nn.layer import Edges, HEGNNLayer
from hegnn.nn.mlp import MLP
from hegnn.nn.spherical import PerDegree, SphericalHarmonics
from hegnn.rules import input_rule


def optional(data, key: str) -> Tensor | None:
    """``data[key]`` if present (PyG Data/Batch or dict), else None."""
    return data[key] if key in data else None


def edge_vectors(
    x: Tensor, edge_index: Tensor, shifts: Tensor | None
) -> tuple[Tensor, Tensor]:
    """x_ij = x_i - x_j (+ periodic shift) ``[n_edges, 3]`` and d_ij ``[n_edges]``.

    ``x: [n, 3]``; a leading dimension (a committee's members) passes through.
    """
    j, i = edge_index
    x_ij = x[..., i, :] - x[..., j, :]
    if shifts is not None:
        x_ij = x_ij + shifts.to(x.dtype)
    return x_ij, x_ij.norm(dim=-1)


class HEGNN(nn.Module):
    r"""HEGNN backbone (Cen et al., NeurIPS 2024; paper/HEGNN.md §2 and §4).

    .. math::
        h_i = W s_i + b \quad (E1)

        w_{ij} = \phi_{init}([r^0_{ij}, h_i, h_j, e_{ij}]) \in R^{L+1} \quad (E2)

        v_i^{(l)} = \mathrm{agg}_j\, u_{ij} w_{ij,l}\, Y^{(l)}(\hat x_{ij}) \quad (E3)

    then K :class:`HEGNNLayer` (E4-E8). s_i and e_ij come from the config's input
    rule (hegnn/rules/). The head chooses the rest at construction: ``radial``
    (r^0 for E2, r and the cutoff weight u for the layers: BesselRadial or
    DistanceRadial of hegnn/nn/radial.py), ``aggregation`` (``"mean"`` or
    ``"normalized_sum"``), whether positions move (E7; then the geometry is
    recomputed after each layer) and whether velocities enter E7.

    ``forward(data)`` reads positions ``[n, 3]``, edge_index ``[2, n_edges]``,
    optional edge_shifts ``[n_edges, 3]`` and velocities ``[n, 3]``, and the inputs of
    the rule; returns ``h [n, H]``, ``x [n, 3]``, ``v [n, (L+1)^2] | None``.
    """

    def __init__(
        self,
        config: ModelConfig,
        radial: nn.Module,
        aggregation: str = "mean",
        update_positions: bool = True,
        use_velocity: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.rule = input_rule(config)
        self.radial = radial
        self.update_positions = update_positions
        H, L = config.hidden_dim, config.lmax
        n_radial, edge_dim = radial.num_features, self.rule.edge_dim
        self.embed = nn.Linear(self.rule.node_dim, H)  # E1
        if L is not None:
            self.aggregate = AGGREGATIONS[aggregation]()
            self.phi_init = MLP(
                n_radial + 2 * H + edge_dim, H, L + 1, config.activation, True
            )
            self.sh = SphericalHarmonics(L)
            self.per_degree = PerDegree(L)
        self.layers = nn.ModuleList(
            HEGNNLayer(
                H,
                edge_dim + n_radial,
                L,
                config.activation,
                aggregation=aggregation,
                update_positions=update_positions,
                use_velocity=use_velocity,
                inner_product_map=config.inner_product_map,
                phi_v=config.phi_v,
                coord_gain=config.coord_gain,
                coord_clamp=config.coord_clamp,
            )
            for _ in range(config.num_layers)
        )

    def set_avg_num_neighbors(self, value: float) -> None:
        """Set the normaliser of every normalised-sum aggregation."""
        for module in self.modules():
            if isinstance(module, NormalizedSum):
                module.avg_num_neighbors.fill_(value)

    def forward(self, data) -> tuple[Tensor, Tensor, Tensor | None]:
        x = data[keys.POSITIONS]
        edge_index = data[keys.EDGE_INDEX]
        shifts = optional(data, keys.EDGE_SHIFTS)
        vel = optional(data, keys.VELOCITIES)
        j, i = edge_index
        n = x.shape[-2]

        x_ij, d = edge_vectors(x, edge_index, shifts)  # [n_edges, 3], [n_edges]
        s, e_ij = self.rule.attributes(data, x_ij)
        h = self.embed(s)  # [n, H]   E1

        r, u = self.radial(d)
        v = None
        if self.config.lmax is not None:
            r0, u0 = (r, u)
            if not self.radial.initial_is_forward:  # E2 has its own features
                r0, u0 = self.radial.initial(d)
            w_ij = self.phi_init.forward_pairwise(h, i, j, r0, e_ij)  # E2
            if u0 is not None:
                w_ij = w_ij * u0.unsqueeze(-1)
            # d_ij > 0: graphs have no self loops and coincident atoms are rejected.
            y_ij = self.sh(x_ij / d.unsqueeze(-1))  # [n_edges, (L+1)^2]
            v = self.aggregate(self.per_degree(w_ij) * y_ij, i, n)  # E3

        # Fixed positions (potentials): one geometry serves every layer, so the
        # radial basis and its derivatives are built once, not K times.
        edges = Edges(edge_index, x_ij, torch.cat([e_ij, r], dim=-1), u)
        for k, layer in enumerate(self.layers):
            if k > 0 and self.update_positions:  # x moved: recompute geometry
                x_ij, d = edge_vectors(x, edge_index, shifts)
                r, u = self.radial(d)
                edges = Edges(edge_index, x_ij, torch.cat([e_ij, r], dim=-1), u)
            h, x, v = layer(h, x, v, edges, vel)
        return h, x, v
