"""Shared by the deployment tests: the repository root and free local ports."""

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function returning a TCP port that is free on 127.0.0.1 right now."""

    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return pick
