"""Metrics of a model on graphs, and `hegnn eval CHECKPOINT --data ...`."""

from collections.abc import Iterable

import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from hegnn import keys
from hegnn_serve.training.metrics import MetricSums


def evaluate(
    model: nn.Module,
    graphs: Iterable[Data],
    batch_size: int = 100,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Mean errors over every graph (no batch dropped): position MSE, or E/F MAEs."""
    task = model.config.task
    sums = MetricSums()
    was_training = model.training
    model.eval()
    for batch in DataLoader(list(graphs), batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        if task == keys.TASK_DYNAMICS:
            with torch.no_grad():
                out = model(batch)
        else:
            out = model(batch)  # forces need autograd
        sums.add_batch(task, out, batch)
    model.train(was_training)
    return sums.result()


def per_sample_mse(
    model: nn.Module,
    graphs: Iterable[Data],
    batch_size: int = 100,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Position MSE of each graph (mean over its atoms and coordinates), ``[n]``,
    float64, in the graphs' order; their mean weighted by atom count is
    :func:`evaluate`'s ``mse``. Dynamics models only."""
    if model.config.task != keys.TASK_DYNAMICS:
        raise ValueError("per_sample_mse: needs a dynamics model")
    values = []
    was_training = model.training
    model.eval()
    for batch in DataLoader(list(graphs), batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        with torch.no_grad():
            out = model(batch)
        err = (out[keys.POSITIONS] - batch[keys.TARGET_POSITIONS]).double().pow(2)
        per_atom = err.mean(dim=1)
        index = batch[keys.BATCH]
        sums = torch.zeros(batch.num_graphs, dtype=torch.float64, device=err.device)
        sums.index_add_(0, index, per_atom)
        counts = torch.bincount(index, minlength=batch.num_graphs).to(sums.dtype)
        values.append((sums / counts).cpu())
    model.train(was_training)
    return torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)
