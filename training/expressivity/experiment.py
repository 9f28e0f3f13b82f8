r"""The toy expressivity experiment (HEGNN.md §6 and §9, toy column).

Data: a structure G0 (label 0) and its copy rotated by a seeded uniform rotation
(label 1); the same pair is the train, validation and test set, so 50 % = blind.
Each seed's model is initialised from ``torch.manual_seed(seed)``; all seeds of one
(structure, model) cell train at once through ``torch.func.vmap`` over stacked
parameters; each seed has its own torch Adam and ReduceLROnPlateau acting on its slice,
so every seed follows the trajectory it would follow alone.

Differences from the official notebook, for speed: the pair is one full batch (one
step per epoch instead of two batch-1 steps), and the accuracy driving the schedule is
read from the next step's forward pass (same parameters, no dropout or norm layers, so
the same number as a separate evaluation); Adam is the fused kernel.
"""

import copy
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state

from hegnn_serve.training.expressivity.analytic import blind_degrees
from hegnn_serve.training.expressivity.prediction import agrees, sees_orientation
from hegnn_serve.training.expressivity.structures import Structure, random_rotation
from hegnn_serve.training.expressivity.toy_model import (
    GraphBatch,
    ToyHEGNN,
    ToySpec,
    batch_graphs,
    egnn,
    single_degree,
    up_to_degree,
)

logger = logging.getLogger(__name__)


def default_specs() -> list[ToySpec]:
    """EGNN, HEGNN_{l=L} for L = 1..7, HEGNN_{l<=L} for L = 1, 2, 3, 6."""
    return (
        [egnn()]
        + [single_degree(L) for L in range(1, 8)]
        + [up_to_degree(L) for L in (1, 2, 3, 6)]
    )


@dataclass(frozen=True)
class ToyConfig:
    """Training protocol of one cell (HEGNN.md §9, toy column, unless noted)."""

    hidden_dim: int = 128
    epochs: int = 100
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    plateau_factor: float = 0.9  # ReduceLROnPlateau(mode="max") on val accuracy
    plateau_patience: int = 25
    min_lr: float = 1e-5
    seeds: int = 5
    rotation_seed: int = 0  # the rotated copy is R(rotation_seed) G0


@dataclass
class CellResult:
    """Final accuracies (%) of every seed for one structure and model, and whether
    the degeneration argument predicts that the model sees the orientation."""

    structure: str
    model: str
    sees: bool
    accuracies: list[float] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return agrees(self.mean, self.sees)

    @property
    def mean(self) -> float:
        return float(torch.tensor(self.accuracies).mean())

    @property
    def std(self) -> float:
        return float(torch.tensor(self.accuracies).std(unbiased=False))


def rotated_pair(structure: Structure, rotation_seed: int) -> GraphBatch:
    """G0 with label 0 and R G0 with label 1, as one batch."""
    copy_ = structure.rotated(random_rotation(rotation_seed))
    return batch_graphs([structure, copy_], [0, 1])


class SeedOptimisers:
    """``torch.optim.Adam`` (fused) and ``ReduceLROnPlateau`` for every seed.

    Each seed's optimiser holds detached views of its slice of the stacked
    parameters ``[S, ...]`` and updates them in place, so every seed follows exactly
    the trajectory it would follow alone, with its own learning-rate schedule.
    """

    def __init__(self, stacked: list[Tensor], config: ToyConfig) -> None:
        self.stacked = stacked
        self.slices = [[p.detach()[k] for p in stacked] for k in range(config.seeds)]
        self.optimisers = [
            torch.optim.Adam(
                views, lr=config.lr, betas=config.betas, eps=config.eps, fused=True
            )
            for views in self.slices
        ]
        self.schedules = [
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimiser,
                mode="max",
                factor=config.plateau_factor,
                patience=config.plateau_patience,
                min_lr=config.min_lr,
            )
            for optimiser in self.optimisers
        ]

    def step(self) -> None:
        """One Adam step per seed from the stacked gradients; clears them."""
        for k, (views, optimiser) in enumerate(
            zip(self.slices, self.optimisers, strict=True)
        ):
            for view, p in zip(views, self.stacked, strict=True):
                view.grad = p.grad[k]
            optimiser.step()
        for p in self.stacked:
            p.grad = None

    def schedule(self, metric: Tensor) -> None:
        """Plateau step of every seed on its validation accuracy ``[S]``."""
        for schedule, value in zip(self.schedules, metric.tolist(), strict=True):
            schedule.step(value)


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Percentage of graphs classified right, per seed: ``[S, G, 2] -> [S]``."""
    return (logits.argmax(-1) == labels).to(torch.float64).mean(-1) * 100.0


def train_cell(spec: ToySpec, graph: GraphBatch, config: ToyConfig) -> Tensor:
    """Train ``config.seeds`` fresh models on the pair; final logits ``[S, G, 2]``.

    Model k is initialised after ``torch.manual_seed(k)``; one full-batch step per
    epoch.
    """
    models = []
    for seed in range(config.seeds):
        torch.manual_seed(seed)
        models.append(ToyHEGNN(spec, config.hidden_dim).to(torch.float64))
    params, _ = stack_module_state(models)
    buffers = dict(models[0].named_buffers())
    base = copy.deepcopy(models[0]).to("meta")

    def logits_of(p: dict[str, Tensor]) -> Tensor:
        return functional_call(base, (p, buffers), (graph,))  # [G, 2]

    batched = torch.vmap(logits_of)
    optimisers = SeedOptimisers(list(params.values()), config)
    labels = graph.labels
    for epoch in range(config.epochs):
        logits = batched(params)  # [S, G, 2]
        if epoch > 0:  # the parameters after epoch - 1: its validation accuracy
            optimisers.schedule(accuracy(logits.detach(), labels))
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, 2), labels.repeat(config.seeds), reduction="none"
        )
        loss.view(config.seeds, -1).mean(-1).sum().backward()
        optimisers.step()
    with torch.no_grad():
        return batched(params)


def run_experiment(
    structures: dict[str, Structure],
    specs: list[ToySpec],
    config: ToyConfig,
) -> list[CellResult]:
    """Every (structure, model) cell: final accuracies of every seed."""
    lmax = max(max(spec.readout_degrees, default=1) for spec in specs)
    results = []
    for name, structure in structures.items():
        graph = rotated_pair(structure, config.rotation_seed)
        blind = blind_degrees(structure, lmax)
        for spec in specs:
            start = time.perf_counter()
            acc = accuracy(train_cell(spec, graph, config), graph.labels)
            sees = sees_orientation(spec, blind)
            cell = CellResult(name, spec.name, sees, acc.tolist())
            results.append(cell)
            logger.info(
                "%s %s: %.1f ± %.1f %% (predicted %s; %s) %.1f s",
                name,
                spec.name,
                cell.mean,
                cell.std,
                "sees" if sees else "blind",
                "agrees" if cell.agrees else "DISAGREES",
                time.perf_counter() - start,
            )
    return results
