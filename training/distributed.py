"""torchrun / DDP context: rank, world size, device; one process when not launched."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hegnn.device import resolve_device


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> Context:
    """Join the process group when torchrun set WORLD_SIZE > 1 (gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    return Context(rank, world_size, resolved)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def from_main(value: float, device: torch.device) -> float:
    """Rank 0's value on every rank: a wall clock read per process differs, and the
    budget stop and a clock-driven lr must agree across ranks."""
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
