"""Node and edge attributes from raw inputs, one rule per task (ModelConfig.features).

Every attribute is invariant under E(3) and permutations, so the model stays
equivariant whatever the rule. Knows nothing of training or HTTP.
"""

import torch
from torch import Tensor

from hegnn import keys
from hegnn.config import ModelConfig

Z_SCALE = 10.0  # constant scale for Z (not the batch maximum: see HEGNN.md §3.5)


def attribute_dims(config: ModelConfig) -> tuple[int, int]:
    """(node attribute size, static edge attribute size) of a feature rule."""
    if config.features == "species":
        return len(config.species or ()), 0
    if config.features == "nbody":
        return 1, 2
    return 2, 4  # md17-traj


def species_index(numbers: Tensor, species: Tensor) -> Tensor:
    """Index of each atom's Z in ``species``; ValueError naming unknown Z."""
    match = numbers.unsqueeze(-1) == species  # [n_atoms, n_species]
    known = match.any(dim=-1)
    if not bool(known.all()):
        unknown = sorted(set(numbers[~known].tolist()))
        raise ValueError(
            f"numbers: species {unknown} not known to this model "
            f"(knows {species.tolist()})"
        )
    return match.long().argmax(dim=-1)


def node_and_edge_attributes(
    config: ModelConfig, data, x_ij: Tensor, species: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Node attributes ``[n, d_s]`` and static edge attributes ``[n_edges, d_e]``.

    - species: one-hot Z; no edge attributes.
    - nbody (EGNN protocol): node |v_i|; edge [q_i q_j, |x_ij|^2 at the input frame].
    - md17-traj (GMN protocol): node [|v_i|, Z_i/10]; edge [Z_i/10, Z_j/10,
      1 if two-hop else 0, |x_ij|^2 at the input frame].
    """
    j, i = data[keys.EDGE_INDEX]
    dtype = x_ij.dtype
    d2 = (x_ij * x_ij).sum(dim=-1, keepdim=True)
    if config.features == "species":
        index = species_index(data[keys.NUMBERS], species)
        node = torch.nn.functional.one_hot(index, len(species)).to(dtype)
        return node, x_ij.new_zeros((x_ij.shape[0], 0))
    speed = data[keys.VELOCITIES].norm(dim=-1, keepdim=True)
    if config.features == "nbody":
        q = data[keys.CHARGES].to(dtype)
        return speed, torch.cat([(q[i] * q[j]).unsqueeze(-1), d2], dim=-1)
    z = data[keys.NUMBERS].to(dtype) / Z_SCALE
    two_hop = (data[keys.EDGE_HOP] == 2).to(dtype).unsqueeze(-1)
    node = torch.cat([speed, z.unsqueeze(-1)], dim=-1)
    edge = torch.cat([z[i].unsqueeze(-1), z[j].unsqueeze(-1), two_hop, d2], dim=-1)
    return node, edge
