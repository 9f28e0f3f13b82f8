"""POST /v1/models/{name}/forces, /trajectory (dynamics rollouts) and /md (MD with a
potential model).

A request is checked in this order: API key (401), the model (404, 503 if it failed
to load, 422 at ``path.name`` naming the right endpoint when it is the wrong kind),
body schema (422), size limits (413), each structure against the model (422 naming
``structures.k.field``); then it is evaluated off the event loop. A failure of the
evaluation itself is a 500 with the request id.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, TypeVar

import numpy as np
from fastapi import APIRouter, Body, Depends, Request

from hegnn import keys
from service.deps import PredictorDep, ServiceState, StateDep, require_api_key
from service.errors import InputError, InternalError, LimitError
from service.md import MDRun, run_md
from service.middleware import note_request
from service.predictor import Predictor, Prepared
from service.schemas import (
    FORCES_EXAMPLES,
    MD_EXAMPLES,
    TRAJECTORY_EXAMPLES,
    ForcesBody,
    ForcesResponse,
    ForcesResult,
    Items,
    MDBody,
    MDFrame,
    MDParams,
    MDResponse,
    MDResult,
    RolloutParams,
    TrajectoryBody,
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
    422: {
        "description": "malformed input, `loc` names the field; a model of the wrong "
        "kind: `loc` is `[path, name]` and the message names the right endpoint"
    },
    500: {"description": "internal error; the body gives the request id"},
    503: {"description": "the model failed to load, or its queue is full"},
}
INLINE_ATOMS = 200  # requests up to this many atoms are prepared on the event loop
T = TypeVar("T")

# What each endpoint does, and which endpoint to use instead with the other task.
PURPOSE = {
    "forces": "energy and forces",
    "md": "server-side MD",
    "trajectory": "learned rollouts",
}
INSTEAD = {
    ("forces", keys.TASK_DYNAMICS): "trajectory",
    ("trajectory", keys.TASK_POTENTIAL): "md",
    ("md", keys.TASK_DYNAMICS): "trajectory",
}


def model_for(endpoint: str, task: str) -> object:
    """A dependency: the path's model if it is a ``task`` model, else a 422 at
    ``path.name`` naming the endpoint for its kind (before the body is checked)."""

    async def dependency(predictor: PredictorDep) -> Predictor:
        if predictor.task != task:
            name = predictor.name
            instead = INSTEAD[endpoint, predictor.task]
            raise InputError(
                ("path", "name"),
                f"model {name!r} is a {predictor.task} model; /{endpoint} "
                f"({PURPOSE[endpoint]}) takes {task} models only: use "
                f"POST /v1/models/{name}/{instead} ({PURPOSE[instead]})",
            )
        return predictor

    return Depends(dependency)


ForcesModel = Annotated[Predictor, model_for("forces", keys.TASK_POTENTIAL)]
DynamicsModel = Annotated[Predictor, model_for("trajectory", keys.TASK_DYNAMICS)]
MDModel = Annotated[Predictor, model_for("md", keys.TASK_POTENTIAL)]


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
                (*prefix, keys.POSITIONS),
                f"{n} atoms; this server takes at most {settings.max_atoms} per "
                "structure (HEGNN_MAX_ATOMS)",
            )
        atoms += n
    return atoms


def check_run(settings: Settings, run: RolloutParams, frames: int) -> None:
    """413 over the step or frame limits."""
    if run.steps > settings.max_steps:
        raise LimitError(
            ("body", "steps"),
            f"{run.steps} steps; this server runs at most {settings.max_steps} "
            "(HEGNN_MAX_STEPS)",
        )
    if frames > settings.max_frames:
        raise LimitError(
            ("body", "every"),
            f"{frames} frames per structure; this server returns at most "
            f"{settings.max_frames} (HEGNN_MAX_FRAMES): raise every",
        )


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
    """Run ``call`` in the trajectory threads and record its compute time; an
    exception other than an InputError is an InternalError (500)."""

    def timed() -> T:
        start = time.perf_counter()
        out = call()
        state.metrics.observe_call(
            predictor.name, kind, 1, atoms, time.perf_counter() - start
        )
        return out

    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(state.trajectory_executor, timed)
    except InputError:
        raise
    except Exception as err:
        raise InternalError(f"the {kind} of model {predictor.name} failed") from err


@router.post(
    "/{name}/forces",
    response_model=ForcesResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
)
async def forces(
    body: Annotated[ForcesBody, Body(openapi_examples=FORCES_EXAMPLES)],
    predictor: ForcesModel,
    state: StateDep,
    request: Request,
) -> ForcesResponse:
    """Potential models: energy (eV) and forces (eV/Å) of one structure or of
    ``structures``, in order. Concurrent requests are batched into one model call."""
    items = body.items()
    atoms = check_sizes(state.settings, items)
    note_request(request, len(items), atoms)
    prepared = await prepare(predictor, items, atoms)
    outcomes = await state.batchers[predictor.name].forces(prepared)
    results = []
    for (prefix, _), outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, InputError):
            raise outcome.under(*prefix)
        if isinstance(outcome, InternalError):
            raise outcome
        results.append(ForcesResult(energy=outcome.energy, forces=outcome.forces))
    units = predictor.units
    if body.batch:
        return ForcesResponse(model=predictor.name, structures=results, units=units)
    (one,) = results
    return ForcesResponse(
        model=predictor.name, energy=one.energy, forces=one.forces, units=units
    )


@router.post(
    "/{name}/trajectory",
    response_model=TrajectoryResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
)
async def trajectory(
    body: Annotated[TrajectoryBody, Body(openapi_examples=TRAJECTORY_EXAMPLES)],
    predictor: DynamicsModel,
    state: StateDep,
    request: Request,
) -> TrajectoryResponse:
    """Dynamics models: positions after each Δt of the card, autoregressively,
    every ``every``-th kept; ``times`` in the card's time unit. For MD with a
    potential model use ``/md``."""
    items = body.items()
    atoms = check_sizes(state.settings, items)
    note_request(request, len(items), atoms)
    check_run(state.settings, body, body.steps // body.every)
    prepared = await prepare(predictor, items, atoms)
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
    for (prefix, _), x in zip(items, positions, strict=True):
        if not np.isfinite(x).all():
            raise InputError(
                (*prefix, keys.POSITIONS),
                "the rollout became non-finite; try fewer steps",
            )
        results.append(TrajectoryResult(positions=x.tolist(), times=times))
    units = predictor.units
    if body.batch:
        return TrajectoryResponse(model=predictor.name, structures=results, units=units)
    (one,) = results
    return TrajectoryResponse(
        model=predictor.name, positions=one.positions, times=one.times, units=units
    )


@router.post(
    "/{name}/md",
    response_model=MDResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
)
async def md(
    body: Annotated[MDBody, Body(openapi_examples=MD_EXAMPLES)],
    predictor: MDModel,
    state: StateDep,
    request: Request,
) -> MDResponse:
    """Potential models: server-side MD, velocity Verlet (NVE), or Langevin when
    ``temperature`` is given; frames at step 0 and every ``every``-th step
    (positions, velocities, potential energy, optionally forces). For a dynamics
    model's rollout use ``/trajectory``."""
    items = body.items()
    atoms = check_sizes(state.settings, items)
    note_request(request, len(items), atoms)
    check_run(state.settings, body, body.steps // body.every + 1)  # with step 0
    await prepare(predictor, items, atoms)  # every start state, before any MD
    runs = await run_timed(
        state,
        predictor,
        "md",
        atoms * body.steps,
        lambda: _simulate(predictor, items, body),
    )
    results = [MDResult(frames=frames) for frames in runs]
    units = dict(keys.MD_UNITS)
    if body.batch:
        return MDResponse(model=predictor.name, structures=results, units=units)
    (one,) = results
    return MDResponse(model=predictor.name, frames=one.frames, units=units)


def _simulate(
    predictor: Predictor, items: Items, params: MDParams
) -> list[list[MDFrame]]:
    """Worker thread: one MD run per structure, in order."""
    run = MDRun(
        timestep_fs=params.timestep_fs,
        steps=params.steps,
        every=params.every,
        temperature_K=params.temperature,
        friction_per_fs=params.friction,
        seed=params.seed,
        return_forces=params.return_forces,
    )
    runs: list[list[MDFrame]] = []
    for prefix, structure in items:
        try:
            frames = run_md(predictor, structure.arrays(), run)
        except InputError as err:
            raise err.under(*prefix) from None
        runs.append(
            [
                MDFrame(
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
    return runs
