"""GET /v1/models and GET /v1/models/{name}: model cards."""

from typing import Any

from fastapi import APIRouter, Depends

from hegnn_serve.service.deps import PredictorDep, StateDep, require_api_key
from hegnn_serve.service.openapi import LIST_ERRORS, MODEL_ERRORS
from hegnn_serve.service.schemas import ModelList

router = APIRouter(
    prefix="/v1/models", tags=["models"], dependencies=[Depends(require_api_key)]
)


@router.get("", response_model=ModelList, responses=LIST_ERRORS)
async def list_models(state: StateDep) -> ModelList:
    """Summaries (name, task, species, units, metrics, delta_t, architecture) of
    every loaded model, and the folders that failed to load."""
    registry = state.registry
    return ModelList(
        models=[p.summary() for p in registry.predictors.values()],
        unavailable=[
            {"name": name, "error": error} for name, error in registry.failed.items()
        ],
    )


@router.get("/{name}", response_model=dict[str, Any], responses=MODEL_ERRORS)
async def get_model(predictor: PredictorDep) -> dict[str, Any]:
    """The full card.json of a model (``name`` is the folder name)."""
    return {**predictor.card.model_dump(mode="json"), "name": predictor.name}
