"""Symmetric-structure expressivity (HEGNN.md §5-6): which output degrees can see a
structure's orientation, computed analytically and by training the toy classifier."""

from hegnn_serve.training.expressivity.analytic import blind_degree_table, blind_degrees
from hegnn_serve.training.expressivity.structures import (
    STRUCTURES,
    Structure,
    random_rotation,
)

__all__ = [
    "STRUCTURES",
    "Structure",
    "blind_degree_table",
    "blind_degrees",
    "random_rotation",
]
