"""ASGI middleware: request id, one JSON log line and metrics per request; body size
limit and body read timeout (408); POST bodies read as JSON (msgpack bodies decoded
to it); force requests counted for the batcher.

The log line holds request id, method, path, route, model, structures, atoms,
status and ms; routes add model/structures/atoms through ``note_request``.
"""

import asyncio
import itertools
import json
import logging
import secrets
import time

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hegnn_serve.service.batching import Arrivals
from hegnn_serve.service.codec import (
    BinaryBodyError,
    as_json_body,
    unpack,
    wants_msgpack,
)
from hegnn_serve.service.metrics import Metrics

logger = logging.getLogger("service.access")

REQUEST_ID_HEADER = b"x-request-id"


def note_request(request: Request, structures: int, atoms: int) -> None:
    """Let the access log say how much work a request carried."""
    request.state.structures = structures
    request.state.atoms = atoms


_PROCESS = secrets.token_hex(4)  # request ids: process prefix + counter
_COUNTER = itertools.count()


def _request_id(scope: Scope) -> str:
    """The client's X-Request-ID if sane, else a new process-unique id."""
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            if 0 < len(text) <= 64 and text.isprintable():
                return text
    return f"{_PROCESS}-{next(_COUNTER):07d}"


class RequestLogMiddleware:
    """Times every HTTP request, counts it by route template and status, logs it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        request_id = state["request_id"] = _request_id(scope)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, state, status, time.perf_counter() - start)

    def _record(self, scope: Scope, state: dict, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        method = scope["method"]
        self.metrics.requests.labels(method, route, str(status)).inc()
        self.metrics.latency.labels(method, route).observe(seconds)
        if logger.isEnabledFor(logging.INFO):
            record = {
                "request_id": state["request_id"],
                "method": method,
                "path": scope["path"],
                "route": route,
                "model": scope.get("path_params", {}).get("name"),
                "structures": state.get("structures"),
                "atoms": state.get("atoms"),
                "status": status,
                "ms": round(seconds * 1000, 3),
            }
            logger.info(json.dumps(record, ensure_ascii=False))


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"body: larger than this server's {limit} bytes (HEGNN_MAX_BODY_BYTES)"
        )


class BodySizeLimitMiddleware:
    """413 for a body over ``max_bytes``: by Content-Length, or counted as it streams.

    A streamed body over the limit raises ``BodyTooLarge`` (an HTTPException) from
    ``receive``; FastAPI re-raises HTTPExceptions met while reading the body, so it
    becomes a JSON 413 like any other.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit():
                if int(value) > self.max_bytes:
                    await self._reject(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = BodyTooLarge(self.max_bytes)
        body = json.dumps({"detail": error.detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class BodyTimeout(HTTPException):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            408,
            f"body: not received within this server's {timeout_s:g} s "
            "(HEGNN_BODY_TIMEOUT_S); the connection is closed",
            headers={"Connection": "close"},
        )


class BodyTimeoutMiddleware:
    """408 and a closed connection when a request body is not complete within
    ``timeout_s`` of the request's start (a stalled upload, a Content-Length larger
    than what is sent, a slowloris client trickling bytes).

    The deadline holds for the whole body, not per read, so a trickle of bytes does
    not extend it. ``receive`` raises ``BodyTimeout`` (an HTTPException, which
    FastAPI re-raises while reading the body, like ``BodyTooLarge``). Once the body
    is complete, ``receive`` is passed through untouched (it then waits for the
    client's disconnect, which long jobs watch for).
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                complete = True
                raise BodyTimeout(self.timeout_s) from None
            if message["type"] != "http.request" or not message.get("more_body"):
                complete = True
            return message

        await self.app(scope, timed_receive, send)


class JSONBodyMiddleware:
    """Read every POST body as JSON whatever its Content-Type (the API takes nothing
    else, and ``curl -d`` sends form encoding by default), except a msgpack body
    (service/codec.py): it is decoded and handed on as the JSON body it stands for,
    so that both pass the same validation. A msgpack body that cannot be read is a
    422 naming the field (raised from ``receive``, like ``BodyTooLarge``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        binary = False
        headers = []
        for name, value in scope["headers"]:
            if name == b"content-type":
                binary = wants_msgpack(value)
            else:
                headers.append((name, value))
        headers.append((b"content-type", b"application/json"))
        scope["headers"] = headers  # in place: outer middleware reads this scope
        await self.app(scope, _msgpack_as_json(receive) if binary else receive, send)


def _msgpack_as_json(receive: Receive) -> Receive:
    """``receive`` that hands on a msgpack body, once complete, as JSON."""
    done = False

    async def as_json() -> Message:
        nonlocal done
        if done:
            return await receive()
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        done = True
        try:
            body = as_json_body(unpack(b"".join(chunks)))
            text = json.dumps(body, allow_nan=True).encode()
        except BinaryBodyError as err:
            raise _unreadable(err.loc, err.message) from None
        except (TypeError, ValueError):
            raise _unreadable(
                ("body",),
                "msgpack values must be maps, arrays, strings, numbers, booleans or "
                "nil; bin only for positions, velocities, cell and charges",
            ) from None
        return {"type": "http.request", "body": text, "more_body": False}

    return as_json


def _unreadable(loc: tuple[str | int, ...], message: str) -> HTTPException:
    """A 422 in FastAPI's validation layout (``detail: [{loc, msg, type}]``)."""
    error = {"loc": list(loc), "msg": message, "type": "msgpack_invalid"}
    return HTTPException(422, [error])


class ArrivalsMiddleware:
    """Counts force requests per model from their first byte (see Arrivals)."""

    def __init__(self, app: ASGIApp, arrivals: Arrivals) -> None:
        self.app = app
        self.arrivals = arrivals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = scope["path"].split("/") if scope["type"] == "http" else []
        # /v1/models/{name}/forces -> ["", "v1", "models", name, "forces"]
        if len(parts) != 5 or parts[4] != "forces" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        self.arrivals.enter(parts[3])
        try:
            await self.app(scope, receive, send)
        finally:
            self.arrivals.leave(parts[3])
