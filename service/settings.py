"""Service settings from ``HEGNN_*`` environment variables (pydantic-settings).

``get_settings()`` reads the environment once; ``create_app(settings)`` takes an
explicit ``Settings`` so tests and the CLI can override any value.
"""

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an operator can set; the env var is ``HEGNN_`` + the field name."""

    model_config = SettingsConfigDict(env_prefix="HEGNN_", extra="ignore", frozen=True)

    checkpoints: Path = Field(
        Path("checkpoints"), description="folder of checkpoint folders; name = model"
    )
    host: str = Field("127.0.0.1", description="bind address of `hegnn serve`")
    port: int = Field(8000, ge=0, le=65535, description="port of `hegnn serve`")
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto|cpu|cuda[:N]"
    )
    dtype: Literal["auto", "float32", "float64"] = Field(
        "auto", description="auto: the dtype recorded in each model card"
    )
    strict_checkpoints: bool = Field(
        False,
        description="refuse to start if any checkpoint folder fails to load "
        "(default: skip it, log the error, report it in /readyz and /v1/models)",
    )

    # Limits: over a limit -> 413.
    max_atoms: int = Field(1000, ge=1, description="atoms per structure")
    max_structures: int = Field(64, ge=1, description="structures per request")
    max_body_bytes: int = Field(8 * 2**20, ge=1024, description="request body size")
    max_steps: int = Field(
        1000, ge=1, description="/trajectory and /md steps per request"
    )
    max_frames: int = Field(1000, ge=1, description="frames returned per structure")
    max_edges: int = Field(
        200_000, ge=1, description="graph edges per structure (bounds memory)"
    )
    min_distance: float = Field(
        0.5,
        gt=0,
        description="closest allowed pair of atoms, Å (models with positions in Å); "
        "closer -> 422",
    )

    # Dynamic batching of force requests.
    batching: bool = Field(True, description="join concurrent requests per model")
    max_batch_atoms: int = Field(4096, ge=1, description="atom budget of one call")
    max_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="longest wait for a batch to fill, ms"
    )
    max_pending_atoms: int = Field(
        65536, ge=1, description="atoms waiting per model; more -> 503 Retry-After"
    )

    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="accepted Bearer keys, comma-separated; empty = no auth",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    torch_threads: int = Field(1, ge=1, description="torch.set_num_threads")
    trajectory_workers: int = Field(
        1, ge=1, description="threads running /trajectory and /md requests concurrently"
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()
