"""`hegnn bench step`: what one training step costs, by model and batch size.

The full step of ``hegnn train`` (training/train.py ``Trainer.step``: forces with
``create_graph``, loss, backward, gradient clipping, the optimiser, the EMA) on
batches of the force-field config's training split, for EGNN and HEGNN (the
config's architecture, fresh weights), at several batch sizes, rounds interleaved.
It reports ms per step and per structure, the seconds one epoch of the split takes,
and HEGNN / EGNN at each batch size (paired ratios). A budgeted run's epochs are its
minutes divided by the epoch time: this is the cost side of accuracy per CPU-minute.
"""

from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch_geometric.loader import DataLoader

from hegnn import keys
from hegnn_serve.benchmarks.common import (
    ROOT,
    Run,
    interleaved,
    median,
    paired_ratio,
    synchronize,
)
from hegnn_serve.training.config import load_config
from hegnn_serve.training.study import BASELINE, model_lmax
from hegnn_serve.training.train import Trainer

STEPS_PER_SAMPLE = 4  # batches per timed call (different ones: data-dependent cost)


@dataclass(frozen=True)
class StepBenchConfig:
    config: Path = ROOT / "configs" / "md17-ff-aspirin.yaml"
    # "+key=value" after a model name sets a model field (a variant of the model)
    models: tuple[str, ...] = ("egnn", "hegnn-l3", "hegnn-l3+phi_v=linear")
    batch_sizes: tuple[int, ...] = (1, 2, 5, 10, 20)
    rounds: int = 20
    budget_s: float = 30.0  # per model and batch size

    @classmethod
    def quick(cls) -> "StepBenchConfig":
        return cls(
            config=ROOT / "configs" / "md17-force-tiny.yaml",
            models=("egnn", "hegnn-l1", "hegnn-l1+phi_v=linear"),
            batch_sizes=(1, 5),
            rounds=2,
            budget_s=1.0,
        )


def trainer(cfg: StepBenchConfig, model: str, device: torch.device) -> Trainer:
    """The config's Trainer for ``model``, data read from this checkout."""
    config = load_config(cfg.config)
    name, *variant = model.split("+")
    lmax = model_lmax(name)
    overrides = [
        *(f"model.{item}" for item in variant),
        f"model.lmax={'null' if lmax is None else lmax}",
        f"data.path={ROOT / config.data.path}",
        f"device={device.type}",
    ]
    return Trainer(load_config(cfg.config, overrides))


def step_calls(trainer: Trainer, batch_size: int, device: torch.device):
    """A call that runs ``STEPS_PER_SAMPLE`` steps on consecutive training batches."""
    loader = DataLoader(trainer.prepared.splits["train"], batch_size=batch_size)
    batches = [b.to(device) for b in islice(loader, STEPS_PER_SAMPLE)]
    trainer.ddp.train()

    def call() -> None:
        for batch in batches:
            trainer.step(batch)
        synchronize(device)

    edges = sum(int(b[keys.EDGE_INDEX].shape[1]) for b in batches) / len(batches)
    return call, edges


def run(cfg: StepBenchConfig, device: torch.device) -> dict[str, Any]:
    run_ = Run(
        "step",
        device,
        {
            "config": str(cfg.config.relative_to(ROOT)),
            "models": list(cfg.models),
            "batch_sizes": list(cfg.batch_sizes),
            "rounds": cfg.rounds,
            "steps_per_sample": STEPS_PER_SAMPLE,
            "step": "training/train.py Trainer.step: E+F with create_graph, loss, "
            "backward, grad clip, optimiser, EMA (the config's optim section)",
        },
    )
    trainers = {m: trainer(cfg, m, device) for m in cfg.models}
    n_train = len(next(iter(trainers.values())).prepared.splits["train"])
    models: dict[str, Any] = {
        m: {"params": sum(p.numel() for p in t.model.parameters()), "batches": {}}
        for m, t in trainers.items()
    }
    ratios: dict[str, dict[str, float]] = {}
    for bs in cfg.batch_sizes:
        calls, edges = {}, 0.0
        for m, t in trainers.items():
            calls[m], edges = step_calls(t, bs, device)
        samples = interleaved(calls, cfg.rounds, budget_s=cfg.budget_s)
        for m, seconds in samples.items():
            step_s = median(seconds) / STEPS_PER_SAMPLE
            models[m]["batches"][str(bs)] = {
                "step_ms": step_s * 1e3,
                "per_structure_ms": step_s / bs * 1e3,
                "epoch_s": step_s * -(-n_train // bs),
                "edges_per_step": edges,
                "samples": len(seconds),
            }
        if BASELINE in samples:
            ratios[str(bs)] = {
                m: paired_ratio(s, samples[BASELINE])
                for m, s in samples.items()
                if m != BASELINE
            }
    results = {"train_structures": n_train, "models": models, "ratio_to_egnn": ratios}
    return run_.finish(results, [])
