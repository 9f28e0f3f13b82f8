"""TrainConfig: one frozen, validated object from YAML plus ``--set key=value``.

The ``model:`` section is hegnn's :class:`~hegnn.config.Architecture` (the network
and its input-rule parameters, as stored in every card). The ``data:`` section is a
discriminated union on the training task: each task's section holds only its own
fields, and the top-level ``task`` selects it.
"""

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hegnn.config import Architecture, RuleName

TaskName = Literal["nbody", "md17-traj", "md17-force"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataBase(Frozen):
    """Fields of every task. ``features`` is the input rule (hegnn/rules/) the
    task's models use: the one place a training task names its rule."""

    features: ClassVar[RuleName]

    @model_validator(mode="before")
    @classmethod
    def _other_tasks_fields(cls, raw: Any) -> Any:
        """Refuse, by name, a field that belongs to another task's data section."""
        if not isinstance(raw, dict):
            return raw
        task = cls.model_fields["task"].default
        for key in raw:
            owners = [t for t, s in DATA_SECTIONS.items() if key in s.model_fields]
            if key not in cls.model_fields and owners:
                raise ValueError(
                    f"{key}: a data field of task {' / '.join(owners)}, not of "
                    f"task {task}; remove it"
                )
        return raw

    path: Path = Field(description="dataset file (.npz of `hegnn data`, or MD17 file)")
    sizes: tuple[int, int, int] | None = Field(
        None, description="train/val/test sizes (default: the protocol's)"
    )


class NBodyData(DataBase):
    """Charged N-body (EGNN protocol): x, v at ``frame_in`` -> x at ``frame_out``."""

    features: ClassVar[RuleName] = "nbody"

    task: Literal["nbody"] = Field("nbody", exclude=True)
    frame_in: int = Field(30, ge=0, description="input frame")
    frame_out: int = Field(40, ge=0, description="target frame")
    rotate_test: bool = Field(True, description="also score a rotated test split")


class MD17TrajData(DataBase):
    """GMN's MD17 trajectory protocol: heavy atoms, x at t -> x at t + delta."""

    features: ClassVar[RuleName] = "md17-traj"

    task: Literal["md17-traj"] = Field("md17-traj", exclude=True)
    unit: str | None = Field(None, description="energy unit of an extxyz file")
    delta: int = Field(3000, ge=1, description="frames ahead")
    margin: int = Field(10000, ge=0, description="candidate margin (frames)")
    split_seed: int = Field(100, description="GMN split seed")
    frame_time_fs: float = Field(0.5, gt=0, description="fs per frame")


class MD17ForceData(DataBase):
    """Energies and forces of molecular frames (force fields)."""

    features: ClassVar[RuleName] = "species"

    task: Literal["md17-force"] = Field("md17-force", exclude=True)
    unit: str | None = Field(None, description="energy unit of an extxyz file")
    seed: int = Field(0, description="split seed")
    test_path: Path | None = Field(
        None,
        description="labelled frames for the test split, instead of ``path``'s own: "
        "those not in train or val (sizes then ends in 0)",
    )
    test_unit: str | None = Field(
        None, description="energy unit of an extxyz test_path (default: unit)"
    )

    @model_validator(mode="after")
    def _test_split_source(self) -> "MD17ForceData":
        if self.test_path is None:
            if self.test_unit is not None:
                raise ValueError("test_unit: given without test_path")
            return self
        if self.sizes is None or self.sizes[2] != 0:
            raise ValueError(
                f"sizes: the test split comes from test_path, so give [train, val, 0]"
                f" (got {self.sizes})"
            )
        return self


DataSection = Annotated[
    NBodyData | MD17TrajData | MD17ForceData, Field(discriminator="task")
]
DATA_SECTIONS: dict[str, type[DataBase]] = {
    section.model_fields["task"].default: section
    for section in (NBodyData, MD17TrajData, MD17ForceData)
}


class OptimSection(Frozen):
    optimizer: Literal["adam", "adamw", "amsgrad"] = "adam"
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(1e-12, ge=0)
    batch_size: int = Field(100, ge=1, description="global batch (all processes)")
    max_epochs: int = Field(1000, ge=1)
    max_minutes: float | None = Field(None, gt=0, description="wall-clock budget")
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm")
    scheduler: Literal["none", "constant", "plateau", "cosine"] = Field(
        "none",
        description="lr schedule: none = constant (the same), plateau (× "
        "plateau_factor after plateau_patience evaluations without gain), cosine "
        "(to zero over max_epochs, or over max_minutes when that ends the run first)",
    )
    plateau_factor: float = Field(0.8, gt=0, lt=1)
    plateau_patience: int = Field(50, ge=1, description="in evaluations")
    warmup_epochs: int = Field(0, ge=0)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    eval_every: int = Field(5, ge=1, description="epochs between validations")
    early_stop_patience: int | None = Field(
        None, ge=1, description="evaluations without improvement before stopping"
    )
    min_lr: float | None = Field(
        None,
        gt=0,
        description="plateau: stop once the schedule takes the lr below this "
        "(NequIP's early_stopping_lower_bounds LR); None = never",
    )
    energy_weight: float = Field(1.0, ge=0, description="md17-force: per-atom E MSE")
    force_weight: float = Field(100.0, ge=0, description="md17-force: F MSE")
    stage_two_start: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="fraction of the run (of max_epochs, or of max_minutes when "
        "that ends it first) after which the stage_two_* settings apply and the "
        "best-model tracking restarts (MACE's second stage); None = one stage",
    )
    stage_two_energy_weight: float = Field(1000.0, ge=0, description="stage two")
    stage_two_force_weight: float = Field(100.0, ge=0, description="stage two")
    stage_two_lr: float | None = Field(
        None, gt=0, description="constant lr of stage two; None = the schedule's"
    )

    @model_validator(mode="after")
    def _min_lr_ends_a_plateau_run(self) -> "OptimSection":
        if self.min_lr is None:
            return self
        if self.scheduler != "plateau":
            raise ValueError(
                f"min_lr: stops a plateau schedule; scheduler is {self.scheduler!r}"
            )
        if self.min_lr >= self.lr:
            raise ValueError(
                f"min_lr: {self.min_lr:g} is not below lr {self.lr:g}; the run "
                "would stop before its first epoch"
            )
        return self


class TrainConfig(Frozen):
    """A full training run: ``hegnn train --config X.yaml --set optim.lr=1e-3``."""

    name: str = Field(description="checkpoint name (folder name, API model name)")
    task: TaskName
    model: Architecture = Architecture()
    data: DataSection
    optim: OptimSection = OptimSection()
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    run_dir: Path = Field(Path("runs"), description="logs and resume state go here")
    checkpoint_dir: Path = Field(Path("checkpoints"), description="final model here")

    @model_validator(mode="before")
    @classmethod
    def _task_selects_data(cls, raw: Any) -> Any:
        """Put the top-level ``task`` into ``data``: the union's discriminator."""
        if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
            return raw
        task, data = raw.get("task"), raw["data"]
        if task not in DATA_SECTIONS:  # the task field's own error names the choices
            return raw
        if data.get("task", task) != task:
            raise ValueError(
                f"data.task: {data['task']!r} differs from task {task!r}; "
                "set the task at the top level only"
            )
        return {**raw, "data": {**data, "task": task}}


# The data section before it became one class per task: every field on every task.
# Stored training configs (card.json "training.config", run state) hold them all;
# the other tasks' fields were ignored, so those at these defaults are dropped.
LEGACY_DATA_DEFAULTS: dict[str, Any] = {
    "unit": None,
    "frame_in": 30,
    "frame_out": 40,
    "rotate_test": True,
    "delta": 3000,
    "margin": 10000,
    "split_seed": 100,
    "sizes": None,
    "seed": 0,
    "frame_time_fs": 0.5,
}


def migrate_stored_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A stored training config (card, run state) in today's form: the data fields
    of other tasks, written at their defaults by the old one-class data section,
    are dropped. Anything else, including such a field set to another value (never
    written by ``hegnn train``), is left for validation to refuse."""
    section = DATA_SECTIONS.get(raw.get("task"))  # type: ignore[arg-type]
    data = raw.get("data")
    if section is None or not isinstance(data, dict):
        return raw
    kept = {
        key: value
        for key, value in data.items()
        if key in section.model_fields
        or key not in LEGACY_DATA_DEFAULTS
        or _stored_value(value) != LEGACY_DATA_DEFAULTS[key]
    }
    return {**raw, "data": kept}


def _stored_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def stored_config(raw: dict[str, Any]) -> TrainConfig:
    """Validate a training config read back from a card or a run state."""
    return TrainConfig.model_validate(migrate_stored_config(raw))


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` (value parsed as YAML) in a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value")
        path, value = item.split("=", 1)
        *parents, leaf = path.strip().split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {key} is not a section")
        node[leaf] = yaml.safe_load(value)
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read YAML, apply overrides, validate."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    return TrainConfig.model_validate(apply_overrides(raw, overrides or []))
