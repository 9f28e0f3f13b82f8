"""A real hegnn-serve process for the benchmarks, and a lean HTTP load client.

The server runs in its own process (uvicorn, ``service.app:create_app``, settings
from ``HEGNN_*`` variables) so that it does not share the benchmark's interpreter
lock. :class:`Connection` is a minimal HTTP/1.1 keep-alive client: httpx's async
client costs 1-2 ms of client CPU per request, which on a 2-core machine that runs
both sides would measure the client rather than the server.
"""

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from hegnn_serve.benchmarks.common import ROOT

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_checkpoint(checkpoint: Path, root: Path) -> Path:
    """A checkpoints folder holding only ``checkpoint`` (the server loads all)."""
    shutil.copytree(checkpoint, root / checkpoint.name)
    return root


class ServerProcess:
    """``python -m uvicorn --factory hegnn_serve.service.app:create_app`` (loopback)."""

    def __init__(self, checkpoints: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "HEGNN_CHECKPOINTS": str(checkpoints),
            "HEGNN_LOG_LEVEL": "warning",
            **{f"HEGNN_{k.upper()}": str(v).lower() for k, v in settings.items()},
        }
        command = [sys.executable, "-m", "uvicorn", "--factory"]
        command += ["hegnn_serve.service.app:create_app", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--no-access-log"]
        command += ["--log-level", "warning"]
        self.process = subprocess.Popen(command, env=env, cwd=ROOT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready within {STARTUP_TIMEOUT_S} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (Linux), else None."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().split(")")[-1]
            utime, stime = fields.split()[11:13]
        except (OSError, ValueError):
            return None
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


@contextmanager
def running_servers(
    checkpoints: Path, variants: Sequence[dict[str, object]]
) -> Iterator[list[ServerProcess]]:
    """One server per settings dict, started side by side; stopped on exit."""
    servers: list[ServerProcess] = []
    try:
        for settings in variants:
            servers.append(ServerProcess(checkpoints, **settings))
        for server in servers:
            server.wait_ready()
        logger.info("servers ready: %s", ", ".join(s.url for s in servers))
        yield servers
    finally:
        for server in servers:
            server.stop()


def scrape(url: str) -> dict[str, float]:
    """Prometheus samples of /metrics summed over labels, by metric name; and each
    labelled sample by its full name (``name{label="value",...}``)."""
    totals: dict[str, float] = defaultdict(float)
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            totals[name.partition("{")[0]] += float(value)
            if "{" in name:
                totals[name] = float(value)
    return dict(totals)


def delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    """Growth of a metric between two scrapes (absent before its first sample)."""
    return after.get(name, 0.0) - before.get(name, 0.0)


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON (see module docstring)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> "Connection":
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def post(self, path: str, payload: bytes) -> bytes:
        """POST and return the body; RuntimeError on a status other than 200."""
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
