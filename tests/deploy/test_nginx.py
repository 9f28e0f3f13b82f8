"""deploy/nginx.conf: `nginx -t`, then a real nginx in front of two stand-in
replicas (the compose service name "replica" replaced by 127.0.0.1 ports)."""

import http.server
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.conftest import ROOT

CONF = ROOT / "deploy" / "nginx.conf"
UPSTREAM = re.compile(r"^(\s*)server replica:8000( [^;]*)?;", re.MULTILINE)

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx not installed (apt-get install nginx)"
)


def local_copy(tmp_path: Path, upstreams: list[int], listen: int = 8080) -> Path:
    """The config with its upstream on 127.0.0.1 ports and temp paths in tmp_path."""
    text = CONF.read_text()
    assert UPSTREAM.search(text), "nginx.conf has no `server replica:8000`"
    text = UPSTREAM.sub(
        lambda m: "".join(
            f"{m.group(1)}server 127.0.0.1:{port}{m.group(2) or ''};"
            for port in upstreams
        ),
        text,
    )
    text = re.sub(r"listen \d+;", f"listen 127.0.0.1:{listen};", text)
    temp = "".join(
        f"    {kind}_temp_path {tmp_path / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + temp, 1)
    text = text.replace("pid /tmp/nginx.pid;", f"pid {tmp_path / 'nginx.pid'};")
    if os.geteuid() == 0:  # workers would be "nobody", shut out of tmp_path
        text = "user root;\n" + text
    path = tmp_path / "nginx.conf"
    path.write_text(text)
    return path


def nginx(conf: Path, *args: str) -> list[str]:
    return ["nginx", "-c", str(conf), "-p", str(conf.parent), "-e", "stderr", *args]


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    result = subprocess.run(
        nginx(local_copy(tmp_path, [8000]), "-t"), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


class Replica(http.server.BaseHTTPRequestHandler):
    """Answers with its port, the X-Request-ID it got and the body size it read."""

    def reply(self) -> None:
        size = int(self.headers.get("Content-Length", 0))
        self.rfile.read(size)
        body = (
            f"{self.server.server_port} {self.headers.get('X-Request-ID')} {size}"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = reply

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def replicas() -> Iterator[list[int]]:
    servers = [
        http.server.ThreadingHTTPServer(("127.0.0.1", 0), Replica) for _ in range(2)
    ]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [server.server_port for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_nginx_balances_over_replicas(
    tmp_path: Path, replicas: list[int], free_port: Callable[[], int]
) -> None:
    port = free_port()
    conf = local_copy(tmp_path, replicas, listen=port)
    log = tmp_path / "nginx.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            nginx(conf, "-g", "daemon off;"), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)

        answers = [httpx.get(f"{url}/healthz", timeout=10) for _ in range(6)]
        served = {int(a.text.split()[0]) for a in answers}
        assert served == set(replicas)
        assert {a.headers["X-Upstream"] for a in answers} == {
            f"127.0.0.1:{p}" for p in replicas
        }

        # A client's request id is kept, else nginx makes one.
        mine = httpx.get(f"{url}/healthz", headers={"X-Request-ID": "abc-1"})
        assert mine.text.split()[1] == "abc-1"
        assert re.fullmatch(r"[0-9a-f]{32}", answers[0].text.split()[1])

        # Bodies up to the service's own limit (8 MiB) get through to it.
        body = b"0" * (8 * 2**20)
        big = httpx.post(f"{url}/v1/models/m/forces", content=body, timeout=60)
        assert big.status_code == 200 and big.text.split()[2] == str(len(body))
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_nginx_times_out_stalled_clients_and_outwaits_jobs() -> None:
    """Stalled headers or bodies are dropped by the proxy; it waits longer for an
    answer than a job may run (the service's 504 reaches the client)."""
    from hegnn_serve.service.settings import Settings

    text = CONF.read_text()

    def seconds(directive: str) -> float:
        match = re.search(rf"^\s*{directive} (\d+)s;", text, re.MULTILINE)
        assert match, f"nginx.conf sets no {directive}"
        return float(match.group(1))

    defaults = Settings()
    assert seconds("client_header_timeout") <= 30
    assert seconds("client_body_timeout") <= defaults.body_timeout_s
    assert seconds("proxy_read_timeout") > defaults.job_timeout_s
