"""Potential head: per-atom energies summed in float64; forces = -dE/dx by autograd."""

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from hegnn import keys
from hegnn.config import ModelConfig
from hegnn.model import HEGNN, optional
from hegnn.nn.mlp import MLP
from hegnn.nn.radial import BesselRadial

FLOAT64_BUFFERS = ("atomic_energies", "energy_scale", "energy_shift")


def graph_index(data, n_atoms: int, device: torch.device) -> tuple[Tensor, int]:
    """Graph of each atom ``[n_atoms]`` and the number of graphs."""
    batch = optional(data, keys.BATCH)
    if batch is None:
        return torch.zeros(n_atoms, dtype=torch.long, device=device), 1
    return batch, int(batch.max()) + 1 if n_atoms else 0


class PotentialModel(nn.Module):
    r"""Energy and conservative forces (paper/HEGNN.md §4, this project's extension).

    .. math::
        E = \sum_i \big[\sigma_E\, \mathrm{MLP}_E(h_i^K) + \mu_E + E_0(Z_i)\big],
        \qquad F_i = -\partial E / \partial x_i

    The backbone uses a Bessel basis times a polynomial envelope with cutoff r_max
    and sums over neighbours divided by their training average, with fixed
    positions: E is smooth. σ_E, μ_E and E0 (float64 buffers) come from the
    training split; set them with :meth:`set_statistics`. The sum runs in float64.
    ``forward`` returns ``energy [n_graphs]`` (eV, float64), ``forces [n_atoms, 3]``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        radial = BesselRadial(config.r_max, config.num_bessel, config.envelope_p)
        self.backbone = HEGNN(
            config, radial, aggregation="normalized_sum", update_positions=False
        )
        self.rule = self.backbone.rule
        self.energy_mlp = MLP(
            config.hidden_dim, config.hidden_dim, 1, config.activation
        )
        n_species = len(config.species)
        f64 = torch.float64
        self.register_buffer("atomic_energies", torch.zeros(n_species, dtype=f64))
        self.register_buffer("energy_scale", torch.ones((), dtype=f64))
        self.register_buffer("energy_shift", torch.zeros((), dtype=f64))

    def _apply(self, fn, recurse: bool = True):
        # .to(dtype) / .float() must not round the float64 energy statistics.
        kept = {name: self._buffers[name] for name in FLOAT64_BUFFERS}
        super()._apply(fn, recurse)
        for name, value in kept.items():
            self._buffers[name] = value.to(self._buffers[name].device, torch.float64)
        return self

    @torch.no_grad()
    def set_statistics(
        self,
        atomic_energies: Tensor,
        energy_scale: float,
        energy_shift: float,
        avg_num_neighbors: float,
    ) -> None:
        """Store E0 per species (eV), σ_E, μ_E (eV) and the mean neighbour count."""
        self.atomic_energies.copy_(
            torch.as_tensor(atomic_energies, dtype=torch.float64)
        )
        self.energy_scale.fill_(energy_scale)
        self.energy_shift.fill_(energy_shift)
        self.backbone.set_avg_num_neighbors(avg_num_neighbors)

    def forward(self, data, compute_forces: bool = True) -> dict[str, Tensor]:
        positions = data[keys.POSITIONS]
        if compute_forces and not positions.requires_grad:
            positions.requires_grad_(True)
        h, _, _ = self.backbone(data)
        index = self.rule.species_index(data[keys.NUMBERS])
        e_i = self.energy_mlp(h).squeeze(-1).to(torch.float64)
        e_0 = self.atomic_energies[..., index]
        e_i = self.energy_scale * e_i + self.energy_shift + e_0
        batch, n_graphs = graph_index(data, positions.shape[-2], positions.device)
        energy = scatter(e_i, batch, dim=-1, dim_size=n_graphs, reduce="sum")
        out = {keys.ENERGY: energy}
        if compute_forces:
            (grad,) = torch.autograd.grad(
                energy.sum(), positions, create_graph=self.training
            )
            out[keys.FORCES] = -grad
        return out
