"""The service's runtime state and the route dependencies, declared once.

Routes take ``StateDep``, ``PredictorDep`` (404/503 for a name that is unknown or
failed to load) and ``require_api_key`` (401 without a valid Bearer key when
``HEGNN_API_KEYS`` is set; keys compared in constant time). They are ``async``:
FastAPI would run plain functions in a worker thread, a thread hop per dependency.
"""

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hegnn_serve.service.batching import ForceBatcher
from hegnn_serve.service.jobs import JobRunner
from hegnn_serve.service.metrics import Metrics
from hegnn_serve.service.predictor import Predictor
from hegnn_serve.service.registry import Registry
from hegnn_serve.service.settings import Settings


@dataclass
class ServiceState:
    """What the lifespan builds: models, their batchers, the /trajectory and /md
    job runner."""

    settings: Settings
    metrics: Metrics
    registry: Registry
    batchers: dict[str, ForceBatcher]
    jobs: JobRunner


async def get_state(request: Request) -> ServiceState:
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]


async def get_predictor(name: str, state: StateDep) -> Predictor:
    """The model named in the path."""
    registry = state.registry
    if name in registry.predictors:
        return registry.predictors[name]
    if name in registry.failed:
        raise HTTPException(
            503, f"model {name!r} failed to load: {registry.failed[name]}"
        )
    raise HTTPException(
        404, f"unknown model {name!r}; known: {sorted(registry.predictors)}"
    )


PredictorDep = Annotated[Predictor, Depends(get_predictor)]

bearer = HTTPBearer(
    auto_error=False, description="an API key of HEGNN_API_KEYS, when set"
)


async def require_api_key(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """401 unless auth is off or the Bearer key is one of the configured keys."""
    keys = state.settings.api_keys
    if not keys:
        return
    given = credentials.credentials.encode() if credentials else b""
    valid = False
    for key in keys:  # no early exit: the time does not depend on which key matched
        valid |= hmac.compare_digest(given, key.encode())
    if not valid:
        raise HTTPException(
            401,
            "missing or invalid API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
