"""GET /healthz (process alive) and GET /readyz (models loaded). No auth: probes."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from hegnn_serve.service.deps import StateDep
from hegnn_serve.service.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """200 while the process serves HTTP."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "no model loaded"}},
)
async def readyz(state: StateDep) -> Readiness | JSONResponse:
    """200 when at least one model is loaded; ``failed`` lists folders that did not
    load (skipped, see HEGNN_STRICT_CHECKPOINTS); 503 when no model is loaded."""
    registry = state.registry
    names = sorted(registry.predictors)
    if names:
        return Readiness(status="ready", models=names, failed=registry.failed)
    body = Readiness(status="not ready", models=[], failed=registry.failed)
    return JSONResponse(body.model_dump(), status_code=503)
