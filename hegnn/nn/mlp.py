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

    def forward_pairwise(
        self, h: Tensor, i: Tensor, j: Tensor, before: Tensor, after: Tensor
    ) -> Tensor:
        """``self(cat([before, h[i], h[j], after], -1))`` without building the concat.

        The first layer is linear, so W [b, h_i, h_j, a] = W_b b + (W_i h)[i] +
        (W_j h)[j] + W_a a: the node parts are projected once per node, not per edge.
        Shapes: ``h: [n, H]``, ``i, j: [n_edges]``, ``before: [n_edges, d_b]``,
        ``after: [n_edges, d_a]`` -> ``[n_edges, out_dim]``; with stacked members
        (hegnn/stacked.py) each may carry a leading ``[M]``.
        """
        first = self.net[0]
        w = first.weight  # [hidden, d_b + 2H + d_a] (or [M, hidden, ...]: stacked)
        n_b, n_h = before.shape[-1], h.shape[-1]
        n_a = w.shape[-1] - n_b - 2 * n_h
        w_b, w_i, w_j, w_a = w.split([n_b, n_h, n_h, n_a], -1)
        pre = (h @ w_i.mT)[..., i, :] + (h @ w_j.mT)[..., j, :] + first.bias
        if n_b:
            pre = pre + before @ w_b.mT
        if n_a:
            pre = pre + after @ w_a.mT
        return self.net[1:](pre)
