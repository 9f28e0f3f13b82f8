"""deploy/ray/serve-gpu.yaml on a simulated multi-node Ray cluster (slow: `make
test-ray`): two worker nodes with one fake GPU each (ray.cluster_utils, all on
127.0.0.1); the GPU config's replicas ask for one GPU each, so Ray places one replica
per node and a third finds no GPU. The replicas run on the CPU (no real GPU here)."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT
from tests.deploy.test_ray import (
    APP,
    DEPLOYMENT,
    MODEL,
    deploy,
    free_port,
    ray,
    running_replicas,
    serve,
)


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A head without CPUs and two nodes with 2 CPUs and 1 GPU each; Serve's proxy on
    the head only (one machine: the nodes would share its port)."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster
    from ray.serve._private.api import serve_start

    assert not ray_constants.ENABLE_RAY_CLUSTER, "Ray would leave the loopback"
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False},
    )
    nodes = [cluster.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
    try:
        ray.init(
            address=cluster.address,
            namespace="serve",
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        )
        serve_start(
            http_options={"host": "127.0.0.1", "port": free_port()},
            proxy_location="HeadOnly",
        )
        yield {"nodes": [n.node_id for n in nodes]}
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_gpu_config_places_one_replica_per_gpu_node(
    gpu_cluster: dict, tmp_path: Path
) -> None:
    from ray._private.state import available_resources_per_node

    shutil.copytree(ROOT / "checkpoints" / MODEL, tmp_path / MODEL)

    def two(dep: dict) -> None:
        dep.pop("autoscaling_config")
        dep["num_replicas"] = 2

    took = deploy(
        tmp_path, two, config_file="serve-gpu.yaml", device="cpu", torch_threads=1
    )
    assert running_replicas() == 2
    free = available_resources_per_node()
    gpus_left = {
        node: free.get(node, {}).get("GPU", 0.0) for node in gpu_cluster["nodes"]
    }
    print(
        f"\nray: GPU config, 2 replicas RUNNING in {took:.1f} s; GPUs left per "
        f"node {sorted(gpus_left.values())}"
    )
    assert set(gpus_left.values()) == {0.0}  # one replica on each GPU node

    def three(dep: dict) -> None:
        dep.pop("autoscaling_config")
        dep["num_replicas"] = 3

    with pytest.raises(pytest.fail.Exception, match="not RUNNING"):
        deploy(
            tmp_path,
            three,
            timeout=20,
            config_file="serve-gpu.yaml",
            device="cpu",
            torch_threads=1,
        )
    states = serve.status().applications[APP].deployments[DEPLOYMENT].replica_states
    print(f"ray: GPU config, 3 replicas on 2 GPUs: {dict(states)}")
    assert states.get("RUNNING", 0) == 2 and sum(states.values()) == 3
