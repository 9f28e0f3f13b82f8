"""M potentials of one architecture as one model with a leading member dimension.

The committee's members differ only in their weights, so their forward passes are
the same sequence of operations: stacking every Linear's weights ``[M, out, in]``
runs the M members as one batched matmul per layer and one gather/scatter per
edge operation, instead of M of each. The geometry (edge vectors, radial basis,
spherical harmonics) is computed once per member from member copies of the
positions, so ``-dE_m/dx`` of every member comes out of one backward pass.
"""

import copy

import torch
from torch import Tensor, nn

from hegnn.nn.aggregation import NormalizedSum
from hegnn.potential import PotentialModel


class StackedLinear(nn.Module):
    r"""M Linear maps applied at once: y_m = x_m W_m^T + b_m.

    ``x: [M, rows, in]`` (one input per member) or ``[rows, in]`` (shared by all)
    -> ``[M, rows, out]``. ``weight: [M, out, in]``, ``bias: [M, 1, out]``
    (buffers: an inference copy, trained through its members).
    """

    def __init__(self, linears: list[nn.Linear]) -> None:
        super().__init__()
        weight = torch.stack([m.weight.detach() for m in linears])
        self.register_buffer("weight", weight)
        bias = None
        if linears[0].bias is not None:
            bias = torch.stack([m.bias.detach() for m in linears]).unsqueeze(1)
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        y = x @ self.weight.mT
        return y if self.bias is None else y + self.bias


def stack_potentials(members: list[PotentialModel]) -> PotentialModel:
    """One PotentialModel whose forward runs all ``members`` (same architecture).

    Its input positions are ``[M, n, 3]`` (one copy per member; the rest of the
    graph is shared); it returns ``energy [M, n_graphs]`` and ``forces [M, n, 3]``.
    Every Linear becomes a :class:`StackedLinear` and the per-member statistics
    (E0, σ_E, μ_E, neighbour normaliser) get a leading member dimension shaped to
    broadcast against ``[M, n]`` energies and ``[M, n, C]`` sums.
    """
    stacked = copy.deepcopy(members[0]).requires_grad_(False)
    for module in stacked.modules():  # compiled code belongs to the member
        module._compiled_call_impl = None
    modules = [dict(m.named_modules()) for m in members]
    for path, module in list(stacked.named_modules()):
        if isinstance(module, nn.Linear):
            stacked.set_submodule(path, StackedLinear([m[path] for m in modules]))
        elif isinstance(module, NormalizedSum):
            value = torch.stack([m[path].avg_num_neighbors for m in modules])
            module.avg_num_neighbors = value.view(-1, 1, 1)
    stacked.atomic_energies = torch.stack([m.atomic_energies for m in members])
    stacked.energy_scale = torch.stack([m.energy_scale for m in members]).view(-1, 1)
    stacked.energy_shift = torch.stack([m.energy_shift for m in members]).view(-1, 1)
    return stacked.eval()
