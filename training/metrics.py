"""Losses and test metrics for both heads. Units: Å², eV -> meV, eV/Å -> meV/Å."""

import torch
from torch import Tensor
from torch_geometric.data import Batch

from hegnn import keys


def dynamics_loss(out: dict[str, Tensor], batch: Batch) -> Tensor:
    """MSE of predicted positions (mean over atoms and coordinates)."""
    return (out[keys.POSITIONS] - batch[keys.TARGET_POSITIONS]).pow(2).mean()


def potential_loss(
    out: dict[str, Tensor], batch: Batch, energy_weight: float, force_weight: float
) -> Tensor:
    """w_E · MSE(E per atom) + w_F · MSE(F components)."""
    n_atoms = torch.bincount(batch[keys.BATCH], minlength=len(out[keys.ENERGY]))
    e_err = (out[keys.ENERGY] - batch[keys.ENERGY]) / n_atoms
    f_err = out[keys.FORCES] - batch[keys.FORCES]
    return energy_weight * e_err.pow(2).mean().to(f_err.dtype) + force_weight * (
        f_err.pow(2).mean()
    )


class MetricSums:
    """Accumulates error sums over batches; ``result()`` gives the means."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, values: Tensor) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())
        self.counts[name] = self.counts.get(name, 0) + values.numel()

    def add_batch(self, task: str, out: dict[str, Tensor], batch: Batch) -> None:
        if task == keys.TASK_DYNAMICS:
            err = out[keys.POSITIONS] - batch[keys.TARGET_POSITIONS]
            self.add("mse", err.detach().pow(2))
            return
        n_atoms = torch.bincount(batch[keys.BATCH], minlength=len(out[keys.ENERGY]))
        e_err = (out[keys.ENERGY] - batch[keys.ENERGY]).detach().abs() * 1000
        f_err = (out[keys.FORCES] - batch[keys.FORCES]).detach() * 1000
        self.add("energy_mae_mev", e_err)
        self.add("energy_per_atom_mae_mev", e_err / n_atoms)
        self.add("force_mae_mev_per_a", f_err.abs())
        self.add("force_mse", f_err.pow(2))

    def result(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        if "force_mse" in out:
            out["force_rmse_mev_per_a"] = out.pop("force_mse") ** 0.5
        if self.counts:
            out["n_values"] = max(self.counts.values())
        return out


def primary_metric(task: str) -> str:
    """The validation metric used for early stopping and best-model selection."""
    return "mse" if task == keys.TASK_DYNAMICS else "force_mae_mev_per_a"
