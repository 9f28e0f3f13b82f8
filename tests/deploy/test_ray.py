"""deploy/ray/: the Serve config validated against Ray's schema, and the application
on a local Ray cluster (slow: `make test-ray`).

The cluster tests keep every socket on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0:
otherwise Ray binds and advertises the machine's routable address), use at most two
replicas of one CPU each, and stop Ray afterwards. They print what they measured
(`pytest -s`); README, "Scaling out", quotes a run.
"""

import os
import shutil
import socket
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from ase.build import molecule

from hegnn_serve.service.client import HEGNNClient
from hegnn_serve.service.settings import Settings
from tests.deploy.conftest import ROOT

# Read by Ray when it is imported: Ray's nodes then bind and advertise 127.0.0.1
# instead of the machine's routable address (and refuse other nodes).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install -e '.[scale]' (make test-ray)"
)
serve = pytest.importorskip("ray.serve")
from ray.serve.config import AutoscalingConfig  # noqa: E402
from ray.serve.schema import (  # noqa: E402
    DeploymentSchema,
    HTTPOptionsSchema,
    RayActorOptionsSchema,
    ServeApplicationSchema,
    ServeDeploySchema,
)

CONFIGS = sorted((ROOT / "deploy" / "ray").glob("serve*.yaml"))
APP, DEPLOYMENT = "hegnn", "HEGNNService"
MODEL = "md17-ethanol-ff-hegnn"  # shipped, float32
REPLICA_PREFIX = f"SERVE_REPLICA::{APP}#{DEPLOYMENT}#"


def strict_keys(data: dict, model: type, where: str) -> None:
    """Every key of ``data`` is a field of the pydantic ``model`` (Serve's schemas
    accept unknown deployment keys for forward compatibility; we do not)."""
    fields = set(model.model_fields)
    fields |= {f.alias for f in model.model_fields.values() if f.alias}
    unknown = set(data) - fields
    assert not unknown, f"{where}: unknown keys {sorted(unknown)}"


def check_serve_config(config: dict[str, Any], where: str) -> ServeDeploySchema:
    """Validate a Serve config as `serve deploy` does, plus unknown-key checks."""
    schema = ServeDeploySchema.model_validate(config)
    strict_keys(config, ServeDeploySchema, where)
    strict_keys(config.get("http_options", {}), HTTPOptionsSchema, f"{where}.http")
    for app in config["applications"]:
        strict_keys(app, ServeApplicationSchema, f"{where}.{app['name']}")
        for dep in app.get("deployments", []):
            at = f"{where}.{app['name']}.{dep['name']}"
            strict_keys(dep, DeploymentSchema, at)
            strict_keys(dep.get("autoscaling_config", {}), AutoscalingConfig, at)
            strict_keys(dep.get("ray_actor_options", {}), RayActorOptionsSchema, at)
    return schema


def test_scale_extra_pins_the_installed_ray() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = [r for r in project["optional-dependencies"]["scale"] if "ray" in r]
    assert pin.split("==")[1] == ray.__version__


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_serve_config_is_valid(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    schema = check_serve_config(config, path.name)
    (app,) = schema.applications
    assert app.import_path == "deploy.ray.serve_app:build"
    from deploy.ray.serve_app import settings_args

    settings_args(app.args)  # Settings accepts the arguments
    (dep,) = app.deployments
    assert dep.name == DEPLOYMENT
    # Serve's default of 5 ongoing requests would cap the dynamic batch at 5.
    assert dep.max_ongoing_requests >= 32
    auto = dep.autoscaling_config
    assert auto["min_replicas"] >= 1 and auto["max_replicas"] > auto["min_replicas"]
    assert 0 < auto["target_ongoing_requests"] <= dep.max_ongoing_requests
    assert schema.http_options.port == 8000 and schema.grpc_options.port == 9000
    gpus = dep.ray_actor_options.num_gpus or 0
    if "gpu" in path.name:
        assert gpus >= 1 and app.args["device"].startswith("cuda")
    else:
        assert gpus == 0 and app.args["device"] == "cpu"


def test_serve_config_check_rejects_misspelt_keys() -> None:
    config = yaml.safe_load(CONFIGS[0].read_text())
    config["applications"][0]["deployments"][0]["max_ongoing_request"] = 64
    with pytest.raises(AssertionError, match="max_ongoing_request"):
        check_serve_config(config, "misspelt")


def test_builder_rejects_unknown_and_proxy_arguments() -> None:
    from deploy.ray.serve_app import build

    with pytest.raises(ValueError, match="checkpoint"):
        build({"checkpoint": "checkpoints"})
    with pytest.raises(ValueError, match="port"):
        build({"port": "9000"})
    with pytest.raises(ValueError):
        build({"device": "tpu"})


# --- a local Ray cluster ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One shipped float32 potential (replicas start faster with one model)."""
    root = tmp_path_factory.mktemp("ray-checkpoints")
    shutil.copytree(ROOT / "checkpoints" / MODEL, root / MODEL)
    return root


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray instance on loopback with Serve's proxy on a free port; yields the
    proxy URL. Ray and Serve are shut down afterwards."""
    from ray._private import ray_constants
    from ray.serve._private.api import serve_start

    assert not ray_constants.ENABLE_RAY_CLUSTER, "Ray would leave the loopback"

    port = free_port()
    start = time.perf_counter()
    ray.init(
        num_cpus=2,
        namespace="serve",
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}},
    )
    serve_start(http_options={"host": "127.0.0.1", "port": port})
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    print(f"\nray: local cluster and Serve up in {time.perf_counter() - start:.1f} s")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def deploy(
    checkpoints: Path,
    edit: Callable[[dict], None],
    timeout: float = 120,
    config_file: str = "serve.yaml",
    **args: Any,
) -> float:
    """Deploy deploy/ray/``config_file`` (as `serve deploy`) with the test's
    checkpoints, application ``args`` and ``edit(deployment)`` applied; returns the
    seconds until it was RUNNING."""
    from ray.serve._private.api import serve_start

    config = yaml.safe_load((ROOT / "deploy" / "ray" / config_file).read_text())
    config.pop("http_options")  # the cluster fixture's proxy
    (app,) = config["applications"]
    app["args"].update(checkpoints=str(checkpoints), log_level="warning", **args)
    app["runtime_env"]["env_vars"]["PYTHONPATH"] = str(ROOT)
    edit(app["deployments"][0])
    schema = check_serve_config(config, "test config")
    start = time.perf_counter()
    serve_start().deploy_apps(schema, _blocking=False)
    while time.perf_counter() - start < timeout:
        status = serve.status().applications.get(APP)
        if status is not None and status.status == "RUNNING":
            return time.perf_counter() - start
        if status is not None and status.status == "DEPLOY_FAILED":
            pytest.fail(f"deployment failed: {status.message}")
        time.sleep(0.5)
    pytest.fail(f"not RUNNING within {timeout} s: {serve.status()}")


def replicas() -> list[str]:
    """Names of the live replica actors of the deployment."""
    names = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in names if a["name"].startswith(REPLICA_PREFIX))


def running_replicas() -> int:
    dep = serve.status().applications[APP].deployments[DEPLOYMENT]
    return dep.replica_states.get("RUNNING", 0)


def fixed(n: int) -> Callable[[dict], None]:
    def edit(dep: dict) -> None:
        dep.pop("autoscaling_config")
        dep["num_replicas"] = n

    return edit


def ethanols(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        out.append(atoms)
    return out


class Load:
    """``clients`` threads, each with its own HEGNNClient, calling /forces in a loop
    until stopped; counts calls, failures and the replica of each answer."""

    def __init__(self, url: str, clients: int = 8, **client_args: Any) -> None:
        self.url, self.client_args = url, client_args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.calls = 0
        self.failures: list[str] = []
        self.by_replica: dict[str, int] = {}
        self.threads = [
            threading.Thread(target=self.run, args=(i,), daemon=True)
            for i in range(clients)
        ]

    def run(self, seed: int) -> None:
        structures = ethanols(16, seed)

        def note(response) -> None:
            # No X-Replica: the proxy answered itself (e.g. a 500 for a replica
            # that died mid-request), and the client retried.
            replica = response.headers.get("x-replica", "proxy")
            with self.lock:
                self.by_replica[replica] = self.by_replica.get(replica, 0) + 1

        with HEGNNClient(self.url, timeout=60, **self.client_args) as client:
            client.http.event_hooks["response"].append(note)
            k = 0
            while not self.stop.is_set():
                try:
                    client.forces(MODEL, structures[k % len(structures)])
                    with self.lock:
                        self.calls += 1
                except Exception as err:  # counted, reported by the test
                    with self.lock:
                        self.calls += 1
                        self.failures.append(repr(err))
                k += 1

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(90)


@pytest.mark.slow
def test_two_replicas_answer_as_one_process(cluster: str, checkpoints: Path) -> None:
    from tests.service.conftest import running_server

    took = deploy(checkpoints, fixed(2))
    assert running_replicas() == 2
    structures = ethanols(64, seed=1)
    with running_server(Settings(checkpoints=checkpoints)) as plain:
        with HEGNNClient(plain) as client:
            expected = [client.forces(MODEL, s) for s in structures]
    seen: list[str] = []
    got: list = [None] * len(structures)

    def worker(offset: int) -> None:
        with HEGNNClient(cluster) as client:
            client.http.event_hooks["response"].append(
                lambda r: seen.append(r.headers["x-replica"])
            )
            for i in range(offset, len(structures), 8):
                got[i] = client.forces(MODEL, structures[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    pairs = list(zip(got, expected, strict=True))
    worst = max(float(np.abs(g.forces - e.forces).max()) for g, e in pairs)
    energy = max(abs(g.energy - e.energy) for g, e in pairs)
    per_replica = {r: seen.count(r) for r in set(seen)}
    print(
        f"\nray: 2 replicas RUNNING {took:.1f} s after deploy; {len(structures)} "
        f"structures, 8 clients: |ΔF| max {worst:.2e} eV/Å, |ΔE| max {energy:.2e} eV;"
        f" answers per replica {sorted(per_replica.values())}"
    )
    assert worst < 1e-4 and energy < 1e-3  # float32 on ~-4200 eV totals
    assert len(per_replica) == 2 and min(per_replica.values()) >= 5


@pytest.mark.slow
def test_replica_killed_under_load_fails_no_call(
    cluster: str, checkpoints: Path
) -> None:
    deploy(checkpoints, fixed(2))
    before = replicas()
    assert len(before) == 2
    with Load(cluster, clients=8) as load:
        time.sleep(3)
        calls_at_kill = load.calls
        ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
        killed = time.perf_counter()
        while True:
            now = replicas()
            if len(now) == 2 and before[0] not in now and running_replicas() == 2:
                break
            assert time.perf_counter() - killed < 30, f"not replaced: {now}"
            time.sleep(0.25)
        replaced = time.perf_counter() - killed
        time.sleep(3)  # traffic reaches the new replica
    new = (set(replicas()) - set(before)).pop().removeprefix(REPLICA_PREFIX)
    print(
        f"\nray: replica killed after {calls_at_kill} calls; replaced in "
        f"{replaced:.1f} s; {load.calls} calls from 8 HEGNNClients, "
        f"{len(load.failures)} failed; answers per replica (proxy = retried) "
        f"{load.by_replica}"
    )
    assert not load.failures, load.failures[:3]
    assert replaced < 30
    assert load.by_replica.get(new, 0) > 0  # the replacement serves traffic


@pytest.mark.slow
def test_autoscaling_up_under_load_and_down_when_idle(
    cluster: str, checkpoints: Path
) -> None:
    def autoscale(dep: dict) -> None:
        dep["autoscaling_config"].update(
            min_replicas=1,
            initial_replicas=1,
            max_replicas=2,
            target_ongoing_requests=2,
            upscale_delay_s=2,
            downscale_delay_s=5,
        )

    deploy(checkpoints, autoscale)
    deadline = time.perf_counter() + 60
    while running_replicas() != 1:  # back to one after the previous test's two
        assert time.perf_counter() < deadline, "did not settle at 1 replica"
        time.sleep(0.5)
    with Load(cluster, clients=8) as load:
        start = time.perf_counter()
        while running_replicas() < 2:
            assert time.perf_counter() - start < 90, "no scale-up within 90 s"
            time.sleep(0.5)
        up = time.perf_counter() - start
    idle = time.perf_counter()
    while running_replicas() > 1:
        assert time.perf_counter() - idle < 90, "no scale-down within 90 s"
        time.sleep(0.5)
    down = time.perf_counter() - idle
    print(
        f"\nray: autoscaling 1 -> 2 replicas in {up:.1f} s under 8 clients "
        f"({load.calls} calls, {len(load.failures)} failed), 2 -> 1 in {down:.1f} s "
        f"idle (downscale_delay_s=5)"
    )
    assert not load.failures, load.failures[:3]
