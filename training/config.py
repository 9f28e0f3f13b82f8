"""TrainConfig: one frozen, validated object from YAML plus ``--set key=value``."""

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

TaskName = Literal["nbody", "md17-traj", "md17-force"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSection(Frozen):
    """Architecture; task and feature rule follow from the training task."""

    lmax: int | None = Field(3, ge=0, le=6, description="None = EGNN baseline")
    hidden_dim: int = Field(64, ge=1)
    num_layers: int = Field(4, ge=1)
    activation: Literal["silu", "softplus", "tanh"] = "silu"
    r_max: float | None = Field(None, gt=0, description="cutoff, Å (md17-force)")
    num_bessel: int = Field(8, ge=1)
    inner_product_map: Literal["bounded", "identity"] = "bounded"
    coord_gain: float = Field(1.0, gt=0)
    coord_clamp: float | None = Field(None, gt=0)


class DataSection(Frozen):
    path: Path = Field(description="dataset file (.npz of `hegnn data`, or MD17 file)")
    unit: str | None = Field(None, description="energy unit of an extxyz file")
    frame_in: int = Field(30, ge=0, description="nbody: input frame")
    frame_out: int = Field(40, ge=0, description="nbody: target frame")
    rotate_test: bool = Field(True, description="nbody: also score rotated test")
    delta: int = Field(3000, ge=1, description="md17-traj: frames ahead")
    margin: int = Field(10000, ge=0, description="md17-traj: candidate margin")
    split_seed: int = Field(100, description="md17-traj: GMN split seed")
    sizes: tuple[int, int, int] | None = Field(
        None, description="train/val/test sizes (default: the protocol's)"
    )
    seed: int = Field(0, description="md17-force: split seed")
    frame_time_fs: float = Field(0.5, gt=0, description="md17-traj: fs per frame")


class OptimSection(Frozen):
    optimizer: Literal["adam", "adamw", "amsgrad"] = "adam"
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(1e-12, ge=0)
    batch_size: int = Field(100, ge=1, description="global batch (all processes)")
    max_epochs: int = Field(1000, ge=1)
    max_minutes: float | None = Field(None, gt=0, description="wall-clock budget")
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm")
    scheduler: Literal["none", "plateau", "cosine"] = "none"
    plateau_factor: float = Field(0.8, gt=0, lt=1)
    plateau_patience: int = Field(50, ge=1, description="in evaluations")
    warmup_epochs: int = Field(0, ge=0)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    eval_every: int = Field(5, ge=1, description="epochs between validations")
    early_stop_patience: int | None = Field(
        None, ge=1, description="evaluations without improvement before stopping"
    )
    energy_weight: float = Field(1.0, ge=0, description="md17-force: per-atom E MSE")
    force_weight: float = Field(100.0, ge=0, description="md17-force: F MSE")


class TrainConfig(Frozen):
    """A full training run: ``hegnn train --config X.yaml --set optim.lr=1e-3``."""

    name: str = Field(description="checkpoint name (folder name, API model name)")
    task: TaskName
    model: ModelSection = ModelSection()
    data: DataSection
    optim: OptimSection = OptimSection()
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    run_dir: Path = Field(Path("runs"), description="logs and resume state go here")
    checkpoint_dir: Path = Field(Path("checkpoints"), description="final model here")


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
