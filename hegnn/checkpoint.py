"""Checkpoints: ``model.safetensors`` + ``card.json``. Loading never unpickles.

The card holds everything needed to rebuild the network (``model``: a ModelConfig)
plus what a user needs to trust it (data, metrics, command, versions). The weights'
sha256 is in the card; a mismatch or an unknown format version is refused.

Format versions: 2 (written now) keeps each aggregation's ``avg_num_neighbors`` in
its layer and the Bessel basis under ``backbone.radial``; version 1 (the first
shipped checkpoints) kept one ``backbone.avg_num_neighbors``, ``backbone.bessel``
and a ``backbone.species`` buffer. Version-1 weights are renamed on load
(:func:`upgrade_v1_state`); their files are not changed.

A committee (:class:`hegnn.committee.Committee`) is a folder holding its members'
checkpoint folders and a card whose ``committee`` lists them with their weights'
sha256; its own ``weights_sha256`` is the sha256 of those, in order
(:func:`save_committee`).
"""

import hashlib
import json
import logging
import platform
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import e3nn
import safetensors.torch
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from hegnn import keys
from hegnn.build import build_model
from hegnn.committee import Committee
from hegnn.config import ModelConfig

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or read; the message says why."""


class CommitteeMember(BaseModel):
    """One member: its folder inside the committee's folder, seed and weights."""

    folder: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
    seed: int | None = None
    weights_sha256: str


class CommitteeSpec(BaseModel):
    """card.json ``committee``: the members and how their spread was calibrated."""

    members: list[CommitteeMember] = Field(min_length=2)
    uncertainty: dict[str, Any] = Field(default_factory=dict)


class ModelCard(BaseModel):
    """card.json: required fields rebuild and verify the model; extras document it."""

    model_config = ConfigDict(extra="allow")

    format_version: int
    name: str
    task: str
    model: ModelConfig
    weights_sha256: str
    dtype: str
    units: dict[str, str]
    versions: dict[str, str]
    delta_t: float | None = Field(
        None, description="dynamics: Δt in velocity time units"
    )
    metrics: dict[str, Any] = Field(default_factory=dict)
    committee: CommitteeSpec | None = None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions that produced a checkpoint."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        code = version("hegnn-serve")
    except PackageNotFoundError:  # pragma: no cover - source tree without install
        code = "unknown"
    return {
        "hegnn-serve": code,
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "python": platform.python_version(),
    }


def save(model: nn.Module, directory: str | Path, card: dict[str, Any]) -> ModelCard:
    """Write weights and card; ``card`` adds documentation (data, metrics, command)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = directory / WEIGHTS_FILE
    safetensors.torch.save_file(state, weights, metadata={"format": "hegnn"})
    weights.chmod(0o644)  # safetensors writes 0600; servers often run as another user
    config: ModelConfig = model.config
    dtype = next(model.parameters()).dtype
    full = {
        **card,
        "format_version": FORMAT_VERSION,
        "name": directory.name,
        "task": config.task,
        "model": config.model_dump(mode="json"),
        "weights_sha256": sha256_file(weights),
        "dtype": str(dtype).removeprefix("torch."),
        "versions": {**card.get("versions", {}), **library_versions()},
    }
    if hasattr(model, "delta_t"):
        full["delta_t"] = float(model.delta_t)
    full.setdefault("units", {})
    validated = ModelCard.model_validate(full)
    (directory / CARD_FILE).write_text(json.dumps(full, indent=2) + "\n")
    return validated


def copy_checkpoint(
    source: str | Path, target: str | Path, name: str | None = None, **fields: Any
) -> None:
    """Copy checkpoint ``source`` to ``target``: its card and weights only (a run
    folder's pickled training state and logs stay behind), replacing whatever was
    at ``target``. ``name`` renames the copy; ``fields`` are set in its card."""
    source, target = Path(source), Path(target)
    if source.resolve() != target.resolve():  # else in place
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for file in (CARD_FILE, WEIGHTS_FILE):
            shutil.copyfile(source / file, target / file)
    if name is None and not fields:
        return
    card = json.loads((target / CARD_FILE).read_text())
    if name is not None:
        old, card["name"] = card["name"], name
        description = card.get("description", "")
        if description.startswith(f"{old}:"):
            card["description"] = name + description.removeprefix(old)
    card.update(fields)
    ModelCard.model_validate(card)
    (target / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")


def members_sha256(hashes: Iterable[str]) -> str:
    """A committee's ``weights_sha256``: the sha256 of its members' hashes in order."""
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def save_committee(
    members: list[str | Path], directory: str | Path, card: dict[str, Any]
) -> ModelCard:
    """Copy potential checkpoints ``members`` (same architecture, species, units)
    into ``directory`` and write the committee's card; ``card`` adds documentation
    (``committee.uncertainty`` may be set later with :func:`add_card_metrics`)."""
    directory = Path(directory)
    cards = [read_card(m) for m in members]
    first = cards[0]
    for member, member_card in zip(members, cards, strict=True):
        if member_card.task != keys.TASK_POTENTIAL or member_card.committee:
            raise CheckpointError(f"{member}: a committee member must be a potential")
        if (member_card.model, member_card.units) != (first.model, first.units):
            raise CheckpointError(
                f"{member}: architecture, species or units differ from {members[0]}"
            )
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for member, member_card in zip(members, cards, strict=True):
        folder = Path(member).name
        copy_checkpoint(member, directory / folder)
        training = member_card.model_extra.get("training", {})
        entries.append(
            {
                "folder": folder,
                "seed": training.get("config", {}).get("seed"),
                "weights_sha256": member_card.weights_sha256,
            }
        )
    full = {
        **card,
        "format_version": FORMAT_VERSION,
        "name": directory.name,
        "task": first.task,
        "model": first.model.model_dump(mode="json"),
        "weights_sha256": members_sha256(e["weights_sha256"] for e in entries),
        "dtype": first.dtype,
        "units": first.units,
        "versions": {**first.versions, **library_versions()},
        "committee": {**card.get("committee", {}), "members": entries},
    }
    validated = ModelCard.model_validate(full)
    (directory / CARD_FILE).write_text(json.dumps(full, indent=2) + "\n")
    return validated


def add_card_metrics(directory: str | Path, key: str, metrics: dict[str, Any]) -> None:
    """Store ``metrics`` under ``card.json["metrics"][key]``; the rest is unchanged."""
    path = Path(directory) / CARD_FILE
    card = json.loads(path.read_text())
    card.setdefault("metrics", {})[key] = metrics
    path.write_text(json.dumps(card, indent=2) + "\n")


def read_card(directory: str | Path) -> ModelCard:
    """Parse and validate card.json; CheckpointError says what is wrong."""
    path = Path(directory) / CARD_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no card.json in the checkpoint folder") from err
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported "
            f"(this code reads {', '.join(map(str, READABLE_VERSIONS))})"
        )
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as err:
        raise CheckpointError(f"{path}: invalid card: {err}") from err


def upgrade_v1_state(
    state: dict[str, torch.Tensor], expected: Iterable[str]
) -> dict[str, torch.Tensor]:
    """Version-1 weight names -> version 2 (same values, same model)."""
    state = dict(state)
    state.pop("backbone.species", None)  # the species rule holds the list now
    if "backbone.bessel.n_pi" in state:
        state["backbone.radial.bessel.n_pi"] = state.pop("backbone.bessel.n_pi")
    shared = state.pop("backbone.avg_num_neighbors", None)
    if shared is not None:
        for key in expected:
            if key.endswith("aggregate.avg_num_neighbors"):
                state[key] = shared.clone()
    return state


def load(
    directory: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[nn.Module, ModelCard]:
    """Rebuild the model from card.json and load verified safetensors weights."""
    directory = Path(directory)
    card = read_card(directory)
    if card.committee is not None:
        return _load_committee(directory, card, device, dtype), card
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file missing")
    actual = sha256_file(weights)
    if actual != card.weights_sha256:
        raise CheckpointError(
            f"{weights}: sha256 {actual} does not match the card "
            f"({card.weights_sha256}); the file was changed or corrupted"
        )
    model = build_model(card.model)
    state = safetensors.torch.load_file(weights, device="cpu")
    if card.format_version == 1:
        state = upgrade_v1_state(state, model.state_dict().keys())
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{weights}: weights do not fit the card: {err}") from err
    model = model.to(device=device, dtype=dtype or getattr(torch, card.dtype))
    logger.info("loaded %s (%s) on %s", card.name, card.task, device)
    return model.eval(), card


def _load_committee(
    directory: Path, card: ModelCard, device: str | torch.device, dtype
) -> Committee:
    spec = card.committee
    if members_sha256(m.weights_sha256 for m in spec.members) != card.weights_sha256:
        raise CheckpointError(
            f"{directory}: the members' sha256 do not match the card's weights_sha256"
        )
    members = []
    for member in spec.members:
        model, member_card = load(directory / member.folder, device, dtype)
        if member_card.weights_sha256 != member.weights_sha256:
            raise CheckpointError(
                f"{directory / member.folder}: weights are not the committee's member"
            )
        if member_card.model != card.model or member_card.committee is not None:
            raise CheckpointError(
                f"{directory / member.folder}: architecture differs from the card"
            )
        members.append(model)
    return Committee(members).eval()
