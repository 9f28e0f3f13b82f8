"""docker-compose.yml: parsed by the compose CLIs that are installed (no engine
needed), and its structure checked with PyYAML (anchors and merge keys resolved)."""

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"


def compose_cli(name: str) -> list[str]:
    """The command of one compose implementation, or skip saying why it is absent."""
    if name == "docker-compose":
        if shutil.which("docker-compose") is None:
            pytest.skip("docker-compose not installed (apt-get install docker-compose)")
        return ["docker-compose"]
    if shutil.which("docker") is None:
        pytest.skip("docker CLI not installed")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("docker CLI has no compose plugin")
    return ["docker", "compose"]


def run_compose(cli: list[str], *args: str) -> str:
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


@pytest.mark.parametrize("name", ["docker-compose", "docker compose"])
def test_compose_cli_accepts_the_file(name: str) -> None:
    cli = compose_cli(name)
    run_compose(cli, "config", "-q")
    run_compose(cli, "--profile", "gpu", "--profile", "scale", "config", "-q")
    assert set(run_compose(cli, "config", "--profiles").split()) == {"gpu", "scale"}


def test_without_a_profile_only_the_api_starts() -> None:
    assert [name for name, s in services().items() if "profiles" not in s] == ["api"]


def test_every_api_service_is_the_hardened_image() -> None:
    for name in ("api", "api-gpu", "replica"):
        service = services()[name]
        assert service["restart"] == "unless-stopped", name
        assert "./checkpoints}:/app/checkpoints:ro" in service["volumes"][0], name
        assert "/readyz" in service["healthcheck"]["test"][-1], name
        limits = service["deploy"]["resources"]["limits"]
        assert {"cpus", "memory"} <= set(limits), name
        assert all(k.startswith("HEGNN_") for k in service["environment"]), name


def test_environment_passes_every_setting_but_the_command_line_ones() -> None:
    """All HEGNN_* settings reach the container; host, port and checkpoints are
    options of the image's command, which win over the environment."""
    from hegnn_serve.service.settings import Settings

    expected = {f"HEGNN_{f.upper()}" for f in Settings.model_fields} - {
        "HEGNN_HOST",
        "HEGNN_PORT",
        "HEGNN_CHECKPOINTS",
    }
    for name in ("api", "api-gpu", "replica"):
        assert set(services()[name]["environment"]) == expected, name


def test_gpu_profile_reserves_an_nvidia_device() -> None:
    gpu = services()["api-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["environment"]["HEGNN_DEVICE"] == "cuda"
    assert gpu["image"] != services()["api"]["image"]


def test_scale_profile_balances_replicas_behind_nginx() -> None:
    replica, proxy = services()["replica"], services()["proxy"]
    assert replica["profiles"] == proxy["profiles"] == ["scale"]
    assert replica["deploy"]["replicas"] > 1
    assert "ports" not in replica and "container_name" not in replica
    assert proxy["image"].startswith("nginx:")
    assert proxy["depends_on"] == {"replica": {"condition": "service_healthy"}}
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert re.search(r"^\s*server replica:8000\b", conf, re.MULTILINE)
    listen = re.search(r"^\s*listen (\d+);", conf, re.MULTILINE)
    assert listen and proxy["ports"][0].endswith(f":{listen.group(1)}")
