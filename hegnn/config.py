"""ModelConfig: everything needed to rebuild a network. Saved in every card.json.

``Architecture`` is what a training config sets (the ``model:`` section of
``hegnn train``); ``ModelConfig`` adds what follows from the data: the task, the
input rule and the species. Each input rule (hegnn/rules/) checks its own fields.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Task = Literal["potential", "dynamics"]
# How raw inputs become a graph with node/edge attributes (hegnn/rules/).
RuleName = Literal["species", "nbody", "md17-traj"]


class Architecture(BaseModel):
    """The network and its input-rule parameters (``lmax=None`` is EGNN)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lmax: int | None = Field(
        3,
        ge=0,
        le=6,
        description="highest degree L of the steerable branch; None = EGNN",
    )
    hidden_dim: int = Field(64, ge=1, description="width H of h and of every MLP")
    num_layers: int = Field(4, ge=1, description="number K of HEGNN layers")
    activation: Literal["silu", "softplus", "tanh"] = "silu"
    r_max: float | None = Field(
        None,
        gt=0,
        description="species rule: cutoff radius (Å) of the radius graph",
    )
    bond_cutoff: float = Field(
        1.6, gt=0, description="md17-traj rule: bond length limit (Å) of the graph"
    )
    heavy_atoms_only: bool = Field(
        True, description="md17-traj rule: the model sees heavy atoms only (no H)"
    )
    num_bessel: int = Field(8, ge=1, description="Bessel radial functions (with r_max)")
    envelope_p: int = Field(6, ge=2, description="order p of the polynomial envelope")
    inner_product_map: Literal["bounded", "identity", "asinh"] = Field(
        "bounded",
        description="map of the inner products z: bounded z / sqrt(1 + z^2) "
        "(smooth, no detach), identity (the official code), asinh (unbounded, "
        "logarithmic growth)",
    )
    phi_v: Literal["mlp", "linear"] = Field(
        "mlp",
        description="gate network of the steerable update (E6): mlp = the paper's "
        "phi_v (Linear H->H, act, Linear H->L+1); linear = one Linear H->L+1 on m_ij "
        "(m_ij already ends in an activation), which drops an H x H matmul per edge "
        "and layer",
    )
    coord_gain: float = Field(
        1.0, gt=0, description="init gain of phi_x's last layer (EGNN uses 0.001)"
    )
    coord_clamp: float | None = Field(
        None, gt=0, description="cap the length of each per-edge position update (Å)"
    )


class ModelConfig(Architecture):
    """Architecture plus task, input rule and species: rebuilds the model."""

    task: Task = Field(description="potential: E and F = -dE/dx; dynamics: x after Δt")
    features: RuleName = Field(
        "species", description="input rule that turns raw inputs into a graph"
    )
    species: tuple[int, ...] | None = Field(
        None, description="atomic numbers the model knows (species rule)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> "ModelConfig":
        from hegnn.rules import input_rule  # the rules read this config

        input_rule(self).validate_config()
        return self

    @property
    def num_sh(self) -> int:
        """Length (L+1)^2 of the stacked steerable vector v; 0 for EGNN."""
        return 0 if self.lmax is None else (self.lmax + 1) ** 2

    def architecture(self) -> Architecture:
        """The training-config part of this config."""
        return Architecture(**self.model_dump(include=set(Architecture.model_fields)))
