"""Charged N-body simulator (HEGNN.md §7) and the nbody task dataset."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hegnn import keys, make_graph_data
from hegnn.config import ModelConfig
from hegnn_serve.training.data.cli import data_app
from hegnn_serve.training.data.nbody import (
    coulomb_forces,
    generate_nbody,
    initial_conditions,
    nbody_protocol,
    simulate,
    total_energy,
)
from hegnn_serve.training.data.tasks import nbody_dataset, rotation_xyz

from .graphs import assert_served_graph_plus

NBODY = ModelConfig(task="dynamics", features="nbody", lmax=1, hidden_dim=8)


def synced_energy(x: np.ndarray, v: np.ndarray, q: np.ndarray, dt: float) -> np.ndarray:
    """Energy with v moved half a kick forward, to the time of x (leapfrog pairing)."""
    return total_energy(x, v + 0.5 * dt * coulomb_forces(x, q), q)


def test_forces_two_bodies_and_clip() -> None:
    x = np.array([[[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]]])
    q = np.array([[1.0, -1.0]])
    f = coulomb_forces(x, q)
    np.testing.assert_allclose(f[0, 0], [4.0, 0.0, 0.0])  # opposite charges attract
    np.testing.assert_allclose(f.sum(axis=1), 0.0, atol=1e-12)
    close = x * 0.1  # |F| = 400 -> clipped to 100
    np.testing.assert_allclose(coulomb_forces(close, q, 100.0)[0, 0], [100.0, 0, 0])


def test_integrator_conserves_energy_without_clip() -> None:
    p = nbody_protocol("hegnn", 5, sizes=(16, 0, 0), clip=False)
    x0, v0, q, _ = initial_conditions(p, seed=0)
    drift = {}
    for dt in (1e-3, 1e-4):
        steps = (1, int(round(0.5 / dt)))
        x, v = simulate(x0, v0, q, dt, steps, max_force=None)
        e0, e1 = (synced_energy(x[:, k], v[:, k], q, dt) for k in range(2))
        drift[dt] = np.abs(e1 - e0) / np.abs(e0)
    assert drift[1e-4].max() < 1e-4
    # second order: ten times smaller dt, about a hundred times smaller drift
    assert np.median(drift[1e-4]) < np.median(drift[1e-3]) / 30


def egnn_reference(rs: np.random.RandomState) -> tuple[np.ndarray, ...]:
    """EGNN's sample_trajectory(T=5000, sample_freq=100) transcribed, one body set."""
    n = 5
    charges = rs.choice(np.array([-1.0, 0.0, 1.0]), size=(n, 1), p=[0.5, 0, 0.5])
    x, v = rs.randn(3, n), rs.randn(3, n)
    v = v * 0.5 / np.sqrt((v**2).sum(axis=0)).reshape(1, -1)

    def force(x: np.ndarray) -> np.ndarray:
        d = x.T[:, None, :] - x.T[None, :, :]
        with np.errstate(divide="ignore"):
            size = charges @ charges.T / ((d**2).sum(-1)) ** 1.5
        np.fill_diagonal(size, 0)
        return np.clip((size[:, :, None] * d).sum(1).T, -100, 100)

    saved = []
    v = v + 0.001 * force(x)
    for i in range(1, 5000):
        x = x + 0.001 * v
        if i % 100 == 0:
            saved.append((x.T.copy(), v.T.copy()))
        v = v + 0.001 * force(x)
    rs.randn(49, 3, n), rs.randn(49, 3, n)  # noise draws of variance 0
    return np.stack([s[0] for s in saved]), np.stack([s[1] for s in saved]), charges


def test_egnn_protocol_matches_reference_generator() -> None:
    p = nbody_protocol("egnn", sizes=(2, 0, 0))
    x0, v0, q, pool_index = initial_conditions(p, seed=43)
    assert pool_index.tolist() == [0, 1]
    x, v = simulate(x0, v0, q, p.dt, p.save_steps, p.max_force)
    rs = np.random.RandomState(43)
    for s in range(2):
        x_ref, v_ref, q_ref = egnn_reference(rs)
        np.testing.assert_array_equal(q[s], q_ref[:, 0])
        np.testing.assert_allclose(x[s], x_ref, atol=1e-9)
        np.testing.assert_allclose(v[s], v_ref, atol=1e-9)


def test_generate_is_deterministic_per_seed(tmp_path) -> None:
    p = nbody_protocol("hegnn", 4, sizes=(3, 2, 2))
    metas = [
        generate_nbody(tmp_path / f"{k}.npz", p, seed)
        for k, seed in enumerate((1, 1, 2))
    ]
    a, b, c = (np.load(tmp_path / f"{k}.npz") for k in range(3))
    for name in ("positions", "velocities", "charges", "train_idx", "test_idx"):
        np.testing.assert_array_equal(a[name], b[name])
    assert metas[0]["sha256"] == metas[1]["sha256"] != metas[2]["sha256"]
    assert not np.array_equal(a["positions"], c["positions"])
    assert a["positions"].shape == (7, 50, 4, 3)
    assert a["charges"].shape == (7, 4) and set(np.unique(a["charges"])) <= {-1, 1}
    meta = json.loads(str(a["metadata"]))
    assert meta["units"] == "simulation units" and meta["seed"] == 1
    assert meta["protocol"] == "hegnn" and meta["wall_time_s"] > 0
    assert meta["save_steps"][:2] == [1, 101] and len(meta["frame_times"]) == 50
    assert meta["loc_std"] == pytest.approx((4 / 5) ** (1 / 3) + 0.1)


def test_protocol_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="protocol"):
        nbody_protocol("gmn")
    with pytest.raises(ValueError, match="n_bodies"):
        nbody_protocol("egnn", 1)


@pytest.fixture(scope="module")
def nbody_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("nbody") / "egnn.npz"
    generate_nbody(path, nbody_protocol("egnn", 5, sizes=(4, 3, 3)), seed=43)
    return path


def test_egnn_file_layout(nbody_file) -> None:
    raw = np.load(nbody_file)
    meta = json.loads(str(raw["metadata"]))
    assert raw["positions"].shape == raw["velocities"].shape == (10, 49, 5, 3)
    assert meta["save_steps"][:2] == [100, 200] and meta["frame_times"][-1] == 4.9
    assert meta["pool_sizes"] == {"train": 10000, "val": 2000, "test": 2000}
    # the first sizes[split] simulations of each pool, in the drawn stream
    drawn = [0, 1, 2, 3, 10000, 10001, 10002, 12000, 12001, 12002]
    assert raw["pool_index"].tolist() == drawn
    assert raw["val_idx"].tolist() == [4, 5, 6] and meta["max_force"] == 100.0


def test_nbody_dataset_fields(nbody_file) -> None:
    graphs = nbody_dataset(NBODY, nbody_file, "val")
    raw = np.load(nbody_file)
    assert len(graphs) == 3
    g = graphs[1]
    s = raw["val_idx"][1]
    assert g.num_nodes == 5 and g[keys.EDGE_INDEX].shape == (2, 20)
    j, i = g[keys.EDGE_INDEX]
    assert bool((j != i).all())
    np.testing.assert_allclose(g[keys.POSITIONS].numpy(), raw["positions"][s, 30], 1e-6)
    np.testing.assert_allclose(
        g[keys.VELOCITIES].numpy(), raw["velocities"][s, 30], 1e-6
    )
    np.testing.assert_allclose(
        g[keys.TARGET_POSITIONS].numpy(), raw["positions"][s, 40], 1e-6
    )
    np.testing.assert_array_equal(g[keys.CHARGES].numpy(), raw["charges"][s])
    with pytest.raises(ValueError, match="frame_out"):
        nbody_dataset(NBODY, nbody_file, "val", frame_out=49)
    with pytest.raises(ValueError, match="split"):
        nbody_dataset(NBODY, nbody_file, "valid")


def test_nbody_dataset_graph_is_make_graph_data(nbody_file) -> None:
    """Training builds its graphs by the service's path; only the target is added."""
    raw = np.load(nbody_file)
    for dtype in (torch.float32, torch.float64):
        g = nbody_dataset(NBODY, nbody_file, "train", dtype=dtype)[2]
        s = raw["train_idx"][2]
        served = make_graph_data(
            NBODY,
            raw["positions"][s, 30],
            velocities=raw["velocities"][s, 30],
            charges=raw["charges"][s],
            dtype=dtype,
        )
        assert_served_graph_plus(g, served, keys.TARGET_POSITIONS)


def test_nbody_dataset_rotation_is_seeded_per_sample(nbody_file) -> None:
    plain = nbody_dataset(NBODY, nbody_file, "test", dtype=torch.float64)
    rotated = nbody_dataset(
        NBODY, nbody_file, "test", rotate=True, seed=7, dtype=torch.float64
    )
    again = nbody_dataset(
        NBODY, nbody_file, "test", rotate=True, seed=7, dtype=torch.float64
    )
    s = int(np.load(nbody_file)["test_idx"][0])
    r = rotation_xyz(*np.random.default_rng([7, s]).integers(0, 360, size=3))
    for key in (keys.POSITIONS, keys.VELOCITIES, keys.TARGET_POSITIONS):
        expected = plain[0][key].numpy() @ r.T
        np.testing.assert_allclose(rotated[0][key].numpy(), expected, atol=1e-12)
        assert torch.equal(rotated[0][key], again[0][key])
    assert not torch.allclose(rotated[0][keys.POSITIONS], rotated[1][keys.POSITIONS])
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


def test_cli_nbody(tmp_path) -> None:
    out = tmp_path / "n.npz"
    args = ["nbody", "--protocol", "hegnn", "--bodies", "3", "--seed", "5"]
    sizes = ["--train", "2", "--val", "1", "--test", "1"]
    result = CliRunner().invoke(data_app, [*args, *sizes, "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = json.loads(str(np.load(out)["metadata"]))
    assert meta["seed"] == 5 and meta["sizes"] == {"train": 2, "val": 1, "test": 1}
    result = CliRunner().invoke(data_app, [*args, "--train", "2", "--out", str(out)])
    assert result.exit_code == 2 and "--val" in result.output


# Content hashes of small sets (seed 43, 5 bodies, sizes 6/3/3, all frames): the
# generator is bit-reproducible (float64, correctly rounded operations, fixed order),
# so these hold on any machine and numpy/BLAS build.
PINNED_SHA256 = {
    "egnn": "a392e997be8760ffab99a43ed5e5da9ce362e8fa2ae639109b20168717b64276",
    "hegnn": "1a8eb35ee4f5ad6e2831d4109a8abd5c48b56b2eed2b5fe2528cb9734443c3d7",
}
_HASH_SCRIPT = """
import sys, tempfile
from hegnn_serve.training.data.nbody import generate_nbody, nbody_protocol
with tempfile.TemporaryDirectory() as d:
    for name in ("egnn", "hegnn"):
        p = nbody_protocol(name, 5, sizes=(6, 3, 3))
        print(name, generate_nbody(f"{d}/{name}.npz", p, 43)["sha256"])
"""


def _hashes(env: dict[str, str] | None = None) -> dict[str, str]:
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run(
        [sys.executable, "-c", _HASH_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, **(env or {})},
    ).stdout
    return dict(line.split() for line in out.splitlines())


@pytest.mark.parametrize("protocol", ["egnn", "hegnn"])
def test_generated_content_hash_is_pinned(tmp_path, protocol) -> None:
    p = nbody_protocol(protocol, 5, sizes=(6, 3, 3))
    meta = generate_nbody(tmp_path / "n.npz", p, 43)
    assert meta["sha256"] == PINNED_SHA256[protocol]


def test_generator_does_not_depend_on_cpu_dispatch() -> None:
    """numpy's AVX-512 kernels (pow among them) must not change a single bit."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # pragma: no cover - older numpy layout
        from numpy.core._multiarray_umath import __cpu_features__ as features
    wide = [
        f for f in ("X86_V4", "AVX512_ICL", "AVX512_SPR", "AVX512F") if features.get(f)
    ]
    if not wide:
        pytest.skip("this CPU has no AVX-512 features for numpy to dispatch to")
    narrow = _hashes({"NPY_DISABLE_CPU_FEATURES": " ".join(wide)})
    assert narrow == PINNED_SHA256
