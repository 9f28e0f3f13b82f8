"""hegnn-serve as a Ray Serve application: every replica is one ``create_app`` process.

A replica builds the same FastAPI app as ``hegnn serve`` (``create_app(Settings(...))``)
when it starts, so it has its own lifespan (models loaded, one dynamic batcher per
potential model), middlewares, /healthz, /readyz, /metrics and error answers. Ray Serve
adds the HTTP proxy, routing to the replica with the fewest ongoing requests,
autoscaling on ongoing requests, GPU placement (``ray_actor_options.num_gpus``) and
replacement of failed replicas.

Run it (from the repository root, ``pip install -e '.[scale]'``)::

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 serve run deploy/ray/serve.yaml   # config
    serve run deploy.ray.serve_app:build checkpoints=checkpoints device=cpu  # builder

Arguments (``args:`` in the config, ``key=value`` after ``serve run``) are
:class:`service.settings.Settings` fields except host and port (the proxy's, set by
``http_options``); unset ones come from the replica's ``HEGNN_*`` environment
variables (``runtime_env.env_vars``), then the defaults.
"""

from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.serve import Application

from hegnn_serve.service.settings import Settings

DEPLOYMENT = "HEGNNService"

# Defaults of the deployment; deploy/ray/serve.yaml overrides them per cluster.
OPTIONS: dict[str, Any] = {
    # Serve's default of 5 would cap a replica's dynamic batch at 5 structures: let
    # enough requests in for the batcher to fill (it holds 64 structures per request
    # at most, HEGNN_MAX_STRUCTURES), and let the proxy queue the rest.
    "max_ongoing_requests": 64,
    # Past this many queued requests per caller the proxy answers 503 (HEGNNClient
    # retries it with back-off) instead of queueing without bound.
    "max_queued_requests": 512,
    "ray_actor_options": {"num_cpus": 1},
    "health_check_period_s": 5,
    "graceful_shutdown_timeout_s": 20,
}

# Set by Serve's proxy (http_options), not by the application.
PROXY_FIELDS = {"host", "port"}

# Names the replica that answered, as X-Upstream does behind nginx (deploy/nginx.conf).
REPLICA_HEADER = b"x-replica"


class ReplicaHeader:
    """ASGI middleware: adds ``X-Replica: <Serve replica id>`` to every answer."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app = app
        self.value = replica.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((REPLICA_HEADER, self.value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_header)


def settings_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """The application arguments, checked against Settings (a misspelt or invalid
    value fails the deployment here, before any replica starts)."""
    args = dict(args)
    unknown = set(args) - set(Settings.model_fields) | (set(args) & PROXY_FIELDS)
    if unknown:
        allowed = sorted(set(Settings.model_fields) - PROXY_FIELDS)
        raise ValueError(
            f"unknown hegnn-serve arguments {sorted(unknown)}; expected Settings "
            f"fields except host and port (set by http_options): {allowed}"
        )
    Settings(**args)  # validates; the replica builds its own from the same args
    return args


@serve.ingress()
class HEGNNService:
    """One replica: the FastAPI app of ``create_app``, built in the replica process."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)

    def __serve_build_asgi_app__(self) -> Any:
        # Imported here: torch and the models load in the replica, not the driver.
        from hegnn_serve.service.app import create_app

        app = create_app(Settings(**self.settings))
        replica = serve.get_replica_context().replica_id.unique_id
        app.add_middleware(ReplicaHeader, replica=replica)
        return app


def build(args: Mapping[str, Any]) -> Application:
    """The application builder of ``serve run`` and the config's ``import_path``."""
    deployment = serve.deployment(name=DEPLOYMENT, **OPTIONS)(HEGNNService)
    return deployment.bind(settings_args(args))
