"""HTTP client for a hegnn-serve server: arrays in (Å), arrays out (eV, eV/Å).

``HEGNNClient`` has ``forces`` (potential models), ``md`` (server-side MD with a
potential model) and ``trajectory`` (a dynamics model's rollout). Imports only numpy,
httpx, msgpack and ase (never torch), so it runs in any MD environment. One
``httpx.Client`` is reused for every call (keep-alive, TCP_NODELAY); ``forces`` talks
msgpack (service/codec.py) unless ``binary=False``.

Retries: every call of the API is a pure function of its request (the server keeps no
state between requests), so sending one again can only cost time, never change a
result. A call is retried, with capped exponential back-off and the server's
``Retry-After``, when no answer came: the connection failed or dropped (a replica
restarting, a proxy closing a kept-alive connection), or a proxy or the server said
so: 502 and 503 (no healthy replica, a full queue, a server shutting down), 429 (too
many requests), and a 500 or 504 that the service did not write (a proxy's: Ray
Serve's answers 500 for a replica that died mid-request). The service's own 500 (a
model call raised) and 504 (a job ran past HEGNN_JOB_TIMEOUT_S) are JSON with a
``detail`` and final: a repeat would fail the same way. Other HTTP errors raise
:class:`HEGNNServiceError` at once with the server's message; a read timeout is not
retried (the server may still be working on it).
"""

import email.utils
import logging
import random
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import numpy as np
from ase import Atoms, units
from numpy.typing import ArrayLike, NDArray

from hegnn_serve.service.codec import (
    MSGPACK,
    float_array,
    pack,
    unpack,
    wants_msgpack,
)

logger = logging.getLogger(__name__)

Structure = Atoms | Mapping[str, Any]

# httpx writes a POST's headers and body in two sends; with Nagle's algorithm the body
# waits for the ACK of the headers, which the server may delay by ~40 ms.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]

# Transport failures where the request did not reach a live server (or the server
# dropped a kept-alive connection): safe to retry. Read timeouts are not retried.
RETRYABLE = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)

# Statuses that mean "not now" rather than "not this request": retried with back-off.
RETRY_STATUSES = frozenset({429, 502, 503})
# Retried only when a proxy wrote them, not the service (see _retryable).
PROXY_RETRY_STATUSES = frozenset({500, 504})


def _from_service(response: httpx.Response) -> bool:
    """The answer has the service's JSON error body ``{"detail": ...}``."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "detail" in body


def _retryable(response: httpx.Response) -> bool:
    """Worth sending again (module docstring): 429/502/503, or a proxy's 500/504
    (the service's own 500 and 504 are final)."""
    if response.status_code in RETRY_STATUSES:
        return True
    return response.status_code in PROXY_RETRY_STATUSES and not _from_service(response)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HEGNNServiceError(Exception):
    """The server answered with an HTTP error (4xx/5xx).

    ``status_code``: the HTTP status; ``detail``: the ``detail`` field of the JSON body
    (a string, or FastAPI's list of ``{"loc", "msg"}``); ``message``: one readable line.
    """

    def __init__(self, status_code: int, detail: Any, message: str) -> None:
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.detail = detail
        self.message = message


class HEGNNConnectionError(ConnectionError):
    """No answer: the server could not be reached after all retries, or a request
    got no answer within the timeout."""


@dataclass(frozen=True)
class ForcesResult:
    """One structure's energy (eV) and forces ``[n_atoms, 3]`` (eV/Å, float64);
    from a committee also ``energy_std`` (eV), ``forces_std`` ``[n_atoms]`` and
    ``max_force_std`` (eV/Å), else None."""

    energy: float
    forces: NDArray[np.float64]
    energy_std: float | None = None
    forces_std: NDArray[np.float64] | None = None
    max_force_std: float | None = None


@dataclass(frozen=True)
class Trajectory:
    """A dynamics model's rollout from ``/trajectory``.

    ``positions: [n_frames, n_atoms, 3]`` after each kept Δt and ``times:
    [n_frames]``, in the units of the model card (``raw["units"]``); ``raw``: the
    decoded JSON answer.
    """

    positions: NDArray[np.float64]
    times: NDArray[np.float64]
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MDTrajectory:
    """Server-side MD frames from ``/md``: step 0 and every ``every``-th step.

    ``steps: [n_frames]``; ``times: [n_frames]`` fs; ``positions`` and
    ``velocities: [n_frames, n_atoms, 3]`` Å and Å/fs; ``energies: [n_frames]``
    potential energy, eV; ``forces: [n_frames, n_atoms, 3]`` eV/Å with
    ``return_forces``, else None. ``raw``: the decoded JSON answer.
    """

    steps: NDArray[np.int64]
    times: NDArray[np.float64]
    positions: NDArray[np.float64]
    velocities: NDArray[np.float64]
    energies: NDArray[np.float64]
    forces: NDArray[np.float64] | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def _error_message(detail: Any) -> str:
    """FastAPI's ``detail`` as one line: ``"positions: expected ...; steps: ..."``."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = [str(p) for p in item.get("loc", ()) if p != "body"]
                msg = str(item.get("msg", item))
                parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def _array(values: ArrayLike, dtype: type = np.float64) -> list:
    """An array as nested lists for JSON (float64 round-trips exactly)."""
    return np.asarray(values, dtype=dtype).tolist()


FLOAT_FIELDS = frozenset({"positions", "velocities", "cell", "charges"})


def structure_json(
    structure: Structure, velocities: bool = False, binary: bool = False
) -> dict[str, Any]:
    """One structure as the body of the API (JSON; ``binary``: for msgpack, float
    arrays kept as float64 numpy arrays, which service.codec.pack sends as bytes).

    ``ase.Atoms``: numbers, positions (Å) and, when any pbc, cell (Å) and pbc; with
    ``velocities``, also velocities (Å/fs) when the Atoms has momenta. A mapping is
    passed through with arrays turned into lists; keys are the API's field names
    (``numbers, positions, velocities, charges, cell, pbc``).
    """

    def floats(values: ArrayLike) -> Any:
        if binary:
            return np.asarray(values, dtype=np.float64)
        return _array(values)

    if isinstance(structure, Atoms):
        body: dict[str, Any] = {
            "numbers": _array(structure.numbers, np.int64),
            "positions": floats(structure.positions),
        }
        if structure.pbc.any():
            body["cell"] = floats(structure.cell.array)
            body["pbc"] = [bool(p) for p in structure.pbc]
        if velocities and structure.has("momenta"):
            body["velocities"] = floats(structure.get_velocities() * units.fs)
        return body
    body = {}
    for key, value in structure.items():
        if (
            binary
            and key in FLOAT_FIELDS
            and isinstance(value, np.ndarray)
            and value.dtype.kind in "fiu"
        ):
            value = floats(value)
        elif isinstance(value, np.ndarray | list | tuple):
            dtype = np.int64 if key == "numbers" else None
            value = np.asarray(value, dtype=dtype).tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        body[key] = value
    return body


def _is_many(structures: Structure | Sequence[Structure]) -> bool:
    return not isinstance(structures, Atoms | Mapping)


class HEGNNClient:
    """Calls a hegnn-serve server over one kept-alive HTTP connection.

    ``url``: e.g. ``http://127.0.0.1:8000``; ``api_key``: sent as
    ``Authorization: Bearer``; ``timeout``: seconds per request (connect, read, write);
    ``retries``: extra attempts after a dropped connection or a retryable status (see
    the module's docstring), waiting ``backoff * 2**k`` seconds before attempt k + 1
    (the server's ``Retry-After`` when longer), at most ``max_backoff``, less a random
    part of up to a half so that clients do not retry in step (defaults: 0.1 s, 0.2 s,
    0.4 s, ... up to 5 s; 5 retries wait at most 3.1 s in all); ``transport``: an
    httpx transport (default: TCP_NODELAY sockets; ``httpx.MockTransport`` in tests);
    ``binary``: ``forces`` sends and receives msgpack with float64 arrays as bytes
    (service/codec.py) rather than JSON (the same numbers, less work on both sides).
    ``http`` is the ``httpx.Client``.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.1,
        transport: httpx.BaseTransport | None = None,
        max_backoff: float = 5.0,
        binary: bool = True,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self.binary = binary
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            transport=transport or httpx.HTTPTransport(socket_options=NODELAY),
        )

    def __enter__(self) -> "HEGNNClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def request(self, method: str, path: str, json: Any = None) -> Any:
        """One API call; returns the decoded JSON answer.

        Retries dropped connections and retryable statuses (module docstring); raises
        HEGNNConnectionError when every attempt failed to connect or no answer came
        within the timeout (not retried: the server may be working on it), and
        HEGNNServiceError for an HTTP error status (the last one, after retries).
        """
        return self._send(method, path, json=json).json()

    def _post_msgpack(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST ``body`` as msgpack (float arrays as bytes, service/codec.py) and
        decode the answer (msgpack, or JSON from a server that answers JSON)."""
        headers = {"Content-Type": MSGPACK, "Accept": MSGPACK}
        response = self._send("POST", path, content=pack(body), headers=headers)
        if wants_msgpack(response.headers.get("content-type")):
            return unpack(response.content)
        return response.json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """``request`` without decoding: the successful response."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.http.request(method, path, **kwargs)
            except RETRYABLE as err:
                if last:
                    raise HEGNNConnectionError(
                        f"cannot reach hegnn-serve at {self.url} ({method} {path}) "
                        f"after {attempt + 1} attempts: {err!r}"
                    ) from err
                self._wait(attempt, None, f"{method} {path}: {err!r}")
                continue
            except httpx.TransportError as err:
                raise HEGNNConnectionError(
                    f"no answer from hegnn-serve at {self.url} ({method} {path}) "
                    f"within the timeout of {self.http.timeout.read} s: {err!r}"
                ) from err
            if last or not _retryable(response):
                break
            self._wait(
                attempt,
                _retry_after(response),
                f"{method} {path}: HTTP {response.status_code}",
            )
        if response.is_error:
            try:
                body = response.json()
                detail = body.get("detail", body) if isinstance(body, dict) else body
            except ValueError:
                detail = response.text or response.reason_phrase
            raise HEGNNServiceError(
                response.status_code,
                detail,
                f"{method} {path}: {_error_message(detail)}",
            )
        return response

    def _wait(self, attempt: int, retry_after: float | None, why: str) -> None:
        """Sleep before attempt ``attempt + 1``: capped exponential back-off with
        jitter, or the server's Retry-After when longer (also capped)."""
        wait = self.backoff * 2**attempt * random.uniform(0.5, 1.0)
        if retry_after is not None:
            wait = max(wait, retry_after)
        wait = min(wait, self.max_backoff)
        logger.warning("%s; retrying in %.2f s", why, wait)
        time.sleep(wait)

    def health(self) -> bool:
        """True when the server answers ``/healthz``."""
        return self.request("GET", "/healthz").get("status") == "ok"

    def models(self) -> list[dict[str, Any]]:
        """Summaries of the served models (name, task, species, units, metrics)."""
        return self.request("GET", "/v1/models")["models"]

    def model(self, name: str) -> dict[str, Any]:
        """The full model card of ``name``; HEGNNServiceError 404 if unknown."""
        return self.request("GET", f"/v1/models/{name}")

    def forces(
        self, name: str, structures: Structure | Sequence[Structure]
    ) -> ForcesResult | list[ForcesResult]:
        """Energy (eV) and forces (eV/Å) of one structure, or a list for a sequence.

        A structure is an ``ase.Atoms`` or a mapping with ``numbers``, ``positions``
        (Å) and optional ``cell``, ``pbc``. A sequence is sent as one request and
        answered in the same order.
        """
        path = f"/v1/models/{name}/forces"
        binary = self.binary
        post = self._post_msgpack if binary else partial(self.request, "POST")
        if not _is_many(structures):
            return forces_result(post(path, structure_json(structures, False, binary)))
        body = {"structures": [structure_json(s, False, binary) for s in structures]}
        return [forces_result(s) for s in post(path, body)["structures"]]

    def trajectory(
        self,
        name: str,
        states: Structure | Sequence[Structure],
        steps: int,
        every: int = 1,
    ) -> Trajectory | list[Trajectory]:
        """Roll a dynamics model forward on the server: one Trajectory, or a list.

        A state is a mapping with ``positions``, ``velocities`` (in the card's
        ``units``) and ``charges`` (N-body) or ``numbers`` (MD17 trajectory); the
        answer holds the positions after each ``every``-th Δt of the card. For MD
        with a potential model use :meth:`md`.
        """
        run = {"steps": steps, "every": every}
        out = self._post_many(f"/v1/models/{name}/trajectory", states, run)
        if isinstance(out, list):
            return [_trajectory(t) for t in out]
        return _trajectory(out)

    def md(
        self,
        name: str,
        structures: Structure | Sequence[Structure],
        steps: int,
        every: int = 1,
        timestep_fs: float = 0.5,
        temperature: float | None = None,
        friction: float = 0.01,
        seed: int | None = None,
        return_forces: bool = False,
    ) -> MDTrajectory | list[MDTrajectory]:
        """Server-side MD with a potential model: one MDTrajectory, or a list.

        A structure is an ``ase.Atoms`` (its velocities, when it has momenta, are
        sent in Å/fs) or a mapping with ``numbers``, ``positions`` (Å) and optional
        ``velocities`` (Å/fs), ``cell``, ``pbc``. Velocity Verlet (NVE), or Langevin
        at ``temperature`` (K) with ``friction`` (1/fs); without velocities the run
        starts at rest, or Maxwell-Boltzmann at ``temperature`` (``seed``).
        """
        run: dict[str, Any] = {
            "steps": steps,
            "every": every,
            "timestep_fs": timestep_fs,
            "friction": friction,
            "return_forces": return_forces,
        }
        if temperature is not None:
            run["temperature"] = temperature
        if seed is not None:
            run["seed"] = seed
        out = self._post_many(f"/v1/models/{name}/md", structures, run)
        if isinstance(out, list):
            return [_md_trajectory(t) for t in out]
        return _md_trajectory(out)

    def _post_many(
        self,
        path: str,
        structures: Structure | Sequence[Structure],
        run: Mapping[str, Any],
    ) -> Any:
        """POST one structure (its answer) or a sequence (the answers, in order)."""
        if not _is_many(structures):
            body = {**structure_json(structures, True), **run}
            return self.request("POST", path, body)
        body = {"structures": [structure_json(s, True) for s in structures], **run}
        out = self.request("POST", path, body)
        return [{**item, "units": out["units"]} for item in out["structures"]]


def forces_result(out: Mapping[str, Any]) -> ForcesResult:
    """A decoded /forces answer (JSON, or msgpack with arrays as bytes)."""

    def array(key: str, rows: bool) -> NDArray[np.float64]:
        values = out[key]
        if isinstance(values, bytes):  # msgpack: float64 little-endian
            values = float_array((key,), values, rows=rows)
        values = np.asarray(values, dtype=np.float64)
        return values.reshape(-1, 3) if rows else values.reshape(-1)

    if "forces_std" not in out:
        return ForcesResult(energy=float(out["energy"]), forces=array("forces", True))
    return ForcesResult(
        energy=float(out["energy"]),
        forces=array("forces", True),
        energy_std=float(out["energy_std"]),
        forces_std=array("forces_std", False),
        max_force_std=float(out["max_force_std"]),
    )


def _trajectory(out: Mapping[str, Any]) -> Trajectory:
    return Trajectory(
        positions=np.asarray(out["positions"], dtype=np.float64),
        times=np.asarray(out["times"], dtype=np.float64),
        raw=dict(out),
    )


def _md_trajectory(out: Mapping[str, Any]) -> MDTrajectory:
    frames = out["frames"]

    def stack(key: str, dtype: type = np.float64) -> np.ndarray:
        return np.asarray([frame[key] for frame in frames], dtype=dtype)

    return MDTrajectory(
        steps=stack("step", np.int64),
        times=stack("time_fs"),
        positions=stack("positions"),
        velocities=stack("velocities"),
        energies=stack("energy"),
        forces=stack("forces") if frames and "forces" in frames[0] else None,
        raw=dict(out),
    )
