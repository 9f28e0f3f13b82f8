"""Load with a long job alongside: do force clients and small jobs still get answers?

One real server (a uvicorn process on 127.0.0.1, default settings) serves the
shipped checkpoints. A long ``/md`` job on the aspirin potential (64 aspirins ×
1000 steps by default: many minutes of work, stopped by the server's job deadline)
starts first. While it runs, ``clients`` closed-loop clients POST one aspirin each
to ``/forces`` for ``seconds``, and every ``probe_every_s`` one small job is timed
in turn: a 2-step ``/trajectory`` of the N-body model and a 2-step ``/md`` of water
on the ethanol potential (both other models than the long job's, which the job
scheduler keeps a thread for). Reported: force requests by status, their latency,
each small job's latency, and how the long job ended.

Targets (issue 16): no failed force request; every small job answered within 2 s.
"""

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from hegnn_serve.benchmarks.common import ROOT, Run, Target, aspirin, percentiles
from hegnn_serve.benchmarks.server import Connection, ServerProcess, scrape

LONG_MODEL = "md17-aspirin-ff-hegnn"
SMALL_JOBS = {
    "trajectory": (
        "nbody-charged5-hegnn-l3",
        "trajectory",
        {
            "positions": [[0.5, -1.1, 0.3], [-1.2, 0.4, 0.8], [0.9, 1.3, -0.6]],
            "velocities": [[0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1]],
            "charges": [1.0, -1.0, 1.0],
            "steps": 2,
        },
    ),
    "md": (
        "md17-ethanol-ff-hegnn",
        "md",
        {
            "numbers": [8, 1, 1],
            "positions": [
                [0.0, 0.0, 0.1173],
                [0.0, 0.7572, -0.4692],
                [0.0, -0.7572, -0.4692],
            ],
            "timestep_fs": 0.5,
            "steps": 2,
        },
    ),
}
SMALL_JOB_TARGET_S = 2.0


@dataclass(frozen=True)
class SoakConfig:
    clients: int = 64
    seconds: float = 60.0
    long_structures: int = 64
    long_steps: int = 1000
    probe_every_s: float = 3.0
    checkpoints: Path = ROOT / "checkpoints"

    @classmethod
    def quick(cls) -> "SoakConfig":
        return cls(
            clients=4, seconds=4.0, long_structures=2, long_steps=200, probe_every_s=1.0
        )


def _structure(atoms: Any) -> dict[str, Any]:
    return {
        "numbers": atoms.numbers.tolist(),
        "positions": np.round(atoms.positions, 6).tolist(),
    }


def _long_job(url: str, cfg: SoakConfig, out: dict[str, Any]) -> None:
    body = {
        "structures": [_structure(aspirin())] * cfg.long_structures,
        "steps": cfg.long_steps,
        "timestep_fs": 0.5,
        "every": cfg.long_steps,
    }
    start = time.monotonic()
    try:
        r = httpx.post(f"{url}/v1/models/{LONG_MODEL}/md", json=body, timeout=3600)
        out.update(status=r.status_code, detail=r.text[:300])
    except httpx.HTTPError as error:
        out.update(status=None, detail=repr(error))
    out["elapsed_s"] = time.monotonic() - start


async def _force_clients(url: str, cfg: SoakConfig) -> dict[str, Any]:
    payload = json.dumps(_structure(aspirin())).encode()
    path = f"/v1/models/{LONG_MODEL}/forces"
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    stop = time.monotonic() + cfg.seconds

    async def client() -> None:
        connection = await Connection.open(url)
        try:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    await connection.post(path, payload)
                    statuses["200"] += 1
                    latencies.append(time.perf_counter() - t0)
                except RuntimeError as error:  # a status other than 200
                    statuses[str(error).split()[1]] += 1
        finally:
            connection.close()

    async def probes() -> list[dict[str, Any]]:
        found = []
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            kinds = list(SMALL_JOBS)
            i = 0
            while time.monotonic() < stop - 1:
                await asyncio.sleep(cfg.probe_every_s)
                kind = kinds[i % len(kinds)]
                model, endpoint, body = SMALL_JOBS[kind]
                t0 = time.perf_counter()
                r = await http.post(f"/v1/models/{model}/{endpoint}", json=body)
                found.append(
                    {
                        "kind": kind,
                        "model": model,
                        "status": r.status_code,
                        "latency_s": time.perf_counter() - t0,
                    }
                )
                i += 1
        return found

    *_, small = await asyncio.gather(*(client() for _ in range(cfg.clients)), probes())
    return {"statuses": dict(statuses), "latencies": latencies, "small": small}


def run(cfg: SoakConfig, device: torch.device) -> dict[str, Any]:
    """The whole soak (the server on ``device``); returns the JSON payload."""
    config = {k: str(v) if isinstance(v, Path) else v for k, v in cfg.__dict__.items()}
    run_ = Run("soak", device, {**config, "long_model": LONG_MODEL})
    server = ServerProcess(cfg.checkpoints, device=device.type)
    try:
        server.wait_ready()
        long_job: dict[str, Any] = {}
        thread = threading.Thread(target=_long_job, args=(server.url, cfg, long_job))
        thread.start()
        time.sleep(2.0)  # the long job is admitted and running
        load = asyncio.run(_force_clients(server.url, cfg))
        metrics = scrape(server.url)
        thread.join()
    finally:
        server.stop()
    failed = sum(n for status, n in load["statuses"].items() if status != "200")
    small = load["small"]
    worst_small = max((p["latency_s"] for p in small), default=None)
    small_ok = bool(small) and all(p["status"] == 200 for p in small)
    results = {
        "forces": {
            "requests": sum(load["statuses"].values()),
            "by_status": load["statuses"],
            "failed": failed,
            "requests_per_s": len(load["latencies"]) / cfg.seconds,
            "latency": percentiles(load["latencies"]),
        },
        "small_jobs": small,
        "small_job_worst_s": worst_small,
        "long_job": long_job,
        "rss_mib_at_end": metrics.get("process_resident_memory_bytes", 0) / 2**20,
    }
    targets = [
        Target(
            f"failed /forces requests, {cfg.clients} clients × {cfg.seconds:g} s "
            "beside a long /md job",
            failed,
            0,
            False,
        ),
        Target(
            "slowest small /trajectory or /md job beside it (all answered 200)",
            worst_small if small_ok else None,
            SMALL_JOB_TARGET_S,
            False,
            "s",
        ),
    ]
    return run_.finish(results, targets)
