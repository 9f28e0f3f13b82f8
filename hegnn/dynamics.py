"""Dynamics head: (x, v, attributes) -> x after the model's Δt, and rollouts."""

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from hegnn import keys
from hegnn.config import ModelConfig
from hegnn.model import HEGNN
from hegnn.nn.radial import DistanceRadial


class DynamicsModel(nn.Module):
    r"""Future positions x(t + Δt) = HEGNN(x(t), v(t), s) (the paper's tasks).

    The backbone (radial d_ij and d_ij^2, mean aggregation, velocities in E7) moves
    x; its final x (E7 after K layers) is the prediction. ``delta_t`` is the
    time the model advances, in the time unit of the input velocities (N-body: 1.0
    time unit; MD17 trajectory: 3000 frames with v in Å/frame).
    Shapes: ``positions, velocities: [n, 3]`` -> ``positions: [n, 3]``.
    """

    def __init__(self, config: ModelConfig, delta_t: float = 1.0) -> None:
        super().__init__()
        self.config = config
        self.backbone = HEGNN(
            config, DistanceRadial(), aggregation="mean", use_velocity=True
        )
        self.register_buffer("delta_t", torch.tensor(float(delta_t)))

    def forward(self, data) -> dict[str, Tensor]:
        _, x, _ = self.backbone(data)
        return {keys.POSITIONS: x}

    @torch.no_grad()
    def rollout(
        self, data, steps: int, check: Callable[[], None] | None = None
    ) -> Tensor:
        """Autoregressive positions after Δt, 2Δt, ...: ``[steps, n, 3]``.

        The next input velocity is the mean velocity over the last step,
        (x_{t+Δt} - x_t) / Δt, an approximation the single-step model never saw.
        ``check`` is called before each step; it may raise to stop the rollout
        (the service's deadline and cancellation).
        """
        state = copy.copy(data)
        frames = []
        for _ in range(steps):
            if check is not None:
                check()
            x_next = self(state)[keys.POSITIONS]
            velocities = (x_next - state[keys.POSITIONS]) / self.delta_t
            state = copy.copy(state)
            state[keys.POSITIONS], state[keys.VELOCITIES] = x_next, velocities
            frames.append(x_next)
        return torch.stack(frames)
