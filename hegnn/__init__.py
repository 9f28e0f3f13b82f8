"""hegnn: HEGNN (Cen et al., NeurIPS 2024) and its EGNN baseline, as a library.

Knows nothing of training loops or HTTP.
"""

from hegnn.build import build_model
from hegnn.calculator import HEGNNCalculator
from hegnn.checkpoint import CheckpointError, ModelCard, load, read_card, save
from hegnn.config import ModelConfig
from hegnn.dynamics import DynamicsModel
from hegnn.inputs import make_graph_data
from hegnn.model import HEGNN
from hegnn.nn.layer import HEGNNLayer
from hegnn.potential import PotentialModel

__all__ = [
    "HEGNN",
    "CheckpointError",
    "DynamicsModel",
    "HEGNNCalculator",
    "HEGNNLayer",
    "ModelCard",
    "ModelConfig",
    "PotentialModel",
    "build_model",
    "load",
    "make_graph_data",
    "read_card",
    "save",
]
