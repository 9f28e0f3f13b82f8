"""Neighbour aggregation agg_j over incoming edges, chosen by the head.

``forward(src [..., n_edges, C], index i [n_edges], n_nodes) -> [..., n_nodes, C]``
(edges on dim -2: a leading dimension, a committee's members, passes through).
"""

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter


class MeanAggregation(nn.Module):
    """agg_j = mean over the neighbours j of i (EGNN and the paper's tasks)."""

    def forward(self, src: Tensor, index: Tensor, n_nodes: int) -> Tensor:
        return scatter(src, index, dim=-2, dim_size=n_nodes, reduce="mean")


class NormalizedSum(nn.Module):
    """agg_j = sum over neighbours / their average count in the training set.

    Unlike the mean it is continuous when a neighbour crosses the cutoff (its
    term fades with the envelope), so potential energies stay smooth. The buffer
    ``avg_num_neighbors`` is set from training data (PotentialModel.set_statistics).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("avg_num_neighbors", torch.tensor(1.0))

    def forward(self, src: Tensor, index: Tensor, n_nodes: int) -> Tensor:
        out = scatter(src, index, dim=-2, dim_size=n_nodes, reduce="sum")
        return out / self.avg_num_neighbors.to(src.dtype)


AGGREGATIONS: dict[str, type[nn.Module]] = {
    "mean": MeanAggregation,
    "normalized_sum": NormalizedSum,
}
