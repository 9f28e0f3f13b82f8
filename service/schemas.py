"""Request and response bodies of the HTTP API, with units in every description.

Arrays are nested JSON lists. Numbers must be JSON numbers (strings such as "1.0"
or "nan" are refused) and finite; a wrong shape, a ragged array or a length that
does not match ``positions`` is a 422 whose ``loc`` names the field. What depends on
the model (species, required inputs, distances, cell) is checked by the predictor.
"""

from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from service.predictor import StructureInput

COORDINATE_LIMIT = 1e6  # |value| of any coordinate, velocity or charge
# Trajectory fields that only potential models (server-side MD) take.
MD_FIELDS = ("timestep_fs", "temperature", "friction", "seed", "return_forces")

Finite = Annotated[
    float,
    Strict(),
    Field(allow_inf_nan=False, ge=-COORDINATE_LIMIT, le=COORDINATE_LIMIT),
]
Vector = Annotated[list[Finite], Field(min_length=3, max_length=3)]
AtomicNumber = Annotated[int, Strict(), Field(ge=1, le=118)]


def _broadcast_pbc(value: Any) -> Any:
    return [value] * 3 if isinstance(value, bool) else value


Positions = Annotated[
    list[Vector],
    Field(
        min_length=1,
        description="[n_atoms, 3] Cartesian positions, Å (N-body models: the "
        "simulation length unit of the model card)",
    ),
]
Numbers = Annotated[
    list[AtomicNumber],
    Field(min_length=1, description="[n_atoms] atomic numbers Z"),
]
Velocities = Annotated[
    list[Vector],
    Field(
        description="[n_atoms, 3] velocities. Potential models (MD): Å/fs. Dynamics "
        "models: the velocity unit of the model card (`units.velocities` in "
        "GET /v1/models/{name}); the card's `delta_t` is in that unit's time."
    ),
]
Charges = Annotated[
    list[Finite], Field(description="[n_atoms] charges of N-body models (±1)")
]
Cell = Annotated[
    list[Vector],
    Field(
        min_length=3,
        max_length=3,
        description="[3, 3] lattice vectors as rows, Å (potential models only)",
    ),
]
Pbc = Annotated[
    list[Annotated[bool, Strict()]],
    BeforeValidator(_broadcast_pbc, json_schema_input_type=bool | list[bool]),
    Field(
        min_length=3,
        max_length=3,
        description="periodic along each lattice vector: [bool, bool, bool] or one "
        "bool for all three; true needs a cell",
    ),
]


class StructureFields(BaseModel):
    """Per-structure fields; lengths are checked against ``positions``."""

    model_config = ConfigDict(extra="forbid")

    positions: Positions | None = None
    numbers: Numbers | None = None
    cell: Cell | None = None
    pbc: Pbc | None = None

    @field_validator("numbers", "velocities", "charges", check_fields=False)
    @classmethod
    def _one_per_atom(cls, value: list | None, info: ValidationInfo) -> list | None:
        positions = info.data.get("positions")
        if value is not None and positions is not None:
            if len(value) != len(positions):
                raise ValueError(
                    f"{len(value)} entries, but positions has {len(positions)} "
                    "atoms; give one per atom"
                )
        return value

    def arrays(self) -> StructureInput:
        """The structure as float64 numpy arrays."""

        def array(name: str, dtype: type) -> np.ndarray | None:
            value = getattr(self, name, None)
            return None if value is None else np.asarray(value, dtype=dtype)

        return StructureInput(
            positions=array("positions", np.float64),
            numbers=array("numbers", np.int64),
            velocities=array("velocities", np.float64),
            charges=array("charges", np.float64),
            cell=array("cell", np.float64),
            pbc=array("pbc", np.bool_),
        )


# (field path prefix, structure) of every structure in a request.
Items = list[tuple[tuple[str | int, ...], StructureFields]]


class ForcesStructure(StructureFields):
    """One structure whose energy and forces are wanted."""

    positions: Positions
    numbers: Numbers


class TrajectoryStructure(StructureFields):
    """One structure to propagate (inputs by model kind: see TrajectoryRequest)."""

    positions: Positions
    velocities: Velocities | None = None
    charges: Charges | None = None


def _field_error(model: str, field: str, message: str | None = None) -> ValidationError:
    """A validation error located at ``field`` (``missing`` when no message)."""
    error = InitErrorDetails(
        type="missing"
        if message is None
        else PydanticCustomError("value_error", message),
        loc=(field,),
        input=None,
    )
    return ValidationError.from_exception_data(model, [error])


def _single_or_many(
    body: StructureFields, structures: list | None, required: tuple[str, ...]
) -> None:
    """Either one structure at the top level or ``structures``, not both."""
    name = type(body).__name__
    single = body.model_fields_set & set(StructureFields.model_fields)
    single |= body.model_fields_set & {"velocities", "charges"}
    if structures is not None and single:
        raise _field_error(
            name,
            "structures",
            f"give one structure ({', '.join(sorted(single))}) or structures, not both",
        )
    if structures is None:
        for field in required:
            if getattr(body, field) is None:
                raise _field_error(name, field)


class ForcesRequest(StructureFields):
    """One structure (``numbers``, ``positions``, ``cell``, ``pbc``) or
    ``structures: [...]`` (answered in the same order)."""

    structures: Annotated[
        list[ForcesStructure] | None,
        Field(min_length=1, description="several structures, answered in order"),
    ] = None

    @model_validator(mode="after")
    def _one_form(self) -> "ForcesRequest":
        _single_or_many(self, self.structures, ("positions", "numbers"))
        return self

    def items(self) -> Items:
        """(field path prefix, structure) of every structure in the request."""
        if self.structures is None:
            return [(("body",), self)]
        return [(("body", "structures", k), s) for k, s in enumerate(self.structures)]


class TrajectoryRequest(StructureFields):
    """Dynamics models: ``positions``, ``velocities``, ``charges`` (N-body) or
    ``numbers`` (MD17 trajectory), ``steps``: positions after each Δt of the card,
    autoregressively. Potential models: server-side MD from ``numbers``,
    ``positions``, optional ``velocities`` (Å/fs; zero, or Maxwell-Boltzmann at
    ``temperature`` if absent), ``timestep_fs``, ``steps``, ``every``; velocity Verlet
    (NVE), or Langevin when ``temperature`` is given. Either form takes one structure
    or ``structures: [...]``."""

    velocities: Velocities | None = None
    charges: Charges | None = None
    structures: Annotated[
        list[TrajectoryStructure] | None,
        Field(min_length=1, description="several structures, answered in order"),
    ] = None
    steps: int = Field(
        ge=1,
        strict=True,
        description="dynamics: number of Δt steps; potential: number of MD steps",
    )
    every: int = Field(
        1,
        ge=1,
        strict=True,
        description="keep every k-th step (MD frames: step 0 and every k-th step)",
    )
    timestep_fs: float = Field(
        0.5,
        gt=0,
        le=20,
        allow_inf_nan=False,
        description="potential models: MD time step, fs",
    )
    temperature: float | None = Field(
        None,
        ge=0,
        le=1e5,
        allow_inf_nan=False,
        description="potential models: Langevin thermostat temperature, K (absent: "
        "NVE velocity Verlet)",
    )
    friction: float = Field(
        0.01,
        gt=0,
        le=10,
        allow_inf_nan=False,
        description="potential models: Langevin friction, 1/fs",
    )
    seed: int | None = Field(
        None, ge=0, le=2**63 - 1, description="Langevin and initial-velocity seed"
    )
    return_forces: bool = Field(
        False, description="potential models: include forces (eV/Å) in each frame"
    )

    @model_validator(mode="after")
    def _one_form(self) -> "TrajectoryRequest":
        _single_or_many(self, self.structures, ("positions",))
        return self

    def items(self) -> Items:
        """(field path prefix, structure) of every structure in the request."""
        if self.structures is None:
            return [(("body",), self)]
        return [(("body", "structures", k), s) for k, s in enumerate(self.structures)]


# -- responses ----------------------------------------------------------------


class ForcesResult(BaseModel):
    energy: float = Field(description="potential energy, eV")
    forces: list[list[float]] = Field(description="[n_atoms, 3] forces, eV/Å")


class ForcesResponse(BaseModel):
    """One structure: ``energy`` and ``forces``; several: ``structures``."""

    model: str = Field(description="model name")
    energy: float | None = Field(None, description="potential energy, eV")
    forces: list[list[float]] | None = Field(
        None, description="[n_atoms, 3] forces, eV/Å"
    )
    structures: list[ForcesResult] | None = Field(
        None, description="one result per posted structure, in order"
    )
    units: dict[str, str] = Field(description="units of every field")


class Frame(BaseModel):
    step: int = Field(description="MD step of this frame")
    time_fs: float = Field(description="simulated time, fs")
    positions: list[list[float]] = Field(description="[n_atoms, 3] Å")
    velocities: list[list[float]] = Field(description="[n_atoms, 3] Å/fs")
    energy: float = Field(description="potential energy, eV")
    forces: list[list[float]] | None = Field(
        None, description="[n_atoms, 3] eV/Å, when return_forces"
    )


class TrajectoryResult(BaseModel):
    positions: list[list[list[float]]] | None = Field(
        None, description="dynamics: [n_frames, n_atoms, 3], after each kept Δt"
    )
    times: list[float] | None = Field(
        None, description="dynamics: time of each frame (card time unit)"
    )
    frames: list[Frame] | None = Field(None, description="potential models: MD frames")


class TrajectoryResponse(TrajectoryResult):
    """One structure: ``positions`` + ``times`` (dynamics) or ``frames`` (MD);
    several: ``structures``."""

    model: str = Field(description="model name")
    structures: list[TrajectoryResult] | None = Field(
        None, description="one result per posted structure, in order"
    )
    units: dict[str, str] = Field(description="units of every field")


class ModelList(BaseModel):
    models: list[dict[str, Any]] = Field(description="summaries of the loaded cards")
    unavailable: list[dict[str, str]] = Field(
        default_factory=list,
        description="checkpoint folders that failed to load: name and error",
    )


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="ready | not ready")
    models: list[str] = Field(description="names of the loaded models")
    failed: dict[str, str] = Field(
        default_factory=dict, description="checkpoint folders that failed, and why"
    )


# -- OpenAPI examples: they work when pasted (any CHO potential, N-body or MD17
# trajectory model). ----------------------------------------------------------------

WATER = {
    "numbers": [8, 1, 1],
    "positions": [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]],
}
METHANE = {
    "numbers": [6, 1, 1, 1, 1],
    "positions": [
        [0.0, 0.0, 0.0],
        [0.629, 0.629, 0.629],
        [-0.629, -0.629, 0.629],
        [-0.629, 0.629, -0.629],
        [0.629, -0.629, -0.629],
    ],
}
FORCES_EXAMPLES = {
    "water": {"summary": "one structure (water)", "value": WATER},
    "batch": {
        "summary": "several structures, answered in order",
        "value": {"structures": [WATER, METHANE]},
    },
    "periodic": {
        "summary": "periodic cell (potential models)",
        "value": {
            **WATER,
            "cell": [[8.0, 0, 0], [0, 8.0, 0], [0, 0, 8.0]],
            "pbc": True,
        },
    },
}
TRAJECTORY_EXAMPLES = {
    "md-nve": {
        "summary": "potential model: NVE MD, 20 steps of 0.5 fs",
        "value": {**WATER, "timestep_fs": 0.5, "steps": 20, "every": 5},
    },
    "md-langevin": {
        "summary": "potential model: Langevin MD at 300 K",
        "value": {
            **METHANE,
            "temperature": 300.0,
            "friction": 0.01,
            "seed": 0,
            "timestep_fs": 0.5,
            "steps": 20,
            "every": 10,
        },
    },
    "nbody": {
        "summary": "N-body dynamics model: 3 steps of Δt",
        "value": {
            "positions": [
                [0.5, -1.1, 0.3],
                [-1.2, 0.4, 0.8],
                [0.9, 1.3, -0.6],
                [-0.4, -0.2, -1.5],
                [1.6, 0.1, 1.1],
            ],
            "velocities": [
                [0.2, -0.1, 0.4],
                [-0.3, 0.5, 0.1],
                [0.1, 0.2, -0.6],
                [0.4, -0.4, 0.2],
                [-0.2, 0.3, 0.3],
            ],
            "charges": [1.0, -1.0, 1.0, -1.0, 1.0],
            "steps": 3,
        },
    },
    "md17-traj": {
        "summary": "MD17 trajectory dynamics model (heavy atoms, velocities in the "
        "card's unit): 2 steps of Δt",
        "value": {
            "numbers": [6, 6, 8],
            "positions": [[-1.17, -0.23, 0.0], [0.24, 0.35, 0.0], [1.16, -0.72, 0.0]],
            "velocities": [[0.001, 0.0, 0.0], [0.0, -0.001, 0.0], [0.0, 0.0, 0.001]],
            "steps": 2,
        },
    },
}
