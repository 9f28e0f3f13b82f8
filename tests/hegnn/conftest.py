import pytest
import torch

from hegnn import ModelConfig, build_model

LMAXES = [None, 0, 1, 2, 3, 6]


def tiny_model(task: str, lmax: int | None, features: str | None = None, **overrides):
    """A small float64 model with random weights and non-trivial statistics."""
    torch.manual_seed(0)
    if task == "potential":
        config = ModelConfig(
            task="potential",
            lmax=lmax,
            hidden_dim=16,
            num_layers=2,
            species=(1, 6, 8),
            r_max=4.0,
            **overrides,
        )
    else:
        config = ModelConfig(
            task="dynamics",
            lmax=lmax,
            hidden_dim=16,
            num_layers=2,
            features=features or "nbody",
            **overrides,
        )
    model = build_model(config).to(torch.float64)
    if task == "potential":
        model.set_statistics(torch.tensor([-13.6, -1029.0, -2041.0]), 5.0, -0.1, 9.0)
    return model.eval()


@pytest.fixture(autouse=True)
def _float64_and_threads():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
