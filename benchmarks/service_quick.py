"""Quick service benchmark: requests/s and p50/p99 latency for aspirin (21 atoms).

Starts the server (uvicorn, one process, ``HEGNN_*`` settings) on a random-weight
HEGNN potential (medium: 4 layers, 64 wide, L=3; tiny: 2 layers, 16 wide, L=2;
species H/C/O, float32), once with batching on and once off, and drives it with 1
and 32 concurrent keep-alive clients (a lean asyncio HTTP/1.1 client, see
``Connection``) for a fixed time each, and times the model in this process on the
same batches; each point is repeated, interleaved, and the medians reported.
Writes JSON (default benchmarks/results/service_quick.json) and logs each point.

    .venv/bin/python benchmarks/service_quick.py [--seconds 5] [--repeats 3]
"""

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from ase.io import read

from hegnn import ModelConfig, build_model, save
from service.predictor import Predictor, StructureInput

logger = logging.getLogger("benchmarks.service_quick")
ROOT = Path(__file__).resolve().parents[1]
ASPIRIN = ROOT / "training" / "geometries" / "aspirin.xyz"
MODEL = "bench-ff"


# Random-weight H/C/O potentials: the size named in the issue, and a tiny one whose
# cost is mostly per-call overhead (where batching matters most).
SIZES = {
    "medium": {"lmax": 3, "hidden_dim": 64, "num_layers": 4},
    "tiny": {"lmax": 2, "hidden_dim": 16, "num_layers": 2},
}


def write_checkpoint(root: Path, size: str) -> None:
    torch.manual_seed(0)
    config = ModelConfig(task="potential", species=(1, 6, 8), r_max=5.0, **SIZES[size])
    model = build_model(config)
    model.set_statistics(torch.tensor([-13.6, -1029.0, -2041.0]), 1.0, 0.0, 12.0)
    save(model.eval(), root / MODEL, {"units": {"energy": "eV", "forces": "eV/Å"}})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoints: Path, batching: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "HEGNN_CHECKPOINTS": str(checkpoints),
        "HEGNN_BATCHING": str(batching).lower(),
        "HEGNN_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    command += ["--log-level", "warning"]
    process = subprocess.Popen(command, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not become ready")


class Connection:
    """A minimal HTTP/1.1 keep-alive client for the load generator.

    httpx.AsyncClient costs about 1-2 ms of client CPU per request; on a 2-core
    machine that shares its cores with the server it capped /healthz at ~100
    requests/s, so it would measure the client, not the server.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> "Connection":
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def post(self, path: str, payload: bytes) -> bytes:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}"
            "\r\n\r\n".encode()
            + payload
        )
        await self.writer.drain()
        status = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        if b" 200 " not in status:
            raise RuntimeError(f"{status!r}: {body[:200]!r}")
        return body

    def close(self) -> None:
        self.writer.close()


async def drive(url: str, payload: bytes, clients: int, seconds: float) -> dict:
    """``clients`` closed-loop clients for ``seconds``: throughput and latency."""
    path = f"/v1/models/{MODEL}/forces"
    latencies: list[float] = []
    connections = [await Connection.open(url) for _ in range(clients)]

    async def worker(connection: Connection, stop: float, record: bool) -> None:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            await connection.post(path, payload)
            if record:
                latencies.append(time.perf_counter() - start)

    try:
        warm = time.perf_counter() + min(2.0, seconds / 4)
        await asyncio.gather(*(worker(c, warm, False) for c in connections))
        start = time.perf_counter()
        stop = start + seconds
        await asyncio.gather(*(worker(c, stop, True) for c in connections))
        elapsed = time.perf_counter() - start
    finally:
        for connection in connections:
            connection.close()
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def batch_totals(url: str) -> tuple[float, float]:
    """(structures, model calls) so far, from /metrics."""
    total = count = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("hegnn_batch_structures_sum"):
            total = float(line.split()[-1])
        elif line.startswith("hegnn_batch_structures_count"):
            count = float(line.split()[-1])
    return total, count


def in_process(predictor: Predictor, structure: StructureInput, seconds: float) -> dict:
    """Structures/s of Predictor.forces on batches of 1 and 32, in this process."""
    prepared = predictor.prepare(structure)
    out = {}
    for size in (1, 32):
        batch = [prepared] * size
        predictor.forces(batch)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2:
            predictor.forces(batch)
            calls += 1
        out[f"batch_{size}_structures_per_s"] = (
            calls * size / (time.perf_counter() - start)
        )
    return out


def measure(url: str, payload: bytes, clients: int, seconds: float) -> dict:
    """One HTTP point, with the mean number of structures per model call."""
    before = batch_totals(url)
    point = asyncio.run(drive(url, payload, clients, seconds))
    after = batch_totals(url)
    calls = max(after[1] - before[1], 1)
    point["mean_structures_per_model_call"] = (after[0] - before[0]) / calls
    return point


def median_point(points: list[dict]) -> dict:
    """The median of each number over the repeats, and the repeats themselves."""
    keys = ("requests_per_s", "p50_ms", "p99_ms", "mean_structures_per_model_call")
    out = {k: float(np.median([p[k] for p in points])) for k in keys}
    return {**out, "repeats": points}


def bench_size(size: str, atoms, seconds: float, repeats: int) -> dict:
    """In-process and HTTP numbers of one model size, repeats interleaved so that
    drifting load on a shared machine hits every point alike."""
    payload = json.dumps(
        {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist()}
    ).encode()
    structure = StructureInput(atoms.positions, atoms.numbers)
    arch = SIZES[size]
    points: dict[tuple[bool, int], list[dict]] = {}
    local: list[dict] = []
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = Path(tmp)
        write_checkpoint(checkpoints, size)
        predictor = Predictor.load(checkpoints / MODEL, torch.device("cpu"))
        servers = {b: start_server(checkpoints, b) for b in (True, False)}
        try:
            for _ in range(repeats):
                local.append(in_process(predictor, structure, seconds))
                for batching, (_, url) in servers.items():
                    for clients in (1, 32):
                        point = measure(url, payload, clients, seconds)
                        points.setdefault((batching, clients), []).append(point)
                        logger.info(
                            "%-6s batching %-5s clients %2d: %7.1f req/s  "
                            "p50 %7.2f ms  p99 %7.2f ms  (%.1f structures/call)",
                            size,
                            batching,
                            clients,
                            point["requests_per_s"],
                            point["p50_ms"],
                            point["p99_ms"],
                            point["mean_structures_per_model_call"],
                        )
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(30)
    runs = {key: median_point(value) for key, value in points.items()}
    in_proc = {key: float(np.median([x[key] for x in local])) for key in local[0]}
    result = {
        "model": f"HEGNN potential, {arch['num_layers']} layers, "
        f"{arch['hidden_dim']} wide, L={arch['lmax']}, float32, random weights",
        "runs": [
            {"batching": b, "clients": c, **runs[b, c]} for (b, c) in sorted(runs)
        ],
        "in_process": {**in_proc, "repeats": local},
        "ratios": {
            "batched_32_over_unbatched_1": runs[True, 32]["requests_per_s"]
            / runs[False, 1]["requests_per_s"],
            "batched_32_over_unbatched_32": runs[True, 32]["requests_per_s"]
            / runs[False, 32]["requests_per_s"],
            "batched_32_over_in_process_batch_32": runs[True, 32]["requests_per_s"]
            / in_proc["batch_32_structures_per_s"],
        },
    }
    for (b, c), r in sorted(runs.items()):
        logger.info(
            "%-6s median batching %-5s clients %2d: %7.1f req/s  p50 %7.2f ms  "
            "p99 %7.2f ms",
            size,
            b,
            c,
            r["requests_per_s"],
            r["p50_ms"],
            r["p99_ms"],
        )
    logger.info("%-6s in process: %s", size, in_proc)
    logger.info("%-6s ratios: %s", size, result["ratios"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per point")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--sizes", nargs="+", choices=sorted(SIZES), default=["medium", "tiny"]
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/service_quick.json"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("hegnn").setLevel(logging.WARNING)
    atoms = read(ASPIRIN)
    results = {
        "molecule": "aspirin (21 atoms)",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, 1 torch thread, load average "
        f"{os.getloadavg()[0]:.1f} at start",
        "seconds_per_point": args.seconds,
        "repeats": args.repeats,
        "sizes": {
            size: bench_size(size, atoms, args.seconds, args.repeats)
            for size in args.sizes
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
