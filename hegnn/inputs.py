"""Raw arrays -> one graph (PyG ``Data``), built by the config's input rule.

The one path from a structure to a graph: training datasets, the ASE calculator
and the service all call :func:`make_graph_data`.
"""

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch_geometric.data import Data

from hegnn import keys
from hegnn.config import ModelConfig
from hegnn.rules import input_rule


def make_graph_data(
    config: ModelConfig,
    positions: ArrayLike,
    numbers: ArrayLike | None = None,
    velocities: ArrayLike | None = None,
    charges: ArrayLike | None = None,
    cell: ArrayLike | None = None,
    pbc: ArrayLike | bool | None = None,
    dtype: torch.dtype | None = None,
    graph_positions: ArrayLike | None = None,
) -> Data:
    """One structure as a graph with the rule's edges and the inputs it uses.

    ``graph_positions`` (default: ``positions``) are the positions the edges are
    built from: the MD17 trajectory protocol builds one graph from frame 0.
    Inputs the rule does not use (e.g. velocities of a force field) are not stored.
    """
    rule = input_rule(config)
    dtype = dtype or torch.get_default_dtype()
    x = np.asarray(positions, dtype=np.float64)
    source = x if graph_positions is None else np.asarray(graph_positions, np.float64)
    data = Data(num_nodes=len(x))
    data[keys.POSITIONS] = torch.as_tensor(x, dtype=dtype)
    for name, value in rule.edges(source, cell, pbc).items():
        data[name] = value.to(dtype) if value.is_floating_point() else value
    given = {keys.NUMBERS: numbers, keys.VELOCITIES: velocities, keys.CHARGES: charges}
    for name in rule.uses:
        value = given[name]
        if value is None:
            continue
        if name == keys.NUMBERS:
            data[name] = torch.as_tensor(np.asarray(value), dtype=torch.long)
        else:
            data[name] = torch.as_tensor(np.asarray(value), dtype=dtype)
    return data
