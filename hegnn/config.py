"""ModelConfig: everything needed to rebuild a network. Saved in every card.json."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Task = Literal["potential", "dynamics"]
# How node and edge attributes are made from the raw inputs (see hegnn/features.py).
FeatureRule = Literal["species", "nbody", "md17-traj"]


class ModelConfig(BaseModel):
    """Architecture of an HEGNN (``lmax=None`` is the EGNN baseline, same code)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Task = Field(description="potential: E and F = -dE/dx; dynamics: x after Δt")
    lmax: int | None = Field(
        3,
        ge=0,
        le=6,
        description="highest degree L of the steerable branch; None = EGNN",
    )
    hidden_dim: int = Field(64, ge=1, description="width H of h and of every MLP")
    num_layers: int = Field(4, ge=1, description="number K of HEGNN layers")
    activation: Literal["silu", "softplus", "tanh"] = "silu"
    features: FeatureRule = Field(
        "species", description="rule that turns raw inputs into node/edge attributes"
    )
    species: tuple[int, ...] | None = Field(
        None, description="atomic numbers the model knows (potential models)"
    )
    r_max: float | None = Field(
        None,
        gt=0,
        description="cutoff radius (Å) of the radius graph; None = no cutoff",
    )
    num_bessel: int = Field(8, ge=1, description="Bessel radial functions (with r_max)")
    envelope_p: int = Field(6, ge=2, description="order p of the polynomial envelope")
    inner_product_map: Literal["bounded", "identity"] = Field(
        "bounded", description="bounded: z -> z / sqrt(1 + z^2) (smooth, no detach)"
    )
    coord_gain: float = Field(
        1.0, gt=0, description="init gain of phi_x's last layer (EGNN uses 0.001)"
    )
    coord_clamp: float | None = Field(
        None, gt=0, description="cap the length of each per-edge position update (Å)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> "ModelConfig":
        if self.task == "potential":
            if self.features != "species" or not self.species:
                raise ValueError("potential models need features='species' and species")
            if self.r_max is None:
                raise ValueError("potential models need a cutoff r_max")
        elif self.features == "species":
            raise ValueError("dynamics models use features 'nbody' or 'md17-traj'")
        return self

    @property
    def num_sh(self) -> int:
        """Length (L+1)^2 of the stacked steerable vector v; 0 for EGNN."""
        return 0 if self.lmax is None else (self.lmax + 1) ** 2
