"""Stalled uploads on a real server, over raw sockets: a body that never completes
(slowloris, a Content-Length larger than what is sent) is answered 408 after
HEGNN_BODY_TIMEOUT_S and its connection closed; other clients are served."""

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from .conftest import POTENTIAL, make_settings, running_server

TIMEOUT_S = 1.0
PATH = f"/v1/models/{POTENTIAL}/forces"


@pytest.fixture(scope="module")
def slow_server(checkpoint_dir) -> Iterator[str]:
    settings = make_settings(checkpoint_dir, body_timeout_s=TIMEOUT_S)
    with running_server(settings) as url:
        yield url


def open_upload(url: str, declared: int, sent: bytes) -> socket.socket:
    """Headers for a body of ``declared`` bytes, then only ``sent``."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + sent)
    return sock


def read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything until the server closes the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_short_body_is_dropped_with_408(slow_server) -> None:
    sock = open_upload(slow_server, declared=1000, sent=b'{"numbers": [8, 1')
    start = time.perf_counter()
    answer = read_all(sock, timeout=TIMEOUT_S + 10)  # returns once closed
    seconds = time.perf_counter() - start
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"HEGNN_BODY_TIMEOUT_S" in answer
    assert TIMEOUT_S - 0.2 < seconds < TIMEOUT_S + 2, seconds


def test_slowloris_trickle_does_not_extend_the_deadline(slow_server) -> None:
    """Many sockets sending a byte every 0.2 s: all dropped at the deadline of the
    whole body, and a normal request is served meanwhile."""
    socks = [open_upload(slow_server, declared=10_000, sent=b"{") for _ in range(20)]
    start = time.perf_counter()
    for _ in range(3):
        time.sleep(0.2)
        for sock in socks:
            sock.sendall(b" ")
    body = {"numbers": [8, 1, 1], "positions": [[0, 0, 0], [0, 0.96, 0], [0.9, 0, 0]]}
    r = httpx.post(slow_server + PATH, json=body, timeout=10)
    assert r.status_code == 200, r.text
    for sock in socks:
        answer = read_all(sock, timeout=TIMEOUT_S + 10)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.perf_counter() - start < TIMEOUT_S + 3
