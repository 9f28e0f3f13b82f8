"""/trajectory and /md jobs on a real server: a long job of one model does not hold
up another model; a client that goes away stops its job; a bounded queue (503 with
Retry-After); a deadline (504); queue and running jobs as Prometheus gauges."""

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress

import httpx
import pytest

from hegnn_serve.service.schemas import NBODY_STATE, WATER

from .conftest import NBODY, POTENTIAL, make_settings, running_server

LONG = 1_000_000  # steps: far longer than any test waits; a stop ends the job
LONG_MD = {**WATER, "timestep_fs": 0.1, "steps": LONG, "every": LONG}
LONG_ROLLOUT = {**NBODY_STATE, "steps": LONG, "every": LONG}


def job_settings(checkpoint_dir, **overrides):
    values = {"max_steps": LONG, "job_timeout_s": 60.0, "trajectory_workers": 2}
    return make_settings(checkpoint_dir, **{**values, **overrides})


@pytest.fixture(scope="module")
def job_server(checkpoint_dir) -> Iterator[str]:
    with running_server(job_settings(checkpoint_dir, max_queued_jobs=0)) as url:
        yield url


def gauge(url: str, name: str, model: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(rf'^{name}{{model="{model}"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_for(condition, timeout: float = 20.0, every: float = 0.02) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    start = time.perf_counter()
    while not condition():
        assert time.perf_counter() - start < timeout, "condition never held"
        time.sleep(every)
    return time.perf_counter() - start


class Background:
    """A request on a raw socket, its answer read in a thread; ``close()`` drops
    the connection (a client gone)."""

    def __init__(self, url: str, path: str, body: dict) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + data)
        self.answer = b""
        self.thread = threading.Thread(target=self._read)
        self.thread.start()

    def _read(self) -> None:
        with suppress(OSError):
            while chunk := self.sock.recv(65536):
                self.answer += chunk
                head, _, body = self.answer.partition(b"\r\n\r\n")
                length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
                if length and len(body) >= int(length.group(1)):
                    return

    @property
    def status(self) -> int:
        return int(self.answer.split(b" ", 2)[1])

    def header(self, name: str) -> str:
        head = self.answer.partition(b"\r\n\r\n")[0].decode()
        match = re.search(rf"^{name}: (.*)\r?$", head, re.IGNORECASE | re.MULTILINE)
        assert match, head
        return match.group(1).strip()

    def json(self) -> dict:
        return json.loads(self.answer.partition(b"\r\n\r\n")[2])

    def close(self) -> None:
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(10)


def test_a_long_job_does_not_hold_up_another_model(job_server) -> None:
    md = Background(job_server, f"/v1/models/{POTENTIAL}/md", LONG_MD)
    try:
        wait_for(lambda: gauge(job_server, "hegnn_jobs_running", POTENTIAL) == 1)
        with httpx.Client(base_url=job_server, timeout=30) as http:
            start = time.perf_counter()
            r = http.post(
                f"/v1/models/{NBODY}/trajectory", json={**NBODY_STATE, "steps": 2}
            )
            trajectory_s = time.perf_counter() - start
            assert r.status_code == 200, r.text
            start = time.perf_counter()
            r = http.post(f"/v1/models/{POTENTIAL}/forces", json=WATER)
            forces_s = time.perf_counter() - start
            assert r.status_code == 200, r.text
            # The same model's queue is full (HEGNN_MAX_QUEUED_JOBS=0): 503.
            r = http.post(f"/v1/models/{POTENTIAL}/md", json=LONG_MD)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert "HEGNN_MAX_QUEUED_JOBS" in r.json()["detail"]
        assert trajectory_s < 2.0 and forces_s < 2.0, (trajectory_s, forces_s)
    finally:
        md.close()
    # Closing the client stops its job at the next step.
    freed_s = wait_for(
        lambda: gauge(job_server, "hegnn_jobs_running", POTENTIAL) == 0, timeout=10
    )
    assert freed_s < 2.0, freed_s


@pytest.mark.parametrize(
    ("model", "endpoint", "body"),
    [(POTENTIAL, "md", LONG_MD), (NBODY, "trajectory", LONG_ROLLOUT)],
)
def test_a_client_that_times_out_frees_the_worker(
    job_server, model, endpoint, body
) -> None:
    with httpx.Client(base_url=job_server, timeout=1.0) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(f"/v1/models/{model}/{endpoint}", json=body)
    # httpx closed the connection on its timeout: the job stops within a step.
    freed_s = wait_for(lambda: gauge(job_server, "hegnn_jobs_running", model) == 0)
    assert freed_s < 2.0, freed_s
    text = httpx.get(f"{job_server}/metrics").text
    assert f'hegnn_jobs_stopped_total{{model="{model}",reason="cancelled"}}' in text
    # The worker is free again: a short job is answered at once.
    with httpx.Client(base_url=job_server, timeout=30) as http:
        start = time.perf_counter()
        short = {**body, "steps": 2, "every": 1}
        r = http.post(f"/v1/models/{model}/{endpoint}", json=short)
        assert r.status_code == 200, r.text
        assert time.perf_counter() - start < 2.0


def test_a_job_past_its_deadline_is_stopped_with_504(checkpoint_dir) -> None:
    settings = job_settings(checkpoint_dir, job_timeout_s=0.5)
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=30) as c:
        for model, endpoint, body in [
            (POTENTIAL, "md", LONG_MD),
            (NBODY, "trajectory", LONG_ROLLOUT),
        ]:
            start = time.perf_counter()
            r = c.post(f"/v1/models/{model}/{endpoint}", json=body)
            assert r.status_code == 504, r.text
            assert "HEGNN_JOB_TIMEOUT_S" in r.json()["detail"]
            assert time.perf_counter() - start < 3.0
            assert gauge(url, "hegnn_jobs_running", model) == 0


def test_a_waiting_job_counts_and_keeps_its_deadline(checkpoint_dir) -> None:
    """One thread: the second job waits (queued gauge 1); the deadline counts from
    its arrival, waiting included, so it is answered by then: 503 with Retry-After
    if it never got a thread, else 504 after the steps it had time for."""
    settings = job_settings(
        checkpoint_dir, trajectory_workers=1, max_queued_jobs=1, job_timeout_s=1.5
    )
    with running_server(settings) as url:
        first = Background(url, f"/v1/models/{POTENTIAL}/md", LONG_MD)
        wait_for(lambda: gauge(url, "hegnn_jobs_running", POTENTIAL) == 1)
        start = time.perf_counter()
        second = Background(url, f"/v1/models/{NBODY}/trajectory", LONG_ROLLOUT)
        wait_for(lambda: gauge(url, "hegnn_jobs_queued", NBODY) == 1)
        # A third job of the waiting model: its queue (1) is full.
        third = httpx.post(
            f"{url}/v1/models/{NBODY}/trajectory", json=LONG_ROLLOUT, timeout=30
        )
        assert third.status_code == 503 and third.headers["retry-after"] == "1"
        second.thread.join(30)
        assert time.perf_counter() - start < 1.5 + 1.0
        first.thread.join(30)
        assert first.status == 504, first.answer
        assert second.status in (503, 504), second.answer
        if second.status == 503:
            assert second.header("retry-after") == "1"
        assert gauge(url, "hegnn_jobs_queued", NBODY) == 0
        assert gauge(url, "hegnn_jobs_running", NBODY) == 0
        first.close()
        second.close()
