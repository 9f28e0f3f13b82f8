"""Input errors that name a field, and how they become HTTP answers.

``InputError`` is raised below HTTP (predictor, batcher) with ``loc``, the path of
the offending field; the handler turns it into FastAPI's 422 body
``{"detail": [{"loc": [...], "msg": ..., "type": "value_error"}]}``. ``LimitError``
(a size limit) becomes ``413 {"detail": "<field>: <message>"}``, ``Overloaded`` (a
full queue) ``503`` with ``Retry-After``.
"""

import logging
import math

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

logger = logging.getLogger(__name__)

Loc = tuple[str | int, ...]
MAX_ERRORS = 20  # validation errors listed per answer


class InputError(ValueError):
    """Input a model cannot take; ``loc`` is the field path, e.g. ``("numbers",)``."""

    status_code = 422

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {message}")
        self.loc = tuple(loc)
        self.message = message

    def under(self, *prefix: str | int) -> "InputError":
        """The same error with ``prefix`` put before its field path."""
        return type(self)((*prefix, *self.loc), self.message)


class LimitError(InputError):
    """A size limit of this server (atoms, structures, steps, edges) was exceeded."""

    status_code = 413


class Overloaded(RuntimeError):
    """Too much work is queued for a model; the client should retry later."""


async def overloaded_handler(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After: the queue is full, nothing is wrong with the input."""
    return JSONResponse(
        {"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"}
    )


async def input_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 in FastAPI's validation layout, or 413 with a message naming the field."""
    assert isinstance(exc, InputError)
    if isinstance(exc, LimitError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)
    detail = [{"loc": list(exc.loc), "msg": exc.message, "type": "value_error"}]
    return JSONResponse({"detail": detail}, status_code=exc.status_code)


def _plain(value: object) -> object:
    """A JSON-safe copy of an error context value (NaN and objects as text)."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 layout without echoing the input (it may hold NaN, and be big);
    at most MAX_ERRORS errors are listed."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    detail = []
    for error in errors[:MAX_ERRORS]:
        item = {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        if error.get("ctx"):
            item["ctx"] = {k: _plain(v) for k, v in error["ctx"].items()}
        detail.append(item)
    if len(errors) > MAX_ERRORS:
        more = len(errors) - MAX_ERRORS
        detail.append({"loc": ["body"], "msg": f"and {more} more", "type": "more"})
    return JSONResponse({"detail": detail}, status_code=422)


async def internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not an input problem: log it and answer JSON 500 with the request id."""
    request_id = request.scope.get("state", {}).get("request_id", "?")
    logger.exception("unhandled error in request %s", request_id)
    return JSONResponse(
        {"detail": f"internal error (request id {request_id})"}, status_code=500
    )
