"""The OpenAPI document states every status a route answers, with its body schema.

``error_responses(...)`` builds a route's ``responses``; ``FORCES_MSGPACK`` adds the
binary form of /forces (service/codec.py); ``openapi_for(app,
settings)`` removes the bearer scheme and the 401s when ``HEGNN_API_KEYS`` is empty
(auth off), so the document matches the server it came from.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from hegnn_serve.service.schemas import ErrorMessage

ERROR = {"model": ErrorMessage}
DESCRIPTIONS = {
    400: "the body could not be decoded (e.g. not UTF-8); text that is not JSON "
    "is a 422 of type `json_invalid`",
    401: "missing or invalid API key (only when the server sets HEGNN_API_KEYS)",
    404: "unknown model; the message lists the known names",
    408: "the body did not arrive within HEGNN_BODY_TIMEOUT_S; connection closed",
    413: "over a limit: body size, atoms, structures, graph edges (per structure "
    "and per request), steps, frames; the message names the field and the setting",
    422: "malformed input, `loc` names the field; a model of the wrong kind: `loc` "
    "is `[path, name]` and the message names the right endpoint",
    500: "internal error; the message gives the request id",
    503: "the model failed to load, or its queue is full (`Retry-After`)",
}
JOBS_503 = (
    "the model failed to load; its job queue is full (HEGNN_MAX_QUEUED_JOBS); the "
    "job waited past HEGNN_JOB_TIMEOUT_S for a worker; or the server is shutting "
    "down: retry after `Retry-After` seconds"
)
RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer"},
    }
}


def error_responses(*statuses: int, **overrides: str) -> dict[int | str, Any]:
    """``responses`` for these statuses; ``overrides`` maps ``"s503"`` to another
    description."""
    out: dict[int | str, Any] = {}
    for status in statuses:
        description = overrides.get(f"s{status}", DESCRIPTIONS[status])
        response: dict[str, Any] = {**ERROR, "description": description}
        if status == 503:
            response["headers"] = RETRY_AFTER
        if status == 422:
            response = {"description": description}  # FastAPI's validation schema
        out[status] = response
    return out


LIST_ERRORS = error_responses(401, 500)
MODEL_ERRORS = error_responses(401, 404, 500, 503)
FORCES_ERRORS = error_responses(400, 401, 404, 408, 413, 422, 500, 503)
# /forces also takes and answers msgpack (service/codec.py): the MD client's form.
BINARY = {"type": "string", "format": "binary"}
FORCES_MSGPACK: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/msgpack": {
                "schema": {
                    **BINARY,
                    "description": "the JSON body's fields as a msgpack map; "
                    "positions, cell ([n, 3]) may be bin: float64 little-endian, "
                    "row-major",
                }
            }
        }
    },
    "responses": {
        "200": {
            "description": "energy (eV) and forces (eV/Å): JSON, or msgpack with "
            "`Accept: application/msgpack` (forces: bin, [n_atoms, 3] float64 "
            "little-endian)",
            "content": {"application/msgpack": {"schema": BINARY}},
        }
    },
}
JOB_ERRORS = {
    **error_responses(400, 401, 404, 408, 413, 422, 500, 503, s503=JOBS_503),
    504: {
        **ERROR,
        "description": "the job ran past HEGNN_JOB_TIMEOUT_S and was stopped; ask "
        "for fewer steps or structures",
    },
}


def openapi_for(app: FastAPI, auth: bool) -> dict[str, Any]:
    """The app's OpenAPI document; without API keys, no security and no 401s."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    if not auth:
        schema.get("components", {}).pop("securitySchemes", None)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.pop("security", None)
                operation.get("responses", {}).pop("401", None)
    app.openapi_schema = schema
    return schema
