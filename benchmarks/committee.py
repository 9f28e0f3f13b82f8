"""`hegnn bench committee`: what a committee of N costs against one of its members.

Energy and forces of batches of rMD17 frames (1, 4, 8 and 32 structures) of the
shipped ethanol (9 atoms) and aspirin (21 atoms) HEGNN committees, timed for one
member alone, for the members stacked as one model (hegnn/stacked.py) and for the
members one after the other, rounds interleaved; ratios are medians of
round-by-round ratios. The committee as served takes the stacked path up to
``Committee.stack_max_edges`` edges and the loop beyond; its ratio is the target
(issue 18): a committee of 3 at most 2× one member.
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

# committee checkpoint -> frames to time it on (rMD17; timing only, labels unused)
COMMITTEES = {
    "md17-ethanol-ff-hegnn-committee": "rmd17_ethanol_random100.xyz",
    "md17-aspirin-ff-hegnn-committee": "rmd17_aspirin_random800_meV.xyz",
}
TARGET_RATIO = 2.0


@dataclass(frozen=True)
class CommitteeBenchConfig:
    batch_sizes: tuple[int, ...] = (1, 4, 8, 32)
    rounds: int = 20
    committees: tuple[str, ...] = tuple(COMMITTEES)

    @classmethod
    def quick(cls) -> "CommitteeBenchConfig":
        return cls(batch_sizes=(1, 2), rounds=2, committees=tuple(COMMITTEES)[:1])


def frames_batch(model: Committee, frames: Path, n: int, device: torch.device) -> Batch:
    """The first ``n`` frames as one batch in the model's dtype, centred."""
    dtype = next(model.parameters()).dtype
    graphs = []
    for atoms in read(frames, index=f":{n}"):
        centred = atoms.positions - atoms.positions.mean(0)
        graphs.append(
            make_graph_data(model.config, centred, numbers=atoms.numbers, dtype=dtype)
        )
    return Batch.from_data_list(graphs).to(device)


def time_committee(
    cfg: CommitteeBenchConfig, name: str, device: torch.device
) -> dict[str, Any]:
    """ms per call of one member, the stacked and the looped committee, by batch."""
    model, _ = load(ROOT / "checkpoints" / name, device=device)
    if not isinstance(model, Committee):
        raise ValueError(f"{name}: not a committee checkpoint")
    member = model.members[0]
    stacked = Committee(list(model.members), stack_max_edges=2**62).eval()
    looped = Committee(list(model.members), stack_max_edges=0).eval()

    def timed(fn, data: Batch):
        def call() -> None:
            fn(data)
            synchronize(device)

        return call

    def member_call(data: Batch) -> None:
        graph = copy.copy(data)  # fresh leaf positions, as the committee gives each
        graph[keys.POSITIONS] = data[keys.POSITIONS].detach().clone()
        member(graph)

    batches: dict[str, Any] = {}
    frames = ROOT / "data/md17" / COMMITTEES[name]
    for n in cfg.batch_sizes:
        data = frames_batch(model, frames, n, device)
        calls = {"member": member_call, "stacked": stacked, "looped": looped}
        samples = interleaved({k: timed(f, data) for k, f in calls.items()}, cfg.rounds)
        edges = int(data[keys.EDGE_INDEX].shape[1])
        served = "stacked" if edges <= model.stack_max_edges else "looped"
        batches[str(n)] = {
            "edges": edges,
            **{f"{k}_ms": median(v) * 1e3 for k, v in samples.items()},
            "stacked_ratio": paired_ratio(samples["stacked"], samples["member"]),
            "looped_ratio": paired_ratio(samples["looped"], samples["member"]),
            "served_path": served,
            "ratio": paired_ratio(samples[served], samples["member"]),
        }
    return {
        "members": len(model.members),
        "atoms": len(read(frames, index=0)),
        "stack_max_edges": model.stack_max_edges,
        "batches": batches,
    }


def run(cfg: CommitteeBenchConfig, device: torch.device) -> dict[str, Any]:
    run_ = Run(
        "committee",
        device,
        {
            "committees": list(cfg.committees),
            "batch_sizes": list(cfg.batch_sizes),
            "rounds": cfg.rounds,
            "frames": "the first frames of the rMD17 files in data/md17",
        },
    )
    results = {name: time_committee(cfg, name, device) for name in cfg.committees}
    targets = []
    for name, found in results.items():
        worst = max(found["batches"].items(), key=lambda item: item[1]["ratio"])
        best = min(found["batches"].items(), key=lambda item: item[1]["ratio"])
        targets.append(
            Target(
                f"{name}: committee of {found['members']} / one member, energy + "
                f"forces (worst batch: {worst[0]} structures)",
                worst[1]["ratio"],
                TARGET_RATIO,
                False,
                "×",
                f"as served (stacked up to {found['stack_max_edges']} edges, then "
                f"one member after another); best {best[1]['ratio']:.2f}× at "
                f"{best[0]} structure(s): the work is N× once it outweighs the "
                "per-operation overhead",
            )
        )
    return run_.finish({"committees": results}, targets)
