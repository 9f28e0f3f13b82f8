"""Input rules: one class per kind of raw input (see base.InputRule).

``input_rule(config)`` returns the rule a ModelConfig names in ``features``; the
config validator, ``make_graph_data``, the training datasets, the in-process
calculator and the service all ask it.
"""

from hegnn.rules.base import InputRule
from hegnn.rules.md17_traj import MD17TrajRule
from hegnn.rules.nbody import NBodyRule
from hegnn.rules.species import SpeciesRule

RULES: dict[str, type[InputRule]] = {
    rule.name: rule for rule in (SpeciesRule, NBodyRule, MD17TrajRule)
}


def input_rule(config) -> InputRule:
    """The rule object for ``config.features``, reading its parameters."""
    return RULES[config.features](config)


__all__ = [
    "RULES",
    "InputRule",
    "MD17TrajRule",
    "NBodyRule",
    "SpeciesRule",
    "input_rule",
]
