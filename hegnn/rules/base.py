"""The input-rule interface: how one kind of raw input becomes a model's graph.

A rule owns, for its kind of input: the inputs it requires and refuses, its checks
(species, heavy atoms), the graph builder and its parameters (read from the
ModelConfig, so they are stored in every card), the node/edge attribute sizes and
values, the atoms a dataset keeps, the length unit and the card's graph text.
Nothing outside hegnn/rules/ compares rule names.
"""

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from torch import Tensor

from hegnn import keys
from hegnn.errors import InputError
from hegnn.structure import StructureInput

if TYPE_CHECKING:
    from hegnn.config import ModelConfig

OPTIONAL_FIELDS = ("numbers", "velocities", "charges", "cell", "pbc")


class InputRule(ABC):
    """Base of the rules; ``input_rule(config)`` picks the one a config names."""

    name: ClassVar[str]  # ModelConfig.features
    task: ClassVar[str]  # the head it feeds: "potential" or "dynamics"
    required: ClassVar[tuple[str, ...]]  # inputs a structure must give
    refused: ClassVar[tuple[str, ...]]  # inputs it must not give (pbc: if any true)
    uses: ClassVar[tuple[str, ...]]  # inputs stored on the graph for the model
    node_dim: int  # size of the invariant node attributes s_i
    edge_dim: int  # size of the static invariant edge attributes e_ij
    length_unit: ClassVar[str] = "Å"

    def __init__(self, config: "ModelConfig") -> None:
        self.config = config

    def validate_config(self) -> None:
        """ValueError when the config cannot use this rule."""
        if self.config.task != self.task:
            raise ValueError(
                f"features {self.name!r} feeds a {self.task} model, not a "
                f"{self.config.task} model"
            )

    def check(self, s: StructureInput) -> None:
        """InputError naming the field when ``s`` does not fit this rule."""
        kind = f"{self.task} model ({self.name} inputs)"
        for field in self.required:
            if getattr(s, field) is None:
                raise InputError(field, f"required by this {kind}")
        for field in self.refused:
            value = getattr(s, field)
            if value is not None and (field != "pbc" or bool(np.any(value))):
                raise InputError(field, f"not used by this {kind}; remove it")

    def atom_mask(self, numbers: np.ndarray) -> np.ndarray:
        """Which atoms of a molecule the model sees (datasets keep only these)."""
        return np.ones(len(numbers), dtype=bool)

    def min_distance(self, default: float) -> float:
        """Closest allowed pair distance, in this rule's length unit."""
        return default

    @abstractmethod
    def edges(
        self,
        positions: np.ndarray,
        cell: np.ndarray | None = None,
        pbc: np.ndarray | None = None,
    ) -> dict[str, Tensor]:
        """Graph of one structure: ``edge_index [2, n_edges]`` (j -> i) and the
        rule's edge fields (``edge_shifts`` or ``edge_hop``), keyed as hegnn.keys."""

    def count_edges(
        self,
        positions: np.ndarray,
        cell: np.ndarray | None = None,
        pbc: np.ndarray | None = None,
    ) -> int:
        """Edges ``edges()`` would build, to refuse a structure before its graph
        (and the model's memory per edge) exists. Rules override it with a count
        that needs no more memory than the neighbour list."""
        return int(self.edges(positions, cell, pbc)[keys.EDGE_INDEX].shape[1])

    @abstractmethod
    def attributes(self, data, x_ij: Tensor) -> tuple[Tensor, Tensor]:
        """Node attributes ``[n, node_dim]`` and static edge attributes
        ``[n_edges, edge_dim]`` of a graph (or batch); all E(3)-invariant."""

    @abstractmethod
    def describe(self) -> str:
        """The graph rule in words, for the model card."""
