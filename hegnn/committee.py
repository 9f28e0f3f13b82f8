"""Committees: N potential members (one architecture, species and units) as one model.

The members differ only in their training seed. Their spread estimates where the
model is outside what it was trained on: members agree where data constrained them
and disagree elsewhere.
"""

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from hegnn import keys
from hegnn.potential import PotentialModel, graph_index
from hegnn.stacked import stack_potentials

# Above this many edges the members run one after another (see Committee).
STACK_MAX_EDGES = 1024


class Committee(nn.Module):
    r"""Mean and spread of N potential members :math:`E_m`, :math:`F_m = -\nabla E_m`.

    .. math::
        \bar E = \tfrac1N \sum_m E_m, \qquad
        \bar F_i = -\partial \bar E / \partial x_i = \tfrac1N \sum_m F_{m,i}

        \sigma_E = \sqrt{\tfrac1N \sum_m (E_m - \bar E)^2}, \qquad
        \sigma_{F,i} = \sqrt{\tfrac1N \sum_m \lVert F_{m,i} - \bar F_i \rVert^2},
        \qquad \max_i \sigma_{F,i}\ \text{per structure}

    The mean forces are conservative (the gradient of the mean energy). Small
    graphs run the members as one model with a leading member dimension
    (hegnn/stacked.py: one batched matmul per layer, one backward pass for all),
    rebuilt from ``members`` whenever one of their tensors changes; graphs of more
    than ``stack_max_edges`` edges run the members one after another. Stacking
    removes per-operation overhead, which dominates small graphs; on large ones
    the work is N× either way and the stacked tensors run slower than N separate
    passes (`hegnn bench committee`, one CPU thread, committee of 3 / one member,
    stacked vs in turn: ethanol 1 structure (72 edges) 1.65× vs 3.11×, 8 (576)
    2.66× vs 3.14×; aspirin 1 (310) 2.06× vs 3.05×, 4 (1242) 3.15× vs 2.96×, 32
    (9636) 3.8× vs 3.0×). ``torch.func.vmap`` over stacked weights was slower
    than the loop on CPU (4.2–4.4×).
    ``forward`` returns ``energy``, ``forces``, ``energy_std``, ``forces_std``
    (per atom), ``max_force_std`` (per graph) and the members' ``member_energies``
    ``[N, n_graphs]``.
    """

    def __init__(
        self, members: list[PotentialModel], stack_max_edges: int = STACK_MAX_EDGES
    ) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("a committee needs at least 2 members")
        configs = {m.config.model_dump_json() for m in members}
        if len(configs) != 1:
            raise ValueError("committee members differ in architecture or species")
        self.members = nn.ModuleList(members)
        self.config = members[0].config
        self.rule = members[0].rule
        self.stack_max_edges = stack_max_edges
        self._stacked: tuple[tuple, PotentialModel] | None = None

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("a committee is for inference; train its members")
        return super().train(mode)

    def stacked(self) -> PotentialModel:
        """The members as one stacked model, rebuilt when a member tensor changed;
        compiled when the members' backbones are (hegnn.compile_backbones)."""
        tensors = [*self.members.parameters(), *self.members.buffers()]
        compiled = self.members[0].backbone._compiled_call_impl is not None
        key = (compiled, *((t.data_ptr(), t._version, t.dtype) for t in tensors))
        if self._stacked is None or self._stacked[0] != key:
            stacked = stack_potentials(list(self.members))
            if compiled:
                stacked.backbone.compile(dynamic=True)
            self._stacked = (key, stacked)
        return self._stacked[1]

    @contextmanager
    def looped(self) -> Iterator[None]:
        """Within the block every graph runs the members in turn (warm-up, tests)."""
        limit, self.stack_max_edges = self.stack_max_edges, 0
        try:
            yield
        finally:
            self.stack_max_edges = limit

    def _member_outputs(self, data) -> tuple[Tensor, Tensor]:
        """Energies ``[N, n_graphs]`` and forces ``[N, n_atoms, 3]`` of the members."""
        positions = data[keys.POSITIONS].detach()
        if data[keys.EDGE_INDEX].shape[1] <= self.stack_max_edges:
            x = positions.expand(len(self.members), -1, -1)
            out = self.stacked()(_with_positions(data, x.clone().requires_grad_(True)))
            return out[keys.ENERGY].detach(), out[keys.FORCES].detach()
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
