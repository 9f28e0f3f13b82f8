"""deploy/k8s/: every kustomization rendered with `kubectl kustomize` (offline) and
validated strictly: core kinds against the Kubernetes schemas of kubernetes-validate,
the KubeRay RayService against the fields of KubeRay's ray.io/v1 types (below; no
package ships KubeRay's CRD schema), its pod templates as core PodTemplates and its
embedded Serve config against Ray's schema (when Ray is installed). Tests skip with
the reason when kubectl, kubernetes-validate or Ray is missing.
"""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl is not installed (it renders the kustomizations offline: "
    "`kubectl kustomize DIR`; Debian/Ubuntu: the kubernetes apt repository)",
)


def kubernetes_validate():
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install -e '.[dev]')",
    )


def render(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def compose_limits(service: str) -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    limits = compose["services"][service]["deploy"]["resources"]["limits"]
    if "memory" not in limits:  # merged from the x-api anchor
        limits = {**compose["x-api"]["deploy"]["resources"]["limits"], **limits}
    return {"cpu": str(limits["cpus"]), "memory": limits["memory"].replace("G", "Gi")}


def scale_pin() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = [r for r in project["optional-dependencies"]["scale"] if "ray" in r]
    return pin.split("==")[1]


# KubeRay's RayService (ray.io/v1) as far as these manifests use it: the fields of
# RayServiceSpec, RayClusterSpec, HeadGroupSpec and WorkerGroupSpec in KubeRay's Go
# types (ray-operator/apis/ray/v1), unknown fields rejected. Pod templates are checked
# against the core schema separately.
_OBJ = {"type": "object"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_INT = {"type": "integer", "minimum": 0}
RAYSERVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayService"},
        "metadata": _OBJ,
        "spec": {
            "type": "object",
            "required": ["serveConfigV2", "rayClusterConfig"],
            "additionalProperties": False,
            "properties": {
                "serveConfigV2": {"type": "string"},
                "serveService": _OBJ,
                "upgradeStrategy": _OBJ,
                "excludeHeadPodFromServeSvc": {"type": "boolean"},
                "rayClusterDeletionDelaySeconds": _INT,
                "rayClusterConfig": {
                    "type": "object",
                    "required": ["headGroupSpec"],
                    "additionalProperties": False,
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "enableInTreeAutoscaling": {"type": "boolean"},
                        "autoscalerOptions": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "upscalingMode": {
                                    "enum": ["Default", "Aggressive", "Conservative"]
                                },
                                "idleTimeoutSeconds": _INT,
                                "resources": _OBJ,
                                "image": {"type": "string"},
                                "imagePullPolicy": {"type": "string"},
                                "securityContext": _OBJ,
                                "env": {"type": "array"},
                                "envFrom": {"type": "array"},
                                "volumeMounts": {"type": "array"},
                            },
                        },
                        "headServiceAnnotations": _STR_MAP,
                        "gcsFaultToleranceOptions": _OBJ,
                        "suspend": {"type": "boolean"},
                        "managedBy": {"type": "string"},
                        "headGroupSpec": {
                            "type": "object",
                            "required": ["template"],
                            "additionalProperties": False,
                            "properties": {
                                "template": _OBJ,
                                "headService": _OBJ,
                                "enableIngress": {"type": "boolean"},
                                "rayStartParams": _STR_MAP,
                                "serviceType": {"type": "string"},
                            },
                        },
                        "workerGroupSpecs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["groupName", "template"],
                                "additionalProperties": False,
                                "properties": {
                                    "groupName": {"type": "string"},
                                    "replicas": _INT,
                                    "minReplicas": _INT,
                                    "maxReplicas": _INT,
                                    "idleTimeoutSeconds": _INT,
                                    "rayStartParams": _STR_MAP,
                                    "template": _OBJ,
                                    "scaleStrategy": _OBJ,
                                    "numOfHosts": _INT,
                                    "suspend": {"type": "boolean"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def validate_rayservice(doc: dict[str, Any]) -> None:
    """The RayService's own fields, then each pod template as a core PodTemplate."""
    import jsonschema

    kv = kubernetes_validate()
    jsonschema.validate(doc, RAYSERVICE_SCHEMA)
    cluster = doc["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    for i, group in enumerate(groups):
        template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"group-{i}"},
            "template": group["template"],
        }
        kv.validate(template, kv.latest_version(), strict=True)
        for key in group.get("rayStartParams", {}):
            assert re.fullmatch(r"[a-z][a-z0-9-]*", key), f"ray start --{key}?"


@needs_kubectl
@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_kustomization_renders_and_validates(path: Path) -> None:
    kv = kubernetes_validate()
    docs = render(path)
    assert docs
    for doc in docs:
        if doc["apiVersion"] == "ray.io/v1":
            validate_rayservice(doc)
        else:
            kv.validate(doc, kv.latest_version(), strict=True)


def test_overlays_exist() -> None:
    names = {str(p.relative_to(K8S)) for p in KUSTOMIZATIONS}
    assert {"base", "overlays/gpu", "overlays/ray"} <= names


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    return api


def checkpoints_read_only(pod: dict[str, Any], main: dict[str, Any]) -> None:
    (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == "/app/checkpoints"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["readOnly"] is True


@needs_kubectl
def test_base_probes_resources_and_wiring() -> None:
    docs = render(K8S / "base")
    deployment, service = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    hpa, config = by_kind(docs, "HorizontalPodAutoscaler"), by_kind(docs, "ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    api = container(deployment)
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    # Limits = the compose file's API container (docker-compose.yml).
    assert api["resources"]["limits"] == compose_limits("api")
    assert config["data"]["HEGNN_TORCH_THREADS"] == api["resources"]["limits"]["cpu"]
    checkpoints_read_only(pod, api)
    pvc = by_kind(docs, "PersistentVolumeClaim")
    assert (
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
        == pvc["metadata"]["name"]
    )
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == api["ports"][0]["name"]
    assert api["ports"][0]["containerPort"] == 8000
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it
    (ref,) = api["envFrom"]
    assert ref["configMapRef"]["name"] == config["metadata"]["name"]  # hashed name


@needs_kubectl
def test_gpu_overlay() -> None:
    docs = render(K8S / "overlays" / "gpu")
    deployment = by_kind(docs, "Deployment")
    pod, api = deployment["spec"]["template"]["spec"], container(deployment)
    limits = api["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    assert api["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert {k: limits[k] for k in ("cpu", "memory")} == compose_limits("api-gpu")
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        pod["tolerations"]
    )
    assert api["image"].endswith(":cuda")
    assert by_kind(docs, "ConfigMap")["data"]["HEGNN_DEVICE"] == "cuda"
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]


def rayservice() -> dict[str, Any]:
    docs = render(K8S / "overlays" / "ray")
    assert {d["kind"] for d in docs} == {"RayService", "PersistentVolumeClaim"}
    return by_kind(docs, "RayService")


@needs_kubectl
def test_ray_overlay_runs_the_serve_application() -> None:
    doc = rayservice()
    cluster = doc["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == scale_pin()
    embedded = yaml.safe_load(doc["spec"]["serveConfigV2"])
    # deploy/ray/serve.yaml, but the proxy on every interface of the pod and the
    # checkpoints at the volume's mount.
    local = yaml.safe_load((ROOT / "deploy" / "ray" / "serve.yaml").read_text())
    local["http_options"]["host"] = "0.0.0.0"
    local["applications"][0]["args"]["checkpoints"] = "/app/checkpoints"
    assert embedded == local
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    ports = {
        p["name"]: p["containerPort"]
        for p in head["template"]["spec"]["containers"][0]["ports"]
    }
    assert ports == {
        "gcs-server": 6379,
        "dashboard": 8265,
        "client": 10001,
        "serve": 8000,
    }
    for group in [head, *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        checkpoints_read_only(pod, pod["containers"][0])
        assert pod["containers"][0]["image"].startswith("hegnn-serve-ray:")
    (workers,) = cluster["workerGroupSpecs"]
    replicas_per_pod = int(workers["rayStartParams"]["num-cpus"])
    per_replica = compose_limits("replica")  # 1 CPU, 2 GiB per replica
    limits = workers["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["cpu"] == str(replicas_per_pod * int(per_replica["cpu"]))
    assert limits["memory"] == f"{replicas_per_pod * int(per_replica['memory'][:-2])}Gi"


@needs_kubectl
def test_ray_overlay_serve_config_is_valid_for_ray() -> None:
    pytest.importorskip(
        "ray.serve", reason="Ray is not installed: pip install -e '.[scale]'"
    )
    from tests.deploy.test_ray import check_serve_config

    config = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    check_serve_config(config, "RayService serveConfigV2")


def test_ray_image_pins_the_scale_extra_and_ships_the_app() -> None:
    dockerfile = (ROOT / "deploy" / "ray" / "Dockerfile").read_text()
    assert f"'ray[serve]=={scale_pin()}'" in dockerfile
    assert "COPY deploy/ray/serve_app.py /app/deploy/ray/serve_app.py" in dockerfile
    assert "ENV PYTHONPATH=/app" in dockerfile
    assert "wget" in dockerfile  # KubeRay's probes


@needs_kubectl
def test_rayservice_check_rejects_misspelt_fields() -> None:
    import copy

    import jsonschema

    kv = kubernetes_validate()
    good = rayservice()
    validate_rayservice(good)
    bad = copy.deepcopy(good)
    bad["spec"]["rayClusterConfig"]["workerGroupSpec"] = []  # the s is missing
    with pytest.raises(jsonschema.ValidationError, match="workerGroupSpec"):
        validate_rayservice(bad)
    bad = copy.deepcopy(good)
    head = bad["spec"]["rayClusterConfig"]["headGroupSpec"]
    head["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kv.ValidationError, match="imagePullPolcy"):
        validate_rayservice(bad)
