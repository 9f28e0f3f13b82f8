"""Corrupt checkpoints are skipped (logged, shown by /readyz and /v1/models, 503 on
use) unless HEGNN_STRICT_CHECKPOINTS refuses to start; MD17-trajectory models (heavy
atoms only: hydrogens are refused)."""

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from hegnn import load, make_graph_data, save
from hegnn_serve.service.schemas import TRAJECTORY_EXAMPLES

from .conftest import POTENTIAL, make_settings, running_server, tiny_dynamics

TRAJ = "tiny-traj"
BROKEN = ["bad-weights", "bad-json", "future-format", "no-card"]


def broken_checkpoints(root: Path, source: Path) -> Path:
    """One good potential, one MD17-trajectory model, and four broken folders."""
    shutil.copytree(source / POTENTIAL, root / POTENTIAL)
    save(
        tiny_dynamics("md17-traj", 3000.0),
        root / TRAJ,
        {"units": {"positions": "Å", "velocities": "Å/frame", "time": "frames"}},
    )
    shutil.copytree(source / POTENTIAL, root / "bad-weights")
    weights = root / "bad-weights" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    shutil.copytree(source / POTENTIAL, root / "bad-json")
    (root / "bad-json" / "card.json").write_text("{not json")
    shutil.copytree(source / POTENTIAL, root / "future-format")
    card = json.loads((root / "future-format" / "card.json").read_text())
    (root / "future-format" / "card.json").write_text(
        json.dumps({**card, "format_version": 99})
    )
    (root / "no-card").mkdir()
    (root / ".hidden").mkdir()  # hidden folders are not checkpoints
    return root


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory, checkpoint_dir) -> Path:
    return broken_checkpoints(tmp_path_factory.mktemp("mixed"), checkpoint_dir)


@pytest.fixture(scope="module")
def mixed(mixed_dir) -> Iterator[str]:
    with running_server(make_settings(mixed_dir)) as url:
        yield url


def test_broken_folders_are_skipped_and_reported(mixed) -> None:
    ready = httpx.get(f"{mixed}/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["models"] == [POTENTIAL, TRAJ]
    assert sorted(body["failed"]) == sorted(BROKEN)
    assert "sha256" in body["failed"]["bad-weights"]
    assert "format_version 99" in body["failed"]["future-format"]
    assert "card.json" in body["failed"]["no-card"]
    models = httpx.get(f"{mixed}/v1/models").json()
    assert [m["name"] for m in models["models"]] == [POTENTIAL, TRAJ]
    assert sorted(u["name"] for u in models["unavailable"]) == sorted(BROKEN)


def test_a_broken_model_answers_503_and_others_still_work(mixed) -> None:
    body = {"numbers": [8, 1], "positions": [[0, 0, 0], [0, 0, 0.97]]}
    response = httpx.post(f"{mixed}/v1/models/bad-weights/forces", json=body)
    assert response.status_code == 503
    assert "failed to load" in response.json()["detail"]
    good = httpx.post(f"{mixed}/v1/models/{POTENTIAL}/forces", json=body)
    assert good.status_code == 200


def test_the_failure_is_logged(mixed_dir, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="service"):
        with running_server(make_settings(mixed_dir)):
            pass
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert all(f"skipping checkpoint {mixed_dir / name}" in logged for name in BROKEN)


def test_strict_checkpoints_refuse_to_start(mixed_dir, caplog) -> None:
    settings = make_settings(mixed_dir, strict_checkpoints=True)
    with caplog.at_level(logging.ERROR):
        with pytest.raises(RuntimeError, match="did not start"):
            with running_server(settings):
                pass
    assert "refusing to start" in caplog.text
    assert "bad-json" in caplog.text  # the first broken folder, named


def test_no_models_is_not_ready(tmp_path) -> None:
    with running_server(make_settings(tmp_path)) as url:
        response = httpx.get(f"{url}/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "not ready"
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_md17_trajectory_equals_the_rollout_in_process(mixed, mixed_dir) -> None:
    example = TRAJECTORY_EXAMPLES["md17-heavy-atoms"]["value"]
    response = httpx.post(f"{mixed}/v1/models/{TRAJ}/trajectory", json=example)
    assert response.status_code == 200, response.text
    out = response.json()
    model, _ = load(mixed_dir / TRAJ)
    data = make_graph_data(
        model.config,
        example["positions"],
        numbers=example["numbers"],
        velocities=example["velocities"],
        dtype=torch.float64,
    )
    expected = model.rollout(data, example["steps"]).numpy()
    np.testing.assert_allclose(out["positions"], expected, rtol=1e-6)
    assert out["times"] == [3000.0, 6000.0]
    assert out["units"] == {"positions": "Å", "velocities": "Å/frame", "time": "frames"}


def test_md17_trajectory_model_refuses_hydrogens(mixed) -> None:
    """The card says heavy_atoms_only: a hydrogen is a 422 at numbers, by index."""
    example = TRAJECTORY_EXAMPLES["md17-heavy-atoms"]["value"]
    url = f"{mixed}/v1/models/{TRAJ}/trajectory"
    with_h = {**example, "numbers": [6, 1, 8]}
    response = httpx.post(url, json=with_h)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "numbers"]
    assert "hydrogen at atoms [1]" in error["msg"] and "heavy atoms" in error["msg"]
    state = {k: with_h[k] for k in ("numbers", "positions", "velocities")}
    good = {k: example[k] for k in state}
    body = {"structures": [good, state], "steps": 1}
    (error,) = httpx.post(url, json=body).json()["detail"]
    assert error["loc"] == ["body", "structures", 1, "numbers"]
