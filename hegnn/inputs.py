"""Raw arrays -> one graph (PyG ``Data``) in the layout a model's config expects."""

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch_geometric.data import Data

from hegnn import keys
from hegnn.config import ModelConfig
from hegnn.graph import bond_2hop_graph, full_graph, radius_graph

BOND_CUTOFF = 1.6  # Å, bond rule of the MD17 trajectory protocol (GMN)


def make_graph_data(
    config: ModelConfig,
    positions: ArrayLike,
    numbers: ArrayLike | None = None,
    velocities: ArrayLike | None = None,
    charges: ArrayLike | None = None,
    cell: ArrayLike | None = None,
    pbc: ArrayLike | bool | None = None,
    dtype: torch.dtype | None = None,
    bond_cutoff: float = BOND_CUTOFF,
) -> Data:
    """One structure as a graph with the config's rule for edges.

    Edges: radius graph with r_max (species rule, PBC when ``pbc``), fully
    connected (nbody) or bonds + 2-hop pairs of these positions (md17-traj).
    """
    dtype = dtype or torch.get_default_dtype()
    x = np.asarray(positions, dtype=np.float64)
    data = Data(num_nodes=len(x))
    data[keys.POSITIONS] = torch.as_tensor(x, dtype=dtype)
    if config.features == "species":
        edge_index, shifts = radius_graph(x, config.r_max, cell, pbc)
        data[keys.EDGE_SHIFTS] = shifts.to(dtype)
    elif config.features == "nbody":
        edge_index = full_graph(len(x))
    else:
        edge_index, hop = bond_2hop_graph(x, bond_cutoff)
        data[keys.EDGE_HOP] = hop
    data[keys.EDGE_INDEX] = edge_index
    if numbers is not None:
        data[keys.NUMBERS] = torch.as_tensor(np.asarray(numbers), dtype=torch.long)
    if velocities is not None:
        data[keys.VELOCITIES] = torch.as_tensor(np.asarray(velocities), dtype=dtype)
    if charges is not None:
        data[keys.CHARGES] = torch.as_tensor(np.asarray(charges), dtype=dtype)
    return data
