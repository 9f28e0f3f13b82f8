"""The FastAPI app: ``create_app(settings)``; models are loaded in the lifespan.

Corrupt checkpoints: by default a folder that fails to load is skipped with a logged
error, listed under ``failed`` in /readyz and ``unavailable`` in /v1/models, and
requests to it get 503; /readyz is 503 only when no model loaded. With
``HEGNN_STRICT_CHECKPOINTS=true`` the server refuses to start instead.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from hegnn import keys
from hegnn_serve.service.batching import Arrivals, ForceBatcher
from hegnn_serve.service.deps import ServiceState
from hegnn_serve.service.errors import (
    InputError,
    InternalError,
    JobStopped,
    Overloaded,
    input_error_handler,
    internal_error_handler,
    job_stopped_handler,
    overloaded_handler,
    validation_error_handler,
)
from hegnn_serve.service.jobs import JobRunner
from hegnn_serve.service.metrics import Metrics
from hegnn_serve.service.middleware import (
    ArrivalsMiddleware,
    BodySizeLimitMiddleware,
    BodyTimeoutMiddleware,
    JSONBodyMiddleware,
    RequestLogMiddleware,
)
from hegnn_serve.service.openapi import openapi_for
from hegnn_serve.service.registry import StartupError, load_registry
from hegnn_serve.service.routes import health, metrics, models, predict
from hegnn_serve.service.settings import Settings, get_settings

logger = logging.getLogger(__name__)

DESCRIPTION = """HEGNN models over HTTP: energies and forces (eV, eV/Å) of structures
given in Å (`/forces`), learned dynamics rollouts (`/trajectory`, dynamics models), and
server-side MD (`/md`, potential models). Concurrent force requests are batched. Every
answer states its units. Send `Authorization: Bearer <key>` when the server sets
`HEGNN_API_KEYS`."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    s: Settings = app.state.settings
    torch.set_num_threads(s.torch_threads)
    try:
        registry = await asyncio.to_thread(load_registry, s)
    except StartupError as err:
        logger.error("refusing to start: %s", err)
        raise
    metrics_: Metrics = app.state.metrics
    metrics_.models.labels("loaded").set(len(registry.predictors))
    metrics_.models.labels("failed").set(len(registry.failed))
    batchers = {
        name: ForceBatcher(
            predictor,
            metrics_,
            enabled=s.batching,
            max_atoms=s.max_batch_atoms,
            max_wait_s=s.max_wait_ms / 1000,
            max_pending_atoms=s.max_pending_atoms,
            max_edges=s.max_request_edges,
            arrivals=app.state.arrivals,
        )
        for name, predictor in registry.predictors.items()
        if predictor.task == keys.TASK_POTENTIAL
    }
    for batcher in batchers.values():
        await batcher.start()
    jobs = JobRunner(
        metrics_,
        workers=s.trajectory_workers,
        max_queued=s.max_queued_jobs,
        timeout_s=s.job_timeout_s,
        drain_s=s.drain_s,
    )
    app.state.service = ServiceState(s, metrics_, registry, batchers, jobs)
    try:
        yield
    finally:
        await jobs.close()
        for batcher in batchers.values():
            await batcher.close()


def begin_drain(app: FastAPI) -> None:
    """SIGTERM (see service/cli.py): refuse new jobs, stop running ones after
    HEGNN_DRAIN_S. Safe in a signal handler."""
    state = getattr(app.state, "service", None)
    if state is not None:
        state.jobs.begin_drain()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``settings`` (default: from HEGNN_* environment variables)."""
    settings = settings or get_settings()
    logging.getLogger("service").setLevel(settings.log_level.upper())
    app = FastAPI(
        title="hegnn-serve",
        description=DESCRIPTION,
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.openapi = lambda: openapi_for(app, auth=bool(settings.api_keys))
    app.state.metrics = Metrics()
    app.state.arrivals = Arrivals()
    for router in (health.router, metrics.router, models.router, predict.router):
        app.include_router(router)
    app.add_exception_handler(InputError, input_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(Overloaded, overloaded_handler)
    app.add_exception_handler(JobStopped, job_stopped_handler)
    app.add_exception_handler(InternalError, internal_error_handler)
    app.add_exception_handler(Exception, internal_error_handler)
    app.add_middleware(ArrivalsMiddleware, arrivals=app.state.arrivals)
    app.add_middleware(JSONBodyMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(BodyTimeoutMiddleware, timeout_s=settings.body_timeout_s)
    app.add_middleware(RequestLogMiddleware, metrics=app.state.metrics)
    return app
