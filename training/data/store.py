"""Dataset files: .npz arrays plus one JSON ``metadata`` record, written atomically.

Every generated or imported dataset records its generator, seed, units and the sha256
of its array contents; this module computes that hash and reads the record back.
Knows nothing of what the arrays mean.
"""

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hegnn.checkpoint import sha256_file

METADATA_KEY = "metadata"


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over (name, dtype, shape, bytes) of each array, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (the checkpoint code's hash, one implementation)."""
    return sha256_file(Path(path))


def write_npz(
    path: str | Path, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``arrays`` and ``metadata`` (as a JSON string) to ``path`` atomically.

    The file appears complete or not at all: it is written beside the target and
    renamed. The record written, returned, is ``metadata`` plus ``sha256``
    (:func:`arrays_sha256` of ``arrays``).
    """
    path = Path(path)
    if METADATA_KEY in arrays:
        raise ValueError(f"arrays: the name {METADATA_KEY!r} is reserved")
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**metadata, "sha256": arrays_sha256(arrays)}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays, **{METADATA_KEY: np.array(json.dumps(record))})
    os.replace(tmp, path)
    return record


def read_metadata(npz: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
    """The JSON metadata record of an opened .npz, or None if it has none."""
    if METADATA_KEY not in npz:
        return None
    return json.loads(str(npz[METADATA_KEY]))
