"""POST /v1/models/{name}/forces and /v1/models/{name}/trajectory.

A request is checked in this order: body schema (422), size limits (413), the
model's task (422 at ``path.name``), each structure against the model (422 naming
``structures.k.field``), then evaluated off the event loop.
"""

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

import numpy as np
from fastapi import APIRouter, Body, Depends, Request

from hegnn import keys
from service.deps import PredictorDep, ServiceState, StateDep, require_api_key
from service.errors import InputError, LimitError
from service.md import MDRun, run_md
from service.middleware import note_request
from service.predictor import Predictor, Prepared
from service.schemas import (
    FORCES_EXAMPLES,
    MD_FIELDS,
    TRAJECTORY_EXAMPLES,
    ForcesRequest,
    ForcesResponse,
    ForcesResult,
    Frame,
    Items,
    TrajectoryRequest,
    TrajectoryResponse,
    TrajectoryResult,
)
from service.settings import Settings

router = APIRouter(
    prefix="/v1/models", tags=["predict"], dependencies=[Depends(require_api_key)]
)
ERRORS = {
    401: {"description": "missing or invalid API key (when HEGNN_API_KEYS is set)"},
    404: {"description": "unknown model; the message lists the known names"},
    413: {"description": "over a limit: atoms, structures, steps, frames, body size"},
    422: {"description": "malformed input; `loc` names the field"},
    503: {"description": "the model's checkpoint failed to load"},
}
INLINE_ATOMS = 200  # requests up to this many atoms are prepared on the event loop
T = TypeVar("T")


def require_task(predictor: Predictor, task: str, endpoint: str) -> None:
    if predictor.task != task:
        hint = "forces" if predictor.task == keys.TASK_POTENTIAL else "trajectory"
        raise InputError(
            ("path", "name"),
            f"model {predictor.name!r} is a {predictor.task} model; {endpoint} needs "
            f"a {task} model (use POST /v1/models/{predictor.name}/{hint})",
        )


def check_sizes(settings: Settings, items: Items) -> int:
    """413 over the structure or atom limits; returns the number of atoms."""
    if len(items) > settings.max_structures:
        raise LimitError(
            ("body", "structures"),
            f"{len(items)} structures; this server takes at most "
            f"{settings.max_structures} per request (HEGNN_MAX_STRUCTURES)",
        )
    atoms = 0
    for prefix, structure in items:
        n = len(structure.positions)
        if n > settings.max_atoms:
            raise LimitError(
                (*prefix, "positions"),
                f"{n} atoms; this server takes at most {settings.max_atoms} per "
                "structure (HEGNN_MAX_ATOMS)",
            )
        atoms += n
    return atoms


def prepare_all(predictor: Predictor, items: Items) -> list[Prepared]:
    """Check and build every structure; the first error names its structure."""
    prepared = []
    for prefix, structure in items:
        try:
            prepared.append(predictor.prepare(structure.arrays()))
        except InputError as err:
            raise err.under(*prefix) from None
    return prepared


async def prepare(predictor: Predictor, items: Items, atoms: int) -> list[Prepared]:
    """Small requests are prepared on the event loop (under a millisecond, cheaper
    than a thread hop); large ones in a worker thread."""
    if atoms <= INLINE_ATOMS:
        return prepare_all(predictor, items)
    return await asyncio.to_thread(prepare_all, predictor, items)


async def run_timed(
    state: ServiceState,
    predictor: Predictor,
    kind: str,
    atoms: int,
    call: Callable[[], T],
) -> T:
    """Run ``call`` in the trajectory threads and record its compute time."""

    def timed() -> T:
        start = time.perf_counter()
        out = call()
        state.metrics.observe_call(
            predictor.name, kind, 1, atoms, time.perf_counter() - start
        )
        return out

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(state.trajectory_executor, timed)


@router.post(
    "/{name}/forces",
    response_model=ForcesResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
)
async def forces(
    body: Annotated[ForcesRequest, Body(openapi_examples=FORCES_EXAMPLES)],
    predictor: PredictorDep,
    state: StateDep,
    request: Request,
) -> ForcesResponse:
    """Energy (eV) and forces (eV/Å) of one structure or of ``structures``, in
    order. Concurrent requests are batched into one model call."""
    items = body.items()
    atoms = check_sizes(state.settings, items)
    note_request(request, len(items), atoms)
    require_task(predictor, keys.TASK_POTENTIAL, "forces")
    prepared = await prepare(predictor, items, atoms)
    outcomes = await state.batchers[predictor.name].forces(prepared)
    results = []
    for (prefix, _), outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, InputError):
            raise outcome.under(*prefix)
        results.append(ForcesResult(energy=outcome.energy, forces=outcome.forces))
    if body.structures is None:
        (one,) = results
        return ForcesResponse(
            model=predictor.name,
            energy=one.energy,
            forces=one.forces,
            units=predictor.units,
        )
    return ForcesResponse(
        model=predictor.name, structures=results, units=predictor.units
    )


@router.post(
    "/{name}/trajectory",
    response_model=TrajectoryResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
)
async def trajectory(
    body: Annotated[TrajectoryRequest, Body(openapi_examples=TRAJECTORY_EXAMPLES)],
    predictor: PredictorDep,
    state: StateDep,
    request: Request,
) -> TrajectoryResponse:
    """Dynamics models: positions after each Δt (``times`` in the card's time unit).
    Potential models: MD frames (step, time_fs, positions, velocities, energy)."""
    settings = state.settings
    items = body.items()
    atoms = check_sizes(settings, items)
    note_request(request, len(items), atoms)
    if body.steps > settings.max_steps:
        raise LimitError(
            ("body", "steps"),
            f"{body.steps} steps; this server runs at most {settings.max_steps} "
            "(HEGNN_MAX_STEPS)",
        )
    if body.every > body.steps:
        raise InputError(("body", "every"), f"larger than steps ({body.steps})")
    # MD frames include step 0; rollouts start after the first Δt.
    frames = body.steps // body.every + (predictor.task == keys.TASK_POTENTIAL)
    if frames > settings.max_frames:
        raise LimitError(
            ("body", "every"),
            f"{frames} frames per structure; this server returns at most "
            f"{settings.max_frames} (HEGNN_MAX_FRAMES): raise every",
        )
    prepared = await prepare(predictor, items, atoms)
    if predictor.task == keys.TASK_DYNAMICS:
        results = await _rollout(body, predictor, state, prepared, atoms)
    else:
        results = await _molecular_dynamics(body, predictor, state, items, atoms)
    if body.structures is None:
        (one,) = results
        return TrajectoryResponse(
            model=predictor.name, **one.model_dump(), units=_units(predictor)
        )
    return TrajectoryResponse(
        model=predictor.name, structures=results, units=_units(predictor)
    )


def _units(predictor: Predictor) -> dict[str, str]:
    if predictor.task == keys.TASK_DYNAMICS:
        return predictor.units
    return {**predictor.units, "velocities": "Å/fs", "time": "fs"}


async def _rollout(
    body: TrajectoryRequest,
    predictor: Predictor,
    state: ServiceState,
    prepared: Sequence[Prepared],
    atoms: int,
) -> list[TrajectoryResult]:
    for field in MD_FIELDS:
        if field in body.model_fields_set:
            raise InputError(
                ("body", field),
                "only potential models take it (server-side MD); dynamics models "
                "advance by the Δt of their card",
            )
    positions = await run_timed(
        state,
        predictor,
        "rollout",
        atoms * body.steps,
        lambda: predictor.rollout(prepared, body.steps, body.every),
    )
    times = [predictor.delta_t * k for k in range(body.every, body.steps + 1)]
    times = times[:: body.every]
    results = []
    for (prefix, _), x in zip(body.items(), positions, strict=True):
        if not np.isfinite(x).all():
            raise InputError(
                (*prefix, "positions"), "the rollout became non-finite; try fewer steps"
            )
        results.append(TrajectoryResult(positions=x.tolist(), times=times))
    return results


async def _molecular_dynamics(
    body: TrajectoryRequest,
    predictor: Predictor,
    state: ServiceState,
    items: Items,
    atoms: int,
) -> list[TrajectoryResult]:
    run = MDRun(
        timestep_fs=body.timestep_fs,
        steps=body.steps,
        every=body.every,
        temperature_K=body.temperature,
        friction_per_fs=body.friction,
        seed=body.seed,
        return_forces=body.return_forces,
    )

    def simulate() -> list[list]:
        out = []
        for prefix, structure in items:
            try:
                out.append(run_md(predictor, structure.arrays(), run))
            except InputError as err:
                raise err.under(*prefix) from None
        return out

    runs = await run_timed(state, predictor, "md", atoms * body.steps, simulate)
    return [
        TrajectoryResult(
            frames=[
                Frame(
                    step=f.step,
                    time_fs=f.time_fs,
                    positions=f.positions.tolist(),
                    velocities=f.velocities.tolist(),
                    energy=f.energy,
                    forces=None if f.forces is None else f.forces.tolist(),
                )
                for f in frames
            ]
        )
        for frames in runs
    ]
