r"""An e3nn tensor-product (Clebsch–Gordan) baseline: a TFN/NequIP-style network.

Timing reference only (random weights, never trained): what a user would pick
instead of HEGNN, built from ``e3nn.o3`` with HEGNN's L, width and depth.

Node features carry ``C`` channels of every degree l = 0..L with the parity of the
spherical harmonics (``C x 0e + C x 1o + C x 2e + ...``; C = HEGNN's H = 64 by
default). One convolution (NequIP's interaction block):

.. math::
    f_i \leftarrow f_i + \mathrm{Gate}\Big(W_2\, \frac{1}{\bar n}\sum_j
        R(r_{ij}) \big[(W_1 f_j) \otimes Y(\hat x_{ij})\big]\Big)

with ⊗ the "uvu" tensor product (every path l1 ⊗ l2 -> l3 ≤ L, one weight per path
and channel), its weights from a radial MLP R of the edge's invariants, W1/W2
``o3.Linear`` channel mixing, and the gate nonlinearity (SiLU on scalars, sigmoid
gates on l > 0). A potential reads one scalar per atom (energy, F = -dE/dx by
autograd, like :class:`hegnn.PotentialModel`); a dynamics model reads one 1o vector
per node and adds it to x (like :class:`hegnn.DynamicsModel`).
"""

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3
from torch import Tensor, nn
from torch_geometric.utils import scatter

from hegnn import ModelConfig, keys
from hegnn.nn.mlp import MLP
from hegnn.nn.radial import BesselBasis, PolynomialEnvelope
from hegnn.rules import input_rule


def hidden_irreps(lmax: int, channels: int) -> o3.Irreps:
    """``C x 0e + C x 1o + ... + C x Lp``: C channels per degree, parity (-1)^l."""
    return o3.Irreps([(channels, (k, (-1) ** k)) for k in range(lmax + 1)])


def uvu_instructions(
    irreps_in: o3.Irreps, irreps_sh: o3.Irreps, keep: o3.Irreps
) -> tuple[o3.Irreps, list[tuple]]:
    """Every path ``in ⊗ sh -> out`` with ``out`` in ``keep``: (mid irreps, paths)."""
    allowed = {ir for _, ir in keep}
    mid, instructions = [], []
    for i1, (mul, ir1) in enumerate(irreps_in):
        for i2, (_, ir2) in enumerate(irreps_sh):
            for ir_out in ir1 * ir2:
                if ir_out in allowed:
                    instructions.append((i1, i2, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    return o3.Irreps(mid), instructions


class TPConvolution(nn.Module):
    """One TFN/NequIP convolution with gate and residual (see the module docstring).

    Shapes: ``f: [n, dim(irreps_in)]``, ``y: [n_edges, (L+1)^2]``,
    ``radial: [n_edges, n_radial]``, ``edge_index: [2, n_edges]`` (rows j, i)
    -> ``[n, dim(irreps_out)]``.
    """

    def __init__(
        self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, lmax: int, n_radial: int
    ) -> None:
        super().__init__()
        irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.linear_1 = o3.Linear(irreps_in, irreps_in)
        irreps_mid, instructions = uvu_instructions(irreps_in, irreps_sh, irreps_out)
        self.tp = o3.TensorProduct(
            irreps_in,
            irreps_sh,
            irreps_mid,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        width = irreps_out.count("0e")
        self.radial = MLP(n_radial, width, self.tp.weight_numel, "silu")
        scalars = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l == 0])
        gated = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l > 0])
        self.gate = e3nn_nn.Gate(
            scalars,
            [torch.nn.functional.silu],
            o3.Irreps(f"{gated.num_irreps}x0e"),
            [torch.sigmoid],
            gated,
        )
        self.linear_2 = o3.Linear(irreps_mid, self.gate.irreps_in)
        self.self_connection = o3.Linear(irreps_in, irreps_out)

    def forward(
        self,
        f: Tensor,
        y: Tensor,
        radial: Tensor,
        edge_index: Tensor,
        avg_num_neighbors: float,
    ) -> Tensor:
        j, i = edge_index
        messages = self.tp(self.linear_1(f)[j], y, self.radial(radial))  # [E, mid]
        agg = scatter(messages, i, dim=0, dim_size=f.shape[0], reduce="sum")
        return self.self_connection(f) + self.gate(
            self.linear_2(agg / avg_num_neighbors)
        )


class TPNetwork(nn.Module):
    """Embedding, ``num_layers`` TP convolutions and an equivariant readout.

    ``irreps_input``: what the node inputs are (e.g. ``"1x0e"``, or ``"1x0e+1x1o"``
    with velocities); ``irreps_readout``: ``"1x0e"`` (energy) or ``"1x1o"`` (a shift).
    """

    def __init__(
        self,
        irreps_input: str,
        irreps_readout: str,
        lmax: int,
        channels: int,
        num_layers: int,
        n_radial: int,
    ) -> None:
        super().__init__()
        self.lmax = lmax
        hidden = hidden_irreps(lmax, channels)
        self.embed = o3.Linear(o3.Irreps(irreps_input), hidden)
        self.layers = nn.ModuleList(
            TPConvolution(hidden, hidden, lmax, n_radial) for _ in range(num_layers)
        )
        self.readout = o3.Linear(hidden, o3.Irreps(irreps_readout))
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)

    def forward(
        self,
        node_inputs: Tensor,
        x_ij: Tensor,
        radial: Tensor,
        edge_index: Tensor,
        avg_num_neighbors: float,
    ) -> Tensor:
        y = o3.spherical_harmonics(
            self.irreps_sh, x_ij, normalize=True, normalization="component"
        )  # [n_edges, (L+1)^2]
        f = self.embed(node_inputs)
        for layer in self.layers:
            f = layer(f, y, radial, edge_index, avg_num_neighbors)
        return self.readout(f)


class TPPotential(nn.Module):
    """E = sum of per-atom scalars; F = -dE/dx (create_graph while training).

    Inputs as for :class:`hegnn.PotentialModel`: positions, numbers, edge_index,
    optional edge_shifts and batch; one-hot species in, Bessel basis times the
    polynomial envelope of d_ij as the radial MLP's input.
    """

    def __init__(
        self,
        species: tuple[int, ...],
        lmax: int,
        channels: int = 64,
        num_layers: int = 4,
        r_max: float = 5.0,
        num_bessel: int = 8,
        avg_num_neighbors: float = 14.0,
    ) -> None:
        super().__init__()
        # The graph rule (radius graph, r_max) for make_graph_data and hegnn.testing.
        self.config = ModelConfig(
            task="potential", species=species, r_max=r_max, lmax=lmax
        )
        self.rule = input_rule(self.config)
        self.bessel = BesselBasis(r_max, num_bessel)
        self.envelope = PolynomialEnvelope(r_max)
        self.avg_num_neighbors = avg_num_neighbors
        self.net = TPNetwork(
            f"{len(species)}x0e", "1x0e", lmax, channels, num_layers, num_bessel
        )

    def forward(self, data, compute_forces: bool = True) -> dict[str, Tensor]:
        x = data[keys.POSITIONS]
        if compute_forces and not x.requires_grad:
            x.requires_grad_(True)
        j, i = data[keys.EDGE_INDEX]
        x_ij = x[i] - x[j]
        if keys.EDGE_SHIFTS in data:
            x_ij = x_ij + data[keys.EDGE_SHIFTS].to(x.dtype)
        d = x_ij.norm(dim=-1)
        radial = self.bessel(d) * self.envelope(d).unsqueeze(-1)
        one_hot, _ = self.rule.attributes(data, x_ij)  # one-hot Z
        e_i = self.net(
            one_hot, x_ij, radial, data[keys.EDGE_INDEX], self.avg_num_neighbors
        )
        batch = (
            data[keys.BATCH]
            if keys.BATCH in data
            else torch.zeros_like(e_i[:, 0], dtype=torch.long)
        )
        energy = scatter(
            e_i.squeeze(-1).double(), batch, dim=0, dim_size=int(batch.max()) + 1
        )
        out = {keys.ENERGY: energy}
        if compute_forces:
            (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=self.training)
            out[keys.FORCES] = -grad
        return out


class TPDynamics(nn.Module):
    """x(t + Δt) = x + readout_1o(f): the N-body task's inputs (``nbody`` features).

    Node inputs ``[|v_i|, v_i]`` (1x0e + 1x1o); radial MLP input ``[d_ij, q_i q_j]``
    (no cutoff: fully connected graphs).
    """

    def __init__(self, lmax: int, channels: int = 64, num_layers: int = 4) -> None:
        super().__init__()
        self.config = ModelConfig(task="dynamics", features="nbody", lmax=lmax)
        self.net = TPNetwork("1x0e + 1x1o", "1x1o", lmax, channels, num_layers, 2)

    def forward(self, data) -> dict[str, Tensor]:
        x, v = data[keys.POSITIONS], data[keys.VELOCITIES]
        q = data[keys.CHARGES]
        edge_index = data[keys.EDGE_INDEX]
        j, i = edge_index
        x_ij = x[i] - x[j]
        radial = torch.stack([x_ij.norm(dim=-1), q[i] * q[j]], dim=-1)
        node = torch.cat([v.norm(dim=-1, keepdim=True), v], dim=-1)
        n_avg = edge_index.shape[1] / max(x.shape[0], 1)
        return {keys.POSITIONS: x + self.net(node, x_ij, radial, edge_index, n_avg)}
