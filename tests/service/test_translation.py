"""Over HTTP, with the models in float32: forces, MD and rollouts do not depend on
where the structure sits (positions centred in float64 before the model, moved
back in answers)."""

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from hegnn_serve.service.schemas import NBODY_STATE

from .conftest import NBODY, POTENTIAL, make_settings, running_server

FAR = 1e5  # Å: float32 spacing there is 0.008 Å
ATOL = 1e-5  # eV/Å

METHANOL = {
    "numbers": [6, 8, 1, 1, 1, 1],
    "positions": [
        [-0.046, 0.663, 0.0],
        [-0.046, -0.757, 0.0],
        [-1.086, 0.975, 0.0],
        [0.437, 1.070, 0.890],
        [0.437, 1.070, -0.890],
        [0.862, -1.087, 0.0],
    ],
}


@pytest.fixture(scope="module")
def float32_server(checkpoint_dir) -> Iterator[httpx.Client]:
    settings = make_settings(checkpoint_dir, dtype="float32")
    with (
        running_server(settings) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client


def moved(body: dict, offset: float) -> dict:
    return {**body, "positions": (np.array(body["positions"]) + offset).tolist()}


def test_forces_do_not_depend_on_absolute_position(float32_server) -> None:
    url = f"/v1/models/{POTENTIAL}/forces"
    near = float32_server.post(url, json=METHANOL).json()
    far = float32_server.post(url, json=moved(METHANOL, FAR)).json()
    np.testing.assert_allclose(far["forces"], near["forces"], rtol=0, atol=ATOL)
    assert abs(far["energy"] - near["energy"]) <= 1e-6 * abs(near["energy"])
    cell = [[7.0, 0, 0], [0, 7.5, 0], [0, 0, 8.0]]
    periodic = {**METHANOL, "cell": cell, "pbc": [True, True, True]}
    near = float32_server.post(url, json=periodic).json()
    far = float32_server.post(url, json=moved(periodic, -FAR)).json()
    np.testing.assert_allclose(far["forces"], near["forces"], rtol=0, atol=ATOL)


def test_md_and_rollouts_move_with_the_structure(float32_server) -> None:
    md = {**METHANOL, "timestep_fs": 0.5, "steps": 4, "every": 2}
    near = float32_server.post(f"/v1/models/{POTENTIAL}/md", json=md).json()
    far = float32_server.post(f"/v1/models/{POTENTIAL}/md", json=moved(md, FAR))
    for a, b in zip(near["frames"], far.json()["frames"], strict=True):
        np.testing.assert_allclose(
            np.array(b["positions"]) - FAR, a["positions"], rtol=0, atol=1e-6
        )
    rollout = {**NBODY_STATE, "steps": 3}
    url = f"/v1/models/{NBODY}/trajectory"
    near = float32_server.post(url, json=rollout).json()
    far = float32_server.post(url, json=moved(rollout, FAR)).json()
    np.testing.assert_allclose(
        np.array(far["positions"]) - FAR, near["positions"], rtol=0, atol=1e-6
    )
