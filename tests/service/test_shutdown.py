"""SIGTERM on `hegnn serve` (a real uvicorn process) while an MD job runs: the
port closes, the job is stopped after HEGNN_DRAIN_S with a 503, and the process
exits with status 0 within the drain time and a few seconds."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .conftest import POTENTIAL
from .test_jobs import LONG, LONG_MD, Background, gauge, wait_for

DRAIN_S = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_drains_a_running_job_and_exits_0(checkpoint_dir, tmp_path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "HEGNN_CHECKPOINTS": str(checkpoint_dir),
        "HEGNN_PORT": str(port),
        "HEGNN_MAX_STEPS": str(LONG),
        "HEGNN_DRAIN_S": str(DRAIN_S),
        "HEGNN_LOG_LEVEL": "info",
    }
    hegnn = Path(sys.executable).with_name("hegnn")
    log = (tmp_path / "serve.log").open("w+")
    process = subprocess.Popen(
        [str(hegnn), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:

        def ready() -> bool:
            assert process.poll() is None, "hegnn serve exited"
            try:
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=120, every=0.2)
        job = Background(url, f"/v1/models/{POTENTIAL}/md", LONG_MD)
        wait_for(lambda: gauge(url, "hegnn_jobs_running", POTENTIAL) == 1)
        start = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=DRAIN_S + 15)
        seconds = time.perf_counter() - start
        job.thread.join(10)
        log.seek(0)
        output = log.read()
        assert code == 0, output
        assert DRAIN_S - 0.5 < seconds < DRAIN_S + 4, (seconds, output)
        # The running job was stopped at the drain time and told so.
        assert job.status == 503, job.answer
        assert job.header("retry-after") == "1"
        assert "shutting down" in job.json()["detail"]
        job.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
