"""hegnn: HEGNN (Cen et al., NeurIPS 2024) and its EGNN baseline, as a library.

Knows nothing of training loops or HTTP.
"""

from hegnn.build import build_model
from hegnn.calculator import HEGNNCalculator
from hegnn.checkpoint import (
    CheckpointError,
    ModelCard,
    load,
    read_card,
    save,
    save_committee,
)
from hegnn.committee import Committee
from hegnn.compiled import compile_backbones
from hegnn.config import Architecture, ModelConfig
from hegnn.device import resolve_device
from hegnn.dynamics import DynamicsModel
from hegnn.errors import InputError
from hegnn.inputs import make_graph_data
from hegnn.model import HEGNN
from hegnn.nn.layer import HEGNNLayer
from hegnn.potential import PotentialModel
from hegnn.rules import InputRule, input_rule
from hegnn.structure import StructureInput

__all__ = [
    "HEGNN",
    "Architecture",
    "InputError",
    "InputRule",
    "StructureInput",
    "input_rule",
    "resolve_device",
    "CheckpointError",
    "Committee",
    "DynamicsModel",
    "HEGNNCalculator",
    "HEGNNLayer",
    "ModelCard",
    "ModelConfig",
    "PotentialModel",
    "build_model",
    "compile_backbones",
    "load",
    "make_graph_data",
    "read_card",
    "save",
    "save_committee",
]
