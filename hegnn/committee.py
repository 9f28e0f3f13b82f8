"""Committees: N potential members (one architecture, species and units) as one model.

The members differ only in their training seed. Their spread estimates where the
model is outside what it was trained on: members agree where data constrained them
and disagree elsewhere.
"""

import copy

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from hegnn import keys
from hegnn.potential import PotentialModel, graph_index


class Committee(nn.Module):
    r"""Mean and spread of N potential members :math:`E_m`, :math:`F_m = -\nabla E_m`.

    .. math::
        \bar E = \tfrac1N \sum_m E_m, \qquad
        \bar F_i = -\partial \bar E / \partial x_i = \tfrac1N \sum_m F_{m,i}

        \sigma_E = \sqrt{\tfrac1N \sum_m (E_m - \bar E)^2}, \qquad
        \sigma_{F,i} = \sqrt{\tfrac1N \sum_m \lVert F_{m,i} - \bar F_i \rVert^2},
        \qquad \max_i \sigma_{F,i}\ \text{per structure}

    The mean forces are conservative (the gradient of the mean energy). Members run
    one after another on the same graph: ``torch.func.vmap`` over their stacked
    weights gave the same numbers but was slower on CPU (aspirin, batches of 1–32:
    4.2–4.4× one member against 2.5–3.6× for this loop).
    ``forward`` returns ``energy``, ``forces``, ``energy_std``, ``forces_std``
    (per atom), ``max_force_std`` (per graph) and the members' ``member_energies``
    ``[N, n_graphs]``.
    """

    def __init__(self, members: list[PotentialModel]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("a committee needs at least 2 members")
        configs = {m.config.model_dump_json() for m in members}
        if len(configs) != 1:
            raise ValueError("committee members differ in architecture or species")
        self.members = nn.ModuleList(members)
        self.config = members[0].config
        self.rule = members[0].rule

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("a committee is for inference; train its members")
        return super().train(mode)

    def _member_outputs(self, data) -> tuple[Tensor, Tensor]:
        """Energies ``[N, n_graphs]`` and forces ``[N, n_atoms, 3]`` of the members."""
        positions = data[keys.POSITIONS].detach()
        energies, forces = [], []
        for member in self.members:
            x = positions.clone().requires_grad_(True)
            out = member(_with_positions(data, x))
            energies.append(out[keys.ENERGY].detach())
            forces.append(out[keys.FORCES].detach())
        return torch.stack(energies), torch.stack(forces)

    def forward(self, data, compute_forces: bool = True) -> dict[str, Tensor]:
        energies, forces = self._member_outputs(data)
        mean_forces = forces.mean(0)
        forces_std = (forces - mean_forces).pow(2).sum(-1).mean(0).sqrt()
        positions = data[keys.POSITIONS]
        batch, n_graphs = graph_index(data, len(positions), positions.device)
        max_force_std = scatter(
            forces_std, batch, dim=0, dim_size=n_graphs, reduce="max"
        )
        out = {
            keys.ENERGY: energies.mean(0),
            keys.ENERGY_STD: energies.std(0, unbiased=False),
            keys.FORCES_STD: forces_std,
            keys.MAX_FORCE_STD: max_force_std,
            "member_energies": energies,
        }
        if compute_forces:
            out[keys.FORCES] = mean_forces
        return out


def _with_positions(data, positions: Tensor):
    """A shallow copy of the graph ``data`` with other positions (same edges)."""
    copied = copy.copy(data)
    copied[keys.POSITIONS] = positions
    return copied
