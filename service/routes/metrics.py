"""GET /metrics: Prometheus text of this app's registry. No auth: scrapers."""

from fastapi import APIRouter, Response

from hegnn_serve.service.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Requests by route and status, latency, batch sizes, queue wait, compute time,
    atoms per second."""
    m = state.metrics
    return Response(m.render(), media_type=m.content_type)
