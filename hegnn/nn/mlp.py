"""The φ multi-layer perceptron used for every learned map in the model."""

from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
}


class MLP(nn.Module):
    """MLP(a -> b) = Linear(a, H), act, Linear(H, b), optionally act ("+σ").

    ``out_gain`` scales the initial weights of the last layer (EGNN's φ_x uses 0.001).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        activation: str = "silu",
        final_activation: bool = False,
        out_gain: float = 1.0,
        out_bias: bool = True,
    ) -> None:
        super().__init__()
        act = ACTIVATIONS[activation]
        last = nn.Linear(hidden_dim, out_dim, bias=out_bias)
        if out_gain != 1.0:
            nn.init.xavier_uniform_(last.weight, gain=out_gain)
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), act(), last]
        if final_activation:
            layers.append(act())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # [..., in_dim] -> [..., out_dim]
        return self.net(x)
