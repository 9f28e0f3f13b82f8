"""Load every checkpoint folder of a directory into Predictors.

A folder that fails to load (corrupt weights, bad card, unknown format) is skipped:
the error is logged and kept in ``failed`` (shown by /readyz and /v1/models), and the
other models are served. With ``strict`` the first failure stops the start instead.
"""

import logging
from dataclasses import dataclass, field

import torch

from hegnn import resolve_device
from hegnn_serve.service.predictor import EdgeBudget, Predictor
from hegnn_serve.service.settings import Settings

logger = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The service refuses to start (strict checkpoints); the message says why."""


@dataclass
class Registry:
    """Loaded models by name, and folders that failed with their error."""

    predictors: dict[str, Predictor] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def load_registry(settings: Settings) -> Registry:
    """A Predictor for each folder of ``settings.checkpoints`` (hidden ones skipped)."""
    registry = Registry()
    root = settings.checkpoints
    try:
        device = resolve_device(settings.device)
    except ValueError as err:  # cuda asked for, none here: no model could load
        raise StartupError(str(err)) from err
    dtype = None if settings.dtype == "auto" else getattr(torch, settings.dtype)
    if not root.is_dir():
        message = f"checkpoints directory {root} does not exist"
        if settings.strict_checkpoints:
            raise StartupError(message)
        logger.error("%s; serving no models", message)
        return registry
    budget = EdgeBudget(settings.max_inflight_edges)
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            continue
        try:
            registry.predictors[folder.name] = Predictor.load(
                folder,
                device,
                dtype,
                compile=settings.compile,
                min_distance=settings.min_distance,
                max_edges=settings.max_edges,
            )
            registry.predictors[folder.name].budget = budget
        except Exception as err:  # any failure to load is this folder's problem
            message = f"{type(err).__name__}: {err}"
            if settings.strict_checkpoints:
                raise StartupError(f"checkpoint {folder}: {message}") from err
            logger.error("skipping checkpoint %s: %s", folder, message)
            registry.failed[folder.name] = message
    logger.info(
        "serving %d model(s) from %s on %s: %s",
        len(registry.predictors),
        root,
        device,
        ", ".join(registry.predictors) or "none",
    )
    return registry
