"""Dynamics head: prediction and autoregressive rollout."""

import torch

from hegnn import make_graph_data
from hegnn.testing import random_structure

from .conftest import tiny_model


def test_rollout_first_frame_is_the_single_step_prediction() -> None:
    model = tiny_model("dynamics", 2, "nbody")
    s = random_structure(5, seed=20)
    data = make_graph_data(
        model.config, s.positions, velocities=s.velocities, charges=s.charges
    )
    frames = model.rollout(data, steps=3)
    assert frames.shape == (3, 5, 3)
    assert torch.allclose(frames[0], model(data)["positions"].detach())
    assert not torch.allclose(frames[1], frames[0])
    assert torch.equal(data["positions"], torch.as_tensor(s.positions))  # not mutated


def test_egnn_reduction_has_no_steerable_parameters() -> None:
    egnn = tiny_model("dynamics", None, "nbody")
    hegnn = tiny_model("dynamics", 3, "nbody")
    names = {n for n, _ in egnn.named_parameters()}
    assert not any("phi_v." in n or "phi_init" in n for n in names)
    assert sum(p.numel() for p in hegnn.parameters()) > sum(
        p.numel() for p in egnn.parameters()
    )
