"""How errors become HTTP answers; each kind is mapped here, once.

- ``InputError`` (hegnn's typed error, re-exported) names the offending field by
  ``loc``; raised by the input rules, the predictor and the routes, it becomes
  FastAPI's 422 layout ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``.
- ``LimitError``, an InputError over a size limit of this server: ``413 {"detail":
  "<field>: <message>"}``.
- ``Overloaded`` (a full queue): ``503`` with ``Retry-After``.
- ``JobStopped`` (a /trajectory or /md job stopped before its end, see
  service/jobs.py): its ``status`` (499 client gone, 503 with ``Retry-After``
  shutting down or waited past the deadline, 504 ran past the deadline) with
  ``{"detail": message}``.
- ``InternalError`` (a model call that raised; a failed batch) and any other
  exception: logged, ``500 {"detail": "internal error (request id ...)"}``.
"""

import logging
import math
from collections.abc import Iterable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from hegnn.errors import InputError, Loc
from hegnn_serve.service.schemas import FORMS

logger = logging.getLogger(__name__)

MAX_ERRORS = 20  # validation errors listed per answer

__all__ = [
    "InputError",
    "InternalError",
    "JobStopped",
    "LimitError",
    "Loc",
    "Overloaded",
    "input_error_handler",
    "internal_error_handler",
    "job_stopped_handler",
    "overloaded_handler",
    "validation_error_handler",
]


class LimitError(InputError):
    """A size limit of this server (atoms, structures, steps, frames, edges)."""


class Overloaded(RuntimeError):
    """Too much work is queued for a model; the client should retry later."""


RETRY_AFTER_S = 1


class JobStopped(Exception):
    """A job stopped before its end; ``status`` is the HTTP answer."""

    reason = "stopped"
    status = 503
    retry_after: int | None = None


class JobCancelled(JobStopped):
    """The client went away."""

    reason = "cancelled"
    status = 499


class JobTimeout(JobStopped):
    """The job ran past its deadline."""

    reason = "timeout"
    status = 504


class ShuttingDown(JobStopped):
    """The server is draining; the job was stopped or never started."""

    reason = "shutdown"
    status = 503
    retry_after = RETRY_AFTER_S


class QueueTimeout(JobStopped):
    """The deadline passed while the job waited for a thread (server busy)."""

    reason = "queue_timeout"
    status = 503
    retry_after = RETRY_AFTER_S


class InternalError(RuntimeError):
    """The server failed, not the input (e.g. a model call raised). The message is
    ours and safe to show; the cause is in the log."""


async def overloaded_handler(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After: the queue is full, nothing is wrong with the input."""
    return JSONResponse(
        {"detail": str(exc)},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def job_stopped_handler(request: Request, exc: Exception) -> JSONResponse:
    """A job stopped before its end: its status and message (see service/jobs.py)."""
    assert isinstance(exc, JobStopped)
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)


async def input_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 in FastAPI's validation layout, or 413 with a message naming the field."""
    assert isinstance(exc, InputError)
    if isinstance(exc, LimitError):
        return JSONResponse({"detail": str(exc)}, status_code=413)
    detail = [{"loc": list(exc.loc), "msg": exc.message, "type": "value_error"}]
    return JSONResponse({"detail": detail}, status_code=422)


def _plain(value: object) -> object:
    """A JSON-safe copy of an error context value (NaN and objects as text)."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)


def _public_loc(loc: Iterable[str | int]) -> list[str | int]:
    """The field path without the tag of a one-or-many body (see schemas.FORMS)."""
    loc = list(loc)
    if len(loc) > 1 and loc[0] == "body" and loc[1] in FORMS:
        del loc[1]
    return loc


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 layout without echoing the input (it may hold NaN, and be big);
    at most MAX_ERRORS errors are listed."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    detail = []
    for error in errors[:MAX_ERRORS]:
        item = {"loc": _public_loc(error["loc"]), "msg": error["msg"]}
        item["type"] = error["type"]
        if error.get("ctx"):
            item["ctx"] = {k: _plain(v) for k, v in error["ctx"].items()}
        detail.append(item)
    if len(errors) > MAX_ERRORS:
        more = len(errors) - MAX_ERRORS
        detail.append({"loc": ["body"], "msg": f"and {more} more", "type": "more"})
    return JSONResponse({"detail": detail}, status_code=422)


async def internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A failure of the server, not of the input: log it and answer JSON 500 with
    the request id (also in the X-Request-ID header of InternalError answers)."""
    request_id = request.scope.get("state", {}).get("request_id", "?")
    logger.error("internal error in request %s: %r", request_id, exc, exc_info=exc)
    detail = f"internal error (request id {request_id})"
    if isinstance(exc, InternalError):
        detail += f": {exc}"
    return JSONResponse({"detail": detail}, status_code=500)
