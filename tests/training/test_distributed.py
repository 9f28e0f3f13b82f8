"""Ranks agree on values each process reads for itself (the wall clock)."""

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hegnn_serve.training import distributed


def _rank_reports(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2
    )
    value = distributed.from_main(10.0 + rank, torch.device("cpu"))
    Path(out, f"rank{rank}").write_text(repr(value))
    dist.destroy_process_group()


def test_every_rank_gets_rank_zeros_value(tmp_path: Path) -> None:
    mp.spawn(_rank_reports, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    assert [float((tmp_path / f"rank{r}").read_text()) for r in (0, 1)] == [10.0, 10.0]
    assert distributed.from_main(3.5, torch.device("cpu")) == 3.5  # one process
