"""HEGNNClient's retries: which failures are retried, how long it waits, and that a
server restarting on the same port is ridden out by a real call."""

import email.utils
import socket
import threading
import time

import httpx
import pytest
from ase.build import molecule

from hegnn_serve.service import client as client_module
from hegnn_serve.service.client import (
    HEGNNClient,
    HEGNNConnectionError,
    HEGNNServiceError,
)
from hegnn_serve.service.settings import Settings

from .conftest import running_server


def mock_client(handler, **kwargs) -> tuple[HEGNNClient, list[httpx.Request]]:
    """A client whose HTTP goes to ``handler(request, n)``; returns it and the
    requests seen."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request, len(seen))

    kwargs.setdefault("backoff", 0.0)
    c = HEGNNClient("http://test", transport=httpx.MockTransport(record), **kwargs)
    return c, seen


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Waits the client asked for, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", waits.append)
    return waits


FORCES = {"energy": -1.0, "forces": [[0.0, 0.0, 0.0]] * 3}
WATER = {"numbers": [8, 1, 1], "positions": [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]}


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_gateway_statuses_are_retried(status: int) -> None:
    # 504 here is a proxy's (a text body); the service's own is final (below).
    def flaky(request: httpx.Request, n: int) -> httpx.Response:
        if n < 3:
            return httpx.Response(status, text="upstream unavailable")
        return httpx.Response(200, json=FORCES)

    c, seen = mock_client(flaky, retries=3)
    assert c.forces("m", WATER).energy == -1.0
    assert len(seen) == 3
    assert all(r.content == seen[0].content for r in seen)  # the same body each time


@pytest.mark.parametrize("status", [500, 504])
def test_proxy_500_504_are_retried_the_services_are_not(status: int) -> None:
    # Ray Serve's proxy answers a bare 500 when a replica dies mid-request; the
    # service's own 500 (a model call raised) and 504 (a job ran past its deadline)
    # carry {"detail": ...} and would fail again.
    def proxy(request: httpx.Request, n: int) -> httpx.Response:
        if n == 1:
            return httpx.Response(status, text="<html>gateway</html>")
        return httpx.Response(200, json=FORCES)

    c, seen = mock_client(proxy, retries=3)
    c.forces("m", WATER)
    assert len(seen) == 2

    def service(request: httpx.Request, n: int) -> httpx.Response:
        return httpx.Response(status, json={"detail": "failed (request id 7)"})

    c, seen = mock_client(service, retries=3)
    with pytest.raises(HEGNNServiceError, match="request id 7"):
        c.md("m", WATER, steps=2)
    assert len(seen) == 1


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    c, seen = mock_client(
        lambda r, n: httpx.Response(status, json={"detail": "no"}), retries=3
    )
    with pytest.raises(HEGNNServiceError) as err:
        c.models()
    assert err.value.status_code == status and len(seen) == 1


def test_every_call_kind_is_retried() -> None:
    """Models, forces, trajectory and md: each a pure function of its request."""
    answers = {
        "/v1/models": {"models": []},
        "/v1/models/m": {"name": "m"},
        "/v1/models/m/forces": FORCES,
        "/v1/models/m/trajectory": {"positions": [], "times": [], "units": {}},
        "/v1/models/m/md": {"frames": [], "units": {}},
    }
    failed: set[str] = set()

    def once_dropped(request: httpx.Request, n: int) -> httpx.Response:
        if request.url.path not in failed:
            failed.add(request.url.path)
            raise httpx.RemoteProtocolError("peer closed connection", request=request)
        return httpx.Response(200, json=answers[request.url.path])

    c, seen = mock_client(once_dropped, retries=1)
    c.models()
    c.model("m")
    c.forces("m", WATER)
    c.trajectory("m", {"positions": [[0, 0, 0]], "velocities": [[0, 0, 0]]}, steps=2)
    c.md("m", WATER, steps=2)
    assert len(seen) == 10 and failed == set(answers)


def test_gives_up_after_retries_with_the_last_status(sleeps: list[float]) -> None:
    c, seen = mock_client(
        lambda r, n: httpx.Response(503, json={"detail": f"busy {n}"}), retries=2
    )
    with pytest.raises(HEGNNServiceError, match="busy 3") as err:
        c.models()
    assert err.value.status_code == 503 and len(seen) == 3 and len(sleeps) == 2


def test_backoff_is_exponential_capped_and_jittered(sleeps: list[float]) -> None:
    def refused(request: httpx.Request, n: int) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    c, _ = mock_client(refused, retries=6, backoff=0.5, max_backoff=4.0)
    with pytest.raises(HEGNNConnectionError, match="after 7 attempts"):
        c.models()
    assert len(sleeps) == 6
    for k, wait in enumerate(sleeps):
        nominal = min(0.5 * 2**k, 4.0)
        assert min(0.25 * 2**k, 4.0) <= wait <= nominal + 1e-9


def test_retry_after_is_respected_and_capped(sleeps: list[float]) -> None:
    later = email.utils.formatdate(time.time() + 3, usegmt=True)
    headers = [{"Retry-After": "2"}, {"Retry-After": "60"}, {"Retry-After": later}]

    def busy(request: httpx.Request, n: int) -> httpx.Response:
        if n <= len(headers):
            return httpx.Response(503, json={"detail": "full"}, headers=headers[n - 1])
        return httpx.Response(200, json={"models": []})

    c, seen = mock_client(busy, retries=3, backoff=0.01, max_backoff=10.0)
    assert c.models() == [] and len(seen) == 4
    assert sleeps[0] == 2.0
    assert sleeps[1] == 10.0  # capped at max_backoff
    assert 1.0 <= sleeps[2] <= 3.0  # an HTTP date, about 3 s ahead


def test_real_server_restart_is_ridden_out(server_settings: Settings) -> None:
    """The server goes away between two calls and comes back on the same port 0.5 s
    into the next call: the call succeeds, no error reaches the caller."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with running_server(server_settings, port) as url:
        with HEGNNClient(url) as c:
            first = c.forces("tiny-ff", molecule("H2O"))
    back, done = threading.Event(), threading.Event()

    def restart() -> None:
        time.sleep(0.5)
        with running_server(server_settings, port):
            back.set()
            done.wait(30)

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    try:
        start = time.perf_counter()
        with HEGNNClient(url, retries=8, backoff=0.2, max_backoff=1.0) as c:
            again = c.forces("tiny-ff", molecule("H2O"))
        took = time.perf_counter() - start
    finally:
        done.set()
        thread.join(30)
    assert back.is_set() and 0.4 < took < 15
    assert again.energy == pytest.approx(first.energy, abs=1e-9)
