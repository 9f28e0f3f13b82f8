"""Optional ``torch.compile`` of a loaded model's backbones, for inference."""

import torch._dynamo
from torch import nn

from hegnn.model import HEGNN


def compile_backbones(model: nn.Module) -> nn.Module:
    """Compile every HEGNN backbone of ``model`` (one model or a committee) in place,
    with dynamic shapes, and return ``model``.

    The first call traces and compiles (on a 2-core CPU 15-40 s for L = 3); later
    calls of any structure or batch size reuse the code. Weights and state_dict keys
    are unchanged (``nn.Module.compile``). Inference only: force training needs a
    double backward, which compiled graphs do not support. Measured on one CPU
    thread, aspirin energy + forces, HEGNN L = 3: 7.7 -> 3.7 ms for one structure,
    97 -> 54 ms for 32 (README, "Compiled models"). A committee compiles its
    stacked copy of the members (hegnn/stacked.py) when it first builds it.
    """
    # All backbones share HEGNN.forward's code, which dynamo compiles once per
    # architecture, dtype and periodicity; a server of many models needs more than
    # the default 8 entries (beyond the limit it would silently run eager).
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, 64)
    for module in model.modules():
        if isinstance(module, HEGNN):
            module.compile(dynamic=True)
    return model
