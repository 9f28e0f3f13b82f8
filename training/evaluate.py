"""Metrics of a model on graphs, and `hegnn eval CHECKPOINT --data ...`."""

from collections.abc import Iterable

import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from hegnn import keys
from training.metrics import MetricSums


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
