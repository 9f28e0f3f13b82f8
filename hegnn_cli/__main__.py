"""``python -m hegnn_cli ...``: the ``hegnn`` command where no console script exists,
also from a checkout on ``PYTHONPATH`` that is not installed (a bare GPU image). There
the repository root stands in for the ``hegnn_serve`` namespace, whose packages are
its folders (``service/`` is ``hegnn_serve.service``, as pyproject.toml maps them)."""

import importlib.util
import sys
import types
from pathlib import Path

if importlib.util.find_spec("hegnn_serve") is None:
    namespace = types.ModuleType("hegnn_serve")
    namespace.__path__ = [str(Path(__file__).resolve().parents[1])]
    sys.modules["hegnn_serve"] = namespace

from hegnn_cli import app  # noqa: E402  (after the namespace is in place)

app(prog_name="hegnn")
