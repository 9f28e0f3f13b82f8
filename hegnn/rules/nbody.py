"""N-body rule (charged particles, EGNN protocol): fully connected graph."""

import torch
from torch import Tensor

from hegnn import keys
from hegnn.graph import full_graph
from hegnn.rules.base import InputRule

COINCIDENT = 1e-6  # simulation units: only coincident bodies are refused


class NBodyRule(InputRule):
    """Node s_i = |v_i|; edge e_ij = [q_i q_j, |x_ij|^2 at the input frame].

    Positions and velocities are in the simulation's units (model card); every
    ordered pair j != i is an edge.
    """

    name = "nbody"
    task = "dynamics"
    required = (keys.VELOCITIES, keys.CHARGES)
    refused = (keys.NUMBERS, keys.CELL, keys.PBC)
    uses = (keys.VELOCITIES, keys.CHARGES)
    node_dim = 1
    edge_dim = 2
    length_unit = "simulation length unit"

    def min_distance(self, default: float) -> float:
        return COINCIDENT

    def edges(self, positions, cell=None, pbc=None) -> dict[str, Tensor]:
        return {keys.EDGE_INDEX: full_graph(len(positions))}

    def count_edges(self, positions, cell=None, pbc=None) -> int:
        n = len(positions)
        return n * (n - 1)

    def attributes(self, data, x_ij: Tensor) -> tuple[Tensor, Tensor]:
        j, i = data[keys.EDGE_INDEX]
        speed = data[keys.VELOCITIES].norm(dim=-1, keepdim=True)
        q = data[keys.CHARGES].to(x_ij.dtype)
        d2 = (x_ij * x_ij).sum(dim=-1, keepdim=True)
        return speed, torch.cat([(q[i] * q[j]).unsqueeze(-1), d2], dim=-1)

    def describe(self) -> str:
        return "fully connected"
