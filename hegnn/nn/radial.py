"""Radial basis and smooth cutoff for edge lengths d_ij (Å). Knows nothing of graphs."""

import math

import torch
from torch import Tensor, nn


class PolynomialEnvelope(nn.Module):
    r"""Smooth cutoff u(d) (DimeNet), zero with zero slope at r_max.

    .. math::
        u(t) = 1 - \frac{(p+1)(p+2)}{2} t^p + p(p+2) t^{p+1} - \frac{p(p+1)}{2} t^{p+2},
        \quad t = d / r_{max},\ u = 0 \text{ for } t \ge 1

    For p = 6: u = 1 - 28 t^6 + 48 t^7 - 21 t^8.
    """

    def __init__(self, r_max: float, p: int = 6) -> None:
        super().__init__()
        self.r_max = float(r_max)
        self.p = p

    def forward(self, d: Tensor) -> Tensor:  # [n_edges] -> [n_edges]
        p = self.p
        t = d / self.r_max
        u = (
            1.0
            - 0.5 * (p + 1) * (p + 2) * t**p
            + p * (p + 2) * t ** (p + 1)
            - 0.5 * p * (p + 1) * t ** (p + 2)
        )
        return torch.where(t < 1.0, u, torch.zeros_like(u))


class BesselBasis(nn.Module):
    r"""b_n(d) = \sqrt{2/r_{max}} \sin(n \pi d / r_{max}) / d,  n = 1..N_b (fixed n).

    Shapes: ``d: [n_edges]`` -> ``[n_edges, num_basis]``.
    """

    def __init__(self, r_max: float, num_basis: int = 8) -> None:
        super().__init__()
        self.r_max = float(r_max)
        self.prefactor = math.sqrt(2.0 / self.r_max)
        self.register_buffer(
            "n_pi",
            torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi,
        )

    def forward(self, d: Tensor) -> Tensor:
        d = d.unsqueeze(-1)
        return self.prefactor * torch.sin(self.n_pi * d / self.r_max) / d


class BesselRadial(nn.Module):
    r"""Radial edge features of potential models: r_ij = b(d_ij) u(d_ij), and u.

    Smooth at the cutoff (u and its slope vanish at r_max), so E is smooth when
    atoms cross it. ``forward(d [n_edges])`` -> ``([n_edges, num_basis], [n_edges])``;
    ``initial`` is the same (E2 and the layers use one basis).
    """

    initial_is_forward = True  # the backbone reuses forward's output for E2

    def __init__(self, r_max: float, num_basis: int = 8, p: int = 6) -> None:
        super().__init__()
        self.num_features = num_basis
        self.bessel = BesselBasis(r_max, num_basis)
        self.envelope = PolynomialEnvelope(r_max, p)

    def forward(self, d: Tensor) -> tuple[Tensor, Tensor]:
        u = self.envelope(d)
        return self.bessel(d) * u.unsqueeze(-1), u

    def initial(self, d: Tensor) -> tuple[Tensor, Tensor]:
        return self(d)


class DistanceRadial(nn.Module):
    r"""Radial edge features of the paper's dynamics tasks: d_ij in E2, d_ij^2 in
    E5, no cutoff weight (``None``). Shapes: ``[n_edges]`` -> ``[n_edges, 1]``."""

    num_features = 1
    initial_is_forward = False

    def forward(self, d: Tensor) -> tuple[Tensor, None]:
        return (d * d).unsqueeze(-1), None

    def initial(self, d: Tensor) -> tuple[Tensor, None]:
        return d.unsqueeze(-1), None
