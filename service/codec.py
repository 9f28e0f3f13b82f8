"""The binary body of the API: msgpack, float arrays as raw little-endian float64.

A POST body sent as ``Content-Type: application/msgpack`` is a msgpack map with the
JSON body's fields; ``positions``, ``velocities``, ``cell`` (``[n, 3]``, row-major)
and ``charges`` (``[n]``) may be msgpack ``bin`` values holding their float64 values,
little-endian, instead of nested lists. ``/forces`` answers in msgpack when the
request's ``Accept`` names ``application/msgpack``; ``forces`` is then a ``bin`` of
``[n_atoms, 3]`` float64. Errors are JSON either way. Used by the server and the
client: imports only numpy and msgpack.
"""

from collections.abc import Mapping
from typing import Any, Final

import msgpack
import numpy as np
from numpy.typing import NDArray

MSGPACK: Final = "application/msgpack"
FLOAT64: Final = np.dtype("<f8")
ROWS: Final = ("positions", "velocities", "cell")  # [n, 3] when binary
VALUES: Final = ("charges",)  # [n] when binary


class BinaryBodyError(ValueError):
    """A msgpack body that cannot be read; ``loc`` names the field."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def wants_msgpack(header: str | bytes | None) -> bool:
    """A Content-Type or Accept header value that names msgpack."""
    if header is None:
        return False
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    return MSGPACK in header.lower()


def _pack_default(value: Any) -> Any:
    """msgpack's hook for other types: float arrays as bin, numpy scalars as
    numbers."""
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value, dtype=FLOAT64).tobytes()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot pack {type(value).__name__}")


def pack(body: Mapping[str, Any]) -> bytes:
    """A body as msgpack; numpy arrays become float64 bin fields (give integer
    arrays such as ``numbers`` as lists)."""
    return msgpack.packb(body, default=_pack_default)


def unpack(raw: bytes) -> Any:
    """Decoded msgpack (bin values stay bytes); BinaryBodyError at ``body`` if
    ``raw`` is not one msgpack value."""
    try:
        return msgpack.unpackb(raw)
    except (ValueError, TypeError, msgpack.UnpackException) as err:
        raise BinaryBodyError(("body",), f"msgpack decode error: {err}") from None


def float_array(loc: tuple[str | int, ...], raw: bytes, rows: bool) -> NDArray:
    """A bin field as float64 ``[n, 3]`` (``rows``) or ``[n]``; BinaryBodyError
    naming the field when its length is not a whole number of those."""
    width = 3 * FLOAT64.itemsize if rows else FLOAT64.itemsize
    if len(raw) % width:
        shape = "[n, 3]" if rows else "[n]"
        raise BinaryBodyError(
            loc,
            f"{len(raw)} bytes is not a whole {shape} array of little-endian "
            f"float64 ({width} bytes per {'row' if rows else 'value'})",
        )
    values = np.frombuffer(raw, dtype=FLOAT64).astype(np.float64)
    return values.reshape(-1, 3) if rows else values


def _structure_lists(
    item: Mapping[str, Any], prefix: tuple[str | int, ...]
) -> dict[str, Any]:
    out = dict(item)
    for key in (*ROWS, *VALUES):
        value = out.get(key)
        if isinstance(value, bytes):
            out[key] = float_array((*prefix, key), value, key in ROWS).tolist()
    return out


def as_json_body(decoded: Any) -> Any:
    """A decoded msgpack body with its bin arrays as nested lists: the JSON body
    it stands for (the same validation follows)."""
    if not isinstance(decoded, dict):
        return decoded  # the schema answers "expected a JSON object"
    body = _structure_lists(decoded, ("body",))
    structures = body.get("structures")
    if isinstance(structures, list):
        body["structures"] = [
            _structure_lists(s, ("body", "structures", k)) if isinstance(s, dict) else s
            for k, s in enumerate(structures)
        ]
    return body
