"""`hegnn bench committee`: what a committee of N costs against one of its members.

Energy and forces of batches of held-out ethanol frames (1, 8 and 32 structures),
timed for one member alone and for the whole committee (members one after the
other on the same graph, as served), rounds interleaved; the ratio is the median
of round-by-round ratios. Target (issue 18): a committee of 3 at most 2× one member.
"""

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ase.io import read
from torch_geometric.data import Batch

from hegnn import Committee, keys, load, make_graph_data
from hegnn_serve.benchmarks.common import (
    ROOT,
    Run,
    Target,
    interleaved,
    median,
    paired_ratio,
    synchronize,
)

COMMITTEE = ROOT / "checkpoints/md17-ethanol-ff-hegnn-committee"
FRAMES = ROOT / "data/md17/rmd17_ethanol_random100.xyz"
TARGET_RATIO = 2.0


@dataclass(frozen=True)
class CommitteeBenchConfig:
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    rounds: int = 20
    checkpoint: Path = COMMITTEE

    @classmethod
    def quick(cls) -> "CommitteeBenchConfig":
        return cls(batch_sizes=(1, 2), rounds=2)


def frames_batch(model: Committee, n: int, device: torch.device) -> Batch:
    """The first ``n`` held-out frames as one batch in the model's dtype, centred."""
    dtype = next(model.parameters()).dtype
    graphs = []
    for atoms in read(FRAMES, index=f":{n}"):
        centred = atoms.positions - atoms.positions.mean(0)
        graphs.append(
            make_graph_data(model.config, centred, numbers=atoms.numbers, dtype=dtype)
        )
    return Batch.from_data_list(graphs).to(device)


def run(cfg: CommitteeBenchConfig, device: torch.device) -> dict[str, Any]:
    model, _ = load(cfg.checkpoint, device=device)
    if not isinstance(model, Committee):
        raise ValueError(f"{cfg.checkpoint}: not a committee checkpoint")
    run_ = Run(
        "committee",
        device,
        {
            "checkpoint": cfg.checkpoint.name,
            "members": len(model.members),
            "batch_sizes": list(cfg.batch_sizes),
            "rounds": cfg.rounds,
            "molecule": "ethanol (9 atoms), rMD17 held-out frames",
        },
    )
    member = model.members[0]

    def timed(fn):
        def call() -> None:
            fn()
            synchronize(device)

        return call

    def member_call(data: Batch) -> None:
        graph = copy.copy(data)  # fresh leaf positions, as the committee gives each
        graph[keys.POSITIONS] = data[keys.POSITIONS].detach().clone()
        member(graph)

    results: dict[str, Any] = {}
    for n in cfg.batch_sizes:
        data = frames_batch(model, n, device)
        samples = interleaved(
            {
                "member": timed(lambda d=data: member_call(d)),
                "committee": timed(lambda d=data: model(d)),
            },
            cfg.rounds,
        )
        results[str(n)] = {
            "member_ms": median(samples["member"]) * 1e3,
            "committee_ms": median(samples["committee"]) * 1e3,
            "ratio": paired_ratio(samples["committee"], samples["member"]),
        }
    worst = max(r["ratio"] for r in results.values())
    targets = [
        Target(
            f"committee of {len(model.members)} / one member, energy + forces "
            "(worst batch size)",
            worst,
            TARGET_RATIO,
            False,
            "×",
            "members run one after the other: the cost grows ~N×; a shared "
            "trunk (multi-head) would be needed for less",
        )
    ]
    return run_.finish({"batches": results}, targets)
