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
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse, Response

from hegnn import keys
from hegnn_serve.service.codec import MSGPACK, pack, wants_msgpack
from hegnn_serve.service.deps import (
    PredictorDep,
    ServiceState,
    StateDep,
    require_api_key,
)
from hegnn_serve.service.errors import (
    InputError,
    InternalError,
    JobStopped,
    LimitError,
    Overloaded,
)
from hegnn_serve.service.jobs import Job
from hegnn_serve.service.md import MDRun, run_md
from hegnn_serve.service.middleware import note_request
from hegnn_serve.service.openapi import FORCES_ERRORS, FORCES_MSGPACK, JOB_ERRORS
from hegnn_serve.service.predictor import ForceResult, Predictor, Prepared
from hegnn_serve.service.schemas import (
    FORCES_EXAMPLES,
    MD_EXAMPLES,
    TRAJECTORY_EXAMPLES,
    ForcesBody,
    ForcesResponse,
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
from hegnn_serve.service.settings import Settings

router = APIRouter(
    prefix="/v1/models", tags=["predict"], dependencies=[Depends(require_api_key)]
)
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


def prepare_all(
    predictor: Predictor, items: Items, max_request_edges: int
) -> list[Prepared]:
    """Check every structure and count its edges (413 over the per-structure or
    per-request edge budget) before any graph is built; then build them. The
    first error names its structure."""
    counted = []
    total = 0
    for prefix, structure in items:
        arrays = structure.arrays()
        try:
            n_edges = predictor.check(arrays)
        except InputError as err:
            raise err.under(*prefix) from None
        total += n_edges
        counted.append((prefix, arrays, n_edges))
    if total > max_request_edges:
        raise LimitError(
            ("body",),
            f"the graphs of this request would have {total} edges, more than this "
            f"server's {max_request_edges} per request (HEGNN_MAX_REQUEST_EDGES); "
            "send fewer or smaller structures per request",
        )
    prepared = []
    for prefix, arrays, n_edges in counted:
        try:
            prepared.append(predictor.prepare(arrays, n_edges))
        except InputError as err:
            raise err.under(*prefix) from None
    return prepared


async def prepare(
    state: ServiceState, predictor: Predictor, items: Items, atoms: int
) -> list[Prepared]:
    """Small requests are prepared on the event loop (under a millisecond, cheaper
    than a thread hop); large ones in a worker thread."""
    budget = state.settings.max_request_edges
    if atoms <= INLINE_ATOMS:
        return prepare_all(predictor, items, budget)
    return await asyncio.to_thread(prepare_all, predictor, items, budget)


async def run_job(
    state: ServiceState,
    request: Request,
    predictor: Predictor,
    kind: str,
    atoms: int,
    work: Callable[[Job], T],
) -> T:
    """Run ``work(job)`` as a job (service/jobs.py: queue, deadline, cancellation
    on disconnect) and record its compute time; an exception other than an
    InputError or a stop is an InternalError (500)."""

    def timed(job: Job) -> T:
        start = time.perf_counter()
        out = work(job)
        state.metrics.observe_call(
            predictor.name, kind, 1, atoms, time.perf_counter() - start
        )
        return out

    try:
        return await state.jobs.run(predictor.name, kind, timed, request.receive)
    except (InputError, JobStopped, Overloaded):
        raise
    except Exception as err:
        raise InternalError(f"the {kind} of model {predictor.name} failed") from err


@router.post(
    "/{name}/forces",
    response_model=ForcesResponse,
    response_model_exclude_none=True,
    responses=FORCES_ERRORS,
    openapi_extra=FORCES_MSGPACK,
)
async def forces(
    body: Annotated[ForcesBody, Body(openapi_examples=FORCES_EXAMPLES)],
    predictor: ForcesModel,
    state: StateDep,
    request: Request,
) -> Response:
    """Potential models: energy (eV) and forces (eV/Å) of one structure or of
    ``structures``, in order. Concurrent requests are batched into one model call.
    JSON, or msgpack with ``Accept: application/msgpack`` (forces as float64
    bytes, see the request body's msgpack form)."""
    items = body.items()
    atoms = check_sizes(state.settings, items)
    note_request(request, len(items), atoms)
    prepared = await prepare(state, predictor, items, atoms)
    outcomes = await state.batchers[predictor.name].forces(prepared)
    results = []
    for (prefix, _), outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, InputError):
            raise outcome.under(*prefix)
        if isinstance(outcome, InternalError):
            raise outcome
        results.append(outcome)
    state.metrics.observe_uncertainty(predictor, results)
    return forces_response(
        predictor, results, body.batch, wants_msgpack(request.headers.get("accept"))
    )


def forces_response(
    predictor: Predictor, results: list[ForceResult], batch: bool, binary: bool
) -> Response:
    """The ``ForcesResponse`` layout, encoded here rather than by FastAPI's
    response validation (which walks every force twice more): JSON, or msgpack
    with forces as float64 bytes."""

    def array(values: np.ndarray) -> np.ndarray | list:
        return values if binary else values.tolist()

    def result(r: ForceResult) -> dict[str, Any]:
        found = {"energy": r.energy, "forces": array(r.forces)}
        if r.forces_std is not None:
            found["energy_std"] = r.energy_std
            found["forces_std"] = array(r.forces_std)
            found["max_force_std"] = r.max_force_std
        return found

    answer: dict[str, Any] = {"model": predictor.name}
    if batch:
        answer["structures"] = [result(r) for r in results]
    else:
        answer.update(result(results[0]))
    answer["units"] = predictor.units
    if binary:
        return Response(pack(answer), media_type=MSGPACK)
    return JSONResponse(answer)


@router.post(
    "/{name}/trajectory",
    response_model=TrajectoryResponse,
    response_model_exclude_none=True,
    responses=JOB_ERRORS,
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
    prepared = await prepare(state, predictor, items, atoms)
    positions = await run_job(
        state,
        request,
        predictor,
        "rollout",
        atoms * body.steps,
        lambda job: predictor.rollout(prepared, body.steps, body.every, job.check),
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
    responses=JOB_ERRORS,
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
    await prepare(state, predictor, items, atoms)  # every start state, before MD
    runs = await run_job(
        state,
        request,
        predictor,
        "md",
        atoms * body.steps,
        lambda job: _simulate(predictor, items, body, job.check),
    )
    results = [MDResult(frames=frames) for frames in runs]
    units = dict(keys.MD_UNITS)
    if body.batch:
        return MDResponse(model=predictor.name, structures=results, units=units)
    (one,) = results
    return MDResponse(model=predictor.name, frames=one.frames, units=units)


def _simulate(
    predictor: Predictor,
    items: Items,
    params: MDParams,
    check: Callable[[], None] | None = None,
) -> list[list[MDFrame]]:
    """Worker thread: one MD run per structure, in order; ``check`` between steps."""
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
            frames = run_md(predictor, structure.arrays(), run, check)
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
