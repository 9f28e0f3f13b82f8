"""Build the right model for a ModelConfig."""

from torch import nn

from hegnn import keys
from hegnn.config import ModelConfig
from hegnn.dynamics import DynamicsModel
from hegnn.potential import PotentialModel


def build_model(config: ModelConfig) -> nn.Module:
    """A PotentialModel or a DynamicsModel with freshly initialised weights."""
    if config.task == keys.TASK_POTENTIAL:
        return PotentialModel(config)
    return DynamicsModel(config)
