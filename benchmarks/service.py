"""Service throughput and latency: batching on vs off vs the Predictor in-process.

Two real servers (uvicorn processes on 127.0.0.1, batching on and off, one torch
thread each) serve the shipped aspirin potential (or any potential checkpoint).
``c`` closed-loop clients (c = 1, 8, 32, 64; keep-alive connections of
:class:`benchmarks.server.Connection`, one asyncio loop in this process) each POST
one aspirin structure per request for a fixed time, after a warm-up. Each point
reports requests/s, structures/s, µs per atom, p50/p95/p99 latency, the mean
number of structures per model call (from /metrics) and CPU per request of server
and client. After each batched point the Predictor is timed in this process on
batches of the size the server formed ("same batches"), with and without the
per-structure ``prepare`` (checks + graph). Rounds repeat every point, interleaved;
medians are reported.
"""

import asyncio
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hegnn_serve.benchmarks.common import (
    SHIPPED_CHECKPOINT,
    Run,
    Target,
    aspirin,
    median,
    percentiles,
)
from hegnn_serve.benchmarks.server import (
    Connection,
    ServerProcess,
    copy_checkpoint,
    delta,
    running_servers,
    scrape,
)
from hegnn_serve.service.predictor import Predictor, Prepared, StructureInput

logger = logging.getLogger(__name__)

MODES = ("batching_on", "batching_off")


@dataclass(frozen=True)
class ServiceBenchConfig:
    """Client counts, time per point and rounds; ``quick`` for smoke tests."""

    clients: tuple[int, ...] = (1, 8, 32, 64)
    seconds: float = 3.0
    warmup_s: float = 0.5
    rounds: int = 3
    max_requests: int = 20_000  # per point, whatever the time
    checkpoint: Path = SHIPPED_CHECKPOINT
    max_wait_ms: float = 2.0  # the server's default batching wait

    @classmethod
    def quick(cls, checkpoint: Path = SHIPPED_CHECKPOINT) -> "ServiceBenchConfig":
        return cls(
            clients=(1, 4), seconds=0.4, warmup_s=0.1, rounds=1, checkpoint=checkpoint
        )


@dataclass
class Point:
    """One measured load point: latencies, and what the server and client spent."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # /metrics growth


async def drive(
    server: ServerProcess,
    path: str,
    payload: bytes,
    clients: int,
    cfg: ServiceBenchConfig,
) -> Point:
    """``clients`` closed-loop clients: warm up, then measure for cfg.seconds (at
    most cfg.max_requests requests). Between the phases no request is in flight,
    so /metrics and CPU readings bracket exactly the measured requests."""
    point = Point()
    connections = [await Connection.open(server.url) for _ in range(clients)]

    async def worker(connection: Connection, stop: float, record: bool) -> None:
        while time.perf_counter() < stop and len(point.latencies) < cfg.max_requests:
            start = time.perf_counter()
            await connection.post(path, payload)
            if record:
                point.latencies.append(time.perf_counter() - start)

    try:
        warm_stop = time.perf_counter() + cfg.warmup_s
        await asyncio.gather(*(worker(c, warm_stop, False) for c in connections))
        before, server_cpu = scrape(server.url), server.cpu_seconds()
        cpu, start = time.process_time(), time.perf_counter()
        stop = start + cfg.seconds
        await asyncio.gather(*(worker(c, stop, True) for c in connections))
        point.seconds = time.perf_counter() - start
        point.client_cpu_s = time.process_time() - cpu
        after, server_cpu_end = scrape(server.url), server.cpu_seconds()
    finally:
        for connection in connections:
            connection.close()
    point.metrics = {name: delta(before, after, name) for name in after}
    if server_cpu is not None and server_cpu_end is not None:
        point.server_cpu_s = server_cpu_end - server_cpu
    return point


def measure(
    server: ServerProcess,
    path: str,
    payload: bytes,
    clients: int,
    n_atoms: int,
    cfg: ServiceBenchConfig,
) -> dict[str, Any]:
    """One HTTP point with throughput, latency, batch size and CPU per request."""
    point = asyncio.run(drive(server, path, payload, clients, cfg))
    calls = point.metrics.get("hegnn_batch_structures_count", 0.0)
    structures = point.metrics.get("hegnn_batch_structures_sum", 0.0)
    compute = point.metrics.get("hegnn_compute_seconds_sum", 0.0)
    n = len(point.latencies)
    rate = n / point.seconds if point.seconds else float("nan")

    def per_request_ms(seconds: float | None) -> float | None:
        return None if seconds is None or not n else 1000 * seconds / n

    return {
        "requests": n,
        "requests_per_s": rate,
        "structures_per_s": rate,  # one structure per request
        "us_per_atom": 1e6 / (rate * n_atoms) if rate else float("nan"),
        **percentiles(point.latencies),
        "mean_structures_per_model_call": structures / calls if calls else 0.0,
        "compute_ms_per_structure": 1000 * compute / structures if structures else 0,
        "server_cpu_ms_per_request": per_request_ms(point.server_cpu_s),
        "client_cpu_ms_per_request": per_request_ms(point.client_cpu_s),
    }


def in_process(
    predictor: Predictor,
    prepared: Prepared,
    structure: StructureInput,
    batch: int,
    seconds: float,
) -> dict[str, Any]:
    """Predictor.forces on ``batch`` copies, in this process, for ``seconds``."""
    items = [prepared] * batch
    predictor.forces(items)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 2:
        predictor.forces(items)
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    start, n_prepare = time.perf_counter(), 0
    while time.perf_counter() - start < min(seconds / 4, 0.5) or n_prepare < 5:
        predictor.prepare(structure)
        n_prepare += 1
    prepare_s = (time.perf_counter() - start) / n_prepare
    return {
        "batch": batch,
        "structures_per_s": batch / per_call,
        "with_prepare_structures_per_s": batch / (per_call + batch * prepare_s),
        "prepare_ms_per_structure": 1000 * prepare_s,
        "ms_per_call": 1000 * per_call,
    }


def _median_points(points: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in points[0].items() if isinstance(v, int | float)]
    out = {k: median([p[k] for p in points if p[k] is not None]) for k in keys}
    return {**out, "rounds": points}


def targets(results: dict[str, Any], clients: int = 32) -> list[Target]:
    """Batching gain and the fraction of the in-process rate at ``clients``."""
    runs = {(r["mode"], r["clients"]): r for r in results["runs"]}
    on = runs.get(("batching_on", clients), {}).get("requests_per_s", math.nan)
    off = runs.get(("batching_off", clients), {}).get("requests_per_s", math.nan)
    off_1 = runs.get(("batching_off", 1), {}).get("requests_per_s", math.nan)
    local_runs = results["in_process"]
    local = local_runs.get(str(clients), {}).get("structures_per_s", math.nan)
    local_1 = local_runs.get("1", {}).get("structures_per_s", math.nan)
    return [
        Target(
            f"batching on / off throughput, {clients} clients",
            on / off,
            4.0,
            True,
            "x",
            f"vs batching off with 1 client: {on / off_1:.2f}x; in-process ceiling "
            f"(Predictor on the server's batches / on single structures): "
            f"{local / local_1:.2f}x",
        ),
        Target(
            f"batching on / in-process Predictor on the same batches, {clients} "
            "clients",
            on / local,
            0.7,
            True,
            "",
            "in-process: Predictor.forces only (no prepare, no HTTP)",
        ),
    ]


def run(cfg: ServiceBenchConfig, device: torch.device) -> dict[str, Any]:
    """The whole service benchmark; returns the JSON payload."""
    atoms = aspirin()
    structure = StructureInput(atoms.positions.astype(np.float64), atoms.numbers)
    payload = json.dumps(
        {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist()}
    ).encode()
    name = cfg.checkpoint.name
    path = f"/v1/models/{name}/forces"
    run_ = Run(
        "service",
        device,
        {
            **{k: v for k, v in cfg.__dict__.items() if k != "checkpoint"},
            "checkpoint": name,
            "molecule": f"aspirin ({len(atoms)} atoms), one structure per request",
            "client": "raw asyncio HTTP/1.1 keep-alive (benchmarks.server.Connection)",
            "server": "uvicorn, 1 process, HEGNN_TORCH_THREADS=1",
        },
    )
    run_.notes.append(
        "client and server share this machine's cores; client_cpu_ms_per_request "
        "is the load generator's own cost"
    )
    predictor = Predictor.load(cfg.checkpoint, device)
    prepared = predictor.prepare(structure)
    points: dict[tuple[str, int], list[dict[str, Any]]] = {}
    local: dict[int, list[dict[str, Any]]] = {}
    variants = [
        {
            "batching": True,
            "device": device,
            "torch_threads": 1,
            "max_wait_ms": cfg.max_wait_ms,
        },
        {"batching": False, "device": device, "torch_threads": 1},
    ]
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_servers(
            copy_checkpoint(cfg.checkpoint, Path(tmp)), variants
        ) as servers,
    ):
        by_mode = dict(zip(MODES, servers, strict=True))
        for r in range(cfg.rounds):
            order = cfg.clients if r % 2 == 0 else cfg.clients[::-1]
            for clients in order:
                for mode in MODES if r % 2 == 0 else MODES[::-1]:
                    point = measure(
                        by_mode[mode], path, payload, clients, len(atoms), cfg
                    )
                    points.setdefault((mode, clients), []).append(point)
                    logger.info(
                        "round %d %-12s %2d clients: %7.1f req/s  p50 %7.1f ms  "
                        "p99 %7.1f ms  %.1f structures/call",
                        r,
                        mode,
                        clients,
                        point["requests_per_s"],
                        point["p50_ms"],
                        point["p99_ms"],
                        point["mean_structures_per_model_call"],
                    )
                batch = max(
                    1,
                    round(
                        points["batching_on", clients][-1][
                            "mean_structures_per_model_call"
                        ]
                    ),
                )
                local.setdefault(clients, []).append(
                    in_process(predictor, prepared, structure, batch, cfg.seconds)
                )
    runs = [
        {"mode": mode, "clients": clients, **_median_points(values)}
        for (mode, clients), values in sorted(points.items())
    ]
    in_proc = {str(c): _median_points(v) for c, v in sorted(local.items())}
    results = {"n_atoms": len(atoms), "runs": runs, "in_process": in_proc}
    clients = 32 if 32 in cfg.clients else max(cfg.clients)
    return run_.finish(results, targets(results, clients))
