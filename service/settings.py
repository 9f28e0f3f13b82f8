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
        100_000,
        ge=1,
        description="graph edges per structure, counted before the graph is built "
        "(bounds memory: about 10 kB per edge for an L=3 force field)",
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
        2,
        ge=1,
        description="/trajectory and /md jobs running at once (one model uses at "
        "most all but one of them, so another model's job always finds one free)",
    )
    max_queued_jobs: int = Field(
        4, ge=0, description="jobs waiting per model; more -> 503 Retry-After"
    )
    job_timeout_s: float = Field(
        120.0,
        gt=0,
        description="deadline of a /trajectory or /md job from its arrival, s: "
        "waiting past it -> 503 Retry-After, running past it -> 504",
    )
    drain_s: float = Field(
        6.0,
        ge=0,
        le=60,
        description="on SIGTERM: running jobs get this long to finish, then they "
        "are stopped (503) and the process exits 0",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="time to receive a whole request body; then 408"
    )
    max_request_edges: int = Field(
        100_000,
        ge=1,
        description="graph edges of all structures of one request, and of one "
        "batched model call (bounds memory)",
    )
    compile: bool = Field(
        False,
        description="torch.compile the force-field models at start (about 2x faster "
        "energy + forces on a CPU; each model compiles for 15-40 s before the port "
        "opens, a periodic structure once more at its first request)",
    )
    max_inflight_edges: int = Field(
        120_000,
        ge=1,
        description="graph edges in force evaluations at once, all models and MD "
        "jobs together; more wait (bounds the process's memory)",
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
