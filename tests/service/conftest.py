"""Fixtures that run the real server: uvicorn on 127.0.0.1, an ephemeral port, in a
thread, on tiny checkpoints written by the project's own ``hegnn.save``.

Shared with the client tests: ``checkpoint_dir`` (models "tiny-ff": potential,
species (1, 6, 8); "tiny-nbody": dynamics, features "nbody"), ``server_settings``
and ``server_url`` (session-scoped), and ``running_server(settings)`` for servers
with other settings.
"""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from torch import nn

from hegnn import ModelConfig, build_model, save
from hegnn_serve.service.app import create_app
from hegnn_serve.service.settings import Settings

POTENTIAL = "tiny-ff"
NBODY = "tiny-nbody"


def tiny_potential(seed: int = 0) -> nn.Module:
    """A float64 potential (L=2, 16 wide, 2 layers) with random weights."""
    torch.manual_seed(seed)
    config = ModelConfig(
        task="potential",
        lmax=2,
        hidden_dim=16,
        num_layers=2,
        species=(1, 6, 8),
        r_max=4.0,
    )
    model = build_model(config).to(torch.float64)
    model.set_statistics(torch.tensor([-13.6, -1029.0, -2041.0]), 5.0, -0.1, 9.0)
    return model.eval()


def tiny_dynamics(features: str = "nbody", delta_t: float = 1.0) -> nn.Module:
    """A float64 dynamics model (L=1, 16 wide, 2 layers) with random weights."""
    torch.manual_seed(1)
    config = ModelConfig(
        task="dynamics",
        lmax=1,
        hidden_dim=16,
        num_layers=2,
        features=features,
        coord_gain=0.01,
    )
    model = build_model(config).to(torch.float64)
    model.delta_t.fill_(delta_t)
    return model.eval()


def write_checkpoints(root: Path) -> Path:
    """The two shared test models, saved with the project's own code."""
    save(
        tiny_potential(),
        root / POTENTIAL,
        {"units": {"energy": "eV", "forces": "eV/Å", "positions": "Å"}},
    )
    save(
        tiny_dynamics("nbody", 1.0),
        root / NBODY,
        {
            "units": {
                "positions": "simulation length unit",
                "velocities": "length / time unit",
                "time": "time unit",
            }
        },
    )
    return root


def make_settings(checkpoints: Path, **overrides) -> Settings:
    """Small limits so the limit tests stay small; override what a test needs."""
    values = {
        "checkpoints": checkpoints,
        "max_atoms": 100,
        "max_structures": 16,
        "max_steps": 100,
        "max_frames": 100,
        "max_body_bytes": 256 * 1024,
        "max_wait_ms": 5.0,
        "log_level": "warning",
        **overrides,
    }
    return Settings(**values)


@contextmanager
def running_server(settings: Settings, port: int = 0) -> Iterator[str]:
    """Serve ``create_app(settings)`` in a thread on 127.0.0.1:``port`` (0: a free
    one); yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)

    def serve() -> None:
        with suppress(SystemExit):  # uvicorn exits when the startup fails
            server.run(sockets=[sock])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the test server did not start (see the log)")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def server_settings(checkpoint_dir: Path) -> Settings:
    return make_settings(checkpoint_dir)


@pytest.fixture(scope="session")
def server_url(server_settings: Settings) -> Iterator[str]:
    with running_server(server_settings) as url:
        yield url


@pytest.fixture
def http(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=60) as client:
        yield client
