"""Request and response bodies of the HTTP API, with units in every description.

Each POST body is one structure at the top level or ``{"structures": [...]}``: a
union of two tight models (``extra="forbid"``, required fields required in the
OpenAPI schema) told apart by the ``structures`` key. Arrays are nested JSON lists.
Numbers must be JSON numbers (strings such as "1.0" or "nan" are refused) and
finite; a wrong shape, a ragged array or a length that does not match ``positions``
is a 422 whose ``loc`` names the field. What depends on the model (species, required
inputs, distances, cell) is checked by its input rule in the predictor.
"""

from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from hegnn.structure import StructureInput

COORDINATE_LIMIT = 1e6  # |value| of any coordinate, velocity or charge
# Tags of the two forms of a body; validation errors drop them from ``loc``.
ONE, MANY = "<one structure>", "<structures>"
FORMS = (ONE, MANY)

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
ModelVelocities = Annotated[
    list[Vector],
    Field(
        description="[n_atoms, 3] velocities in the velocity unit of the model card "
        "(`units.velocities` in GET /v1/models/{name}); the card's `delta_t` is in "
        "that unit's time"
    ),
]
MDVelocities = Annotated[
    list[Vector],
    Field(
        description="[n_atoms, 3] initial velocities, Å/fs (absent: zero, or "
        "Maxwell-Boltzmann at `temperature`)"
    ),
]
Charges = Annotated[
    list[Finite], Field(description="[n_atoms] charges of N-body models (±1)")
]
Cell = Annotated[
    list[Vector],
    Field(min_length=3, max_length=3, description="[3, 3] lattice vectors as rows, Å"),
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


def _field_error(model: str, field: str, message: str) -> ValidationError:
    """A validation error located at ``field``."""
    error = InitErrorDetails(
        type=PydanticCustomError("value_error", message), loc=(field,), input=None
    )
    return ValidationError.from_exception_data(model, [error])


# -- structures ---------------------------------------------------------------


class Structure(BaseModel):
    """Fields of one structure; lengths are checked against ``positions``."""

    model_config = ConfigDict(extra="forbid")

    positions: Positions

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
        """The structure as float64 (numbers: int64, pbc: bool) numpy arrays."""

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


class AtomsStructure(Structure):
    """A structure for a potential model: atoms, optionally in a periodic cell."""

    numbers: Numbers
    cell: Cell | None = None
    pbc: Pbc | None = None


class MDStructure(AtomsStructure):
    """A start state of server-side MD: atoms and optional velocities (Å/fs)."""

    velocities: MDVelocities | None = None


class DynamicsStructure(Structure):
    """A state for a dynamics model: ``charges`` (N-body) or ``numbers`` (MD17
    trajectory), as the model card's ``features`` say."""

    velocities: ModelVelocities
    charges: Charges | None = None
    numbers: Numbers | None = None


# Field path prefix of a structure in the request, and the structure.
Items = list[tuple[tuple[str | int, ...], Structure]]


class OneStructure:
    """Mixin of a body that is one structure."""

    batch: ClassVar[bool] = False

    def items(self) -> Items:
        return [(("body",), self)]


class ManyStructures(BaseModel):
    """Base of a body with ``structures: [...]``; no structure fields beside it."""

    model_config = ConfigDict(extra="forbid")
    batch: ClassVar[bool] = True
    structures: list[Structure]

    @model_validator(mode="before")
    @classmethod
    def _not_both(cls, data: Any) -> Any:
        if isinstance(data, dict):
            fields = {"numbers", "positions", "velocities", "charges", "cell", "pbc"}
            single = sorted(fields & set(data))
            if single:
                raise _field_error(
                    cls.__name__,
                    "structures",
                    f"give one structure ({', '.join(single)}) or structures, not both",
                )
        return data

    def items(self) -> Items:
        return [(("body", "structures", k), s) for k, s in enumerate(self.structures)]


def _form(value: Any) -> str | None:
    if isinstance(value, dict):
        return MANY if "structures" in value else ONE
    if isinstance(value, BaseModel):
        return MANY if isinstance(value, ManyStructures) else ONE
    return None


def one_or_many(one: type, many: type) -> Any:
    """The body type: ``one`` structure, or ``many`` when ``structures`` is given."""
    return Annotated[
        Annotated[one, Tag(ONE)] | Annotated[many, Tag(MANY)],
        Discriminator(
            _form,
            custom_error_type="body_form",
            custom_error_message="expected a JSON object: one structure, or "
            "{'structures': [...]}",
        ),
    ]


def _structures(item: type, what: str) -> Any:
    return Annotated[
        list[item],
        Field(min_length=1, description=f"several {what}, answered in order"),
    ]


# -- run parameters -----------------------------------------------------------


class RolloutParams(BaseModel):
    """How far to roll a dynamics model."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(ge=1, strict=True, description="number of Δt steps")
    every: int = Field(1, ge=1, strict=True, description="keep every k-th step")

    @model_validator(mode="after")
    def _every_within_steps(self) -> "RolloutParams":
        if self.every > self.steps:
            raise _field_error(
                type(self).__name__, "every", f"larger than steps ({self.steps})"
            )
        return self


class MDParams(RolloutParams):
    """Velocity Verlet (NVE), or Langevin when ``temperature`` is given."""

    steps: int = Field(ge=1, strict=True, description="number of MD steps")
    every: int = Field(
        1, ge=1, strict=True, description="frames at step 0 and every k-th step"
    )
    timestep_fs: float = Field(
        0.5, gt=0, le=20, allow_inf_nan=False, description="MD time step, fs"
    )
    temperature: float | None = Field(
        None,
        ge=0,
        le=1e5,
        allow_inf_nan=False,
        description="Langevin thermostat temperature, K (absent: NVE velocity Verlet)",
    )
    friction: float = Field(
        0.01, gt=0, le=10, allow_inf_nan=False, description="Langevin friction, 1/fs"
    )
    seed: int | None = Field(
        None, ge=0, le=2**63 - 1, description="Langevin and initial-velocity seed"
    )
    return_forces: bool = Field(
        False, description="include forces (eV/Å) in each frame"
    )


# -- request bodies -----------------------------------------------------------


class ForcesRequest(OneStructure, AtomsStructure):
    """One structure: ``numbers``, ``positions`` (Å), optional ``cell``, ``pbc``."""


class ForcesBatchRequest(ManyStructures):
    """Several structures, answered in order."""

    structures: _structures(AtomsStructure, "structures")


class TrajectoryRequest(OneStructure, RolloutParams, DynamicsStructure):
    """Dynamics models: positions after each Δt of the card, autoregressively, from
    ``positions``, ``velocities`` and ``charges`` (N-body) or ``numbers`` (MD17
    trajectory)."""


class TrajectoryBatchRequest(RolloutParams, ManyStructures):
    """Several dynamics states rolled out together, answered in order."""

    structures: _structures(DynamicsStructure, "states")


class MDRequest(OneStructure, MDParams, MDStructure):
    """Potential models: server-side MD from ``numbers``, ``positions`` (Å),
    optional ``cell``, ``pbc`` and ``velocities`` (Å/fs)."""


class MDBatchRequest(MDParams, ManyStructures):
    """Several MD runs with the same parameters, answered in order."""

    structures: _structures(MDStructure, "start states")


ForcesBody = one_or_many(ForcesRequest, ForcesBatchRequest)
TrajectoryBody = one_or_many(TrajectoryRequest, TrajectoryBatchRequest)
MDBody = one_or_many(MDRequest, MDBatchRequest)


# -- responses ----------------------------------------------------------------


_ENERGY_STD = "committees: std of the members' energies, eV"
_FORCES_STD = "committees: [n_atoms] RMS deviation of the members' forces, eV/Å"
_MAX_FORCE_STD = (
    "committees: max of forces_std, eV/Å; above the card's "
    "committee.uncertainty.threshold_max_force_std the answer is extrapolated"
)


class ForcesResult(BaseModel):
    energy: float = Field(description="potential energy, eV (committees: mean)")
    forces: list[list[float]] = Field(description="[n_atoms, 3] forces, eV/Å")
    energy_std: float | None = Field(None, description=_ENERGY_STD)
    forces_std: list[float] | None = Field(None, description=_FORCES_STD)
    max_force_std: float | None = Field(None, description=_MAX_FORCE_STD)


class ForcesResponse(BaseModel):
    """One structure: ``energy`` and ``forces``; several: ``structures``."""

    model: str = Field(description="model name")
    energy: float | None = Field(None, description="potential energy, eV")
    forces: list[list[float]] | None = Field(
        None, description="[n_atoms, 3] forces, eV/Å"
    )
    energy_std: float | None = Field(None, description=_ENERGY_STD)
    forces_std: list[float] | None = Field(None, description=_FORCES_STD)
    max_force_std: float | None = Field(None, description=_MAX_FORCE_STD)
    structures: list[ForcesResult] | None = Field(
        None, description="one result per posted structure, in order"
    )
    units: dict[str, str] = Field(description="units of every field")


class TrajectoryResult(BaseModel):
    positions: list[list[list[float]]] = Field(
        description="[n_frames, n_atoms, 3] positions after each kept Δt (card units)"
    )
    times: list[float] = Field(description="time of each frame (card time unit)")


class TrajectoryResponse(BaseModel):
    """One state: ``positions`` and ``times``; several: ``structures``."""

    model: str = Field(description="model name")
    positions: list[list[list[float]]] | None = Field(
        None, description="[n_frames, n_atoms, 3] positions after each kept Δt"
    )
    times: list[float] | None = Field(
        None, description="time of each frame (card time unit)"
    )
    structures: list[TrajectoryResult] | None = Field(
        None, description="one result per posted state, in order"
    )
    units: dict[str, str] = Field(description="units of every field (model card)")


class MDFrame(BaseModel):
    step: int = Field(description="MD step of this frame")
    time_fs: float = Field(description="simulated time, fs")
    positions: list[list[float]] = Field(description="[n_atoms, 3] Å")
    velocities: list[list[float]] = Field(description="[n_atoms, 3] Å/fs")
    energy: float = Field(description="potential energy, eV")
    forces: list[list[float]] | None = Field(
        None, description="[n_atoms, 3] eV/Å, when return_forces"
    )


class MDResult(BaseModel):
    frames: list[MDFrame] = Field(description="step 0 and every k-th step")


class MDResponse(BaseModel):
    """One run: ``frames``; several: ``structures``."""

    model: str = Field(description="model name")
    frames: list[MDFrame] | None = Field(None, description="step 0 and every k-th step")
    structures: list[MDResult] | None = Field(
        None, description="one run per posted structure, in order"
    )
    units: dict[str, str] = Field(description="units of every field")


class ModelList(BaseModel):
    models: list[dict[str, Any]] = Field(description="summaries of the loaded cards")
    unavailable: list[dict[str, str]] = Field(
        default_factory=list,
        description="checkpoint folders that failed to load: name and error",
    )


class ErrorMessage(BaseModel):
    """Every error answer but 422: what went wrong, in words (limits and settings
    named by their HEGNN_* variable; 500s carry the request id)."""

    detail: str


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
NBODY_STATE = {
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
}
TRAJECTORY_EXAMPLES = {
    "n-body": {
        "summary": "N-body model (charged particles): 3 steps of Δt",
        "value": {**NBODY_STATE, "steps": 3},
    },
    "md17-heavy-atoms": {
        "summary": "MD17 trajectory model (heavy atoms, velocities in the card's "
        "unit): 2 steps of Δt",
        "value": {
            "numbers": [6, 6, 8],
            "positions": [[-1.17, -0.23, 0.0], [0.24, 0.35, 0.0], [1.16, -0.72, 0.0]],
            "velocities": [[0.001, 0.0, 0.0], [0.0, -0.001, 0.0], [0.0, 0.0, 0.001]],
            "steps": 2,
        },
    },
}
MD_EXAMPLES = {
    "nve": {
        "summary": "NVE velocity Verlet, 20 steps of 0.5 fs",
        "value": {**WATER, "timestep_fs": 0.5, "steps": 20, "every": 5},
    },
    "langevin": {
        "summary": "Langevin at 300 K from Maxwell-Boltzmann velocities",
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
    "batch": {
        "summary": "two structures with the same run parameters",
        "value": {"structures": [WATER, METHANE], "steps": 10, "every": 5},
    },
}
