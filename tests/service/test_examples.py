"""The scripts in examples/ run end to end against a real server and write their files.

Each runs in a fresh interpreter (as a user would run it) with few steps. Fixtures
``server_url`` ("tiny-ff": species 1, 6, 8; "tiny-nbody") from conftest.py.
"""

import subprocess
import sys
from pathlib import Path

from ase.io import read

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_example(script: str, *args: str) -> str:
    """Run ``examples/<script>`` and return its stdout; fail with its stderr."""
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_md_remote(server_url: str, tmp_path: Path) -> None:
    summary = run_example(
        "md_remote.py",
        *("--url", server_url, "--model", "tiny-ff", "--molecule", "aspirin"),
        *("--steps", "20", "--langevin-steps", "20", "--every", "5"),
        *("--out", str(tmp_path)),
    )
    frames = read(tmp_path / "md_remote.extxyz", index=":")
    assert len(frames) == 10  # steps 0, 5, ..., 20 of each phase
    assert frames[-1].info["phase"] == "nve"
    assert frames[-1].get_forces().shape == (len(frames[0]), 3)
    assert_png(tmp_path / "md_remote_energy.png")
    assert "meV/atom/ps" in summary


def test_md_remote_server_side(server_url: str, tmp_path: Path) -> None:
    """The same phases through /md, in requests of at most 10 steps."""
    summary = run_example(
        "md_remote.py",
        *("--url", server_url, "--model", "tiny-ff", "--molecule", "ethanol"),
        *("--steps", "20", "--langevin-steps", "20", "--every", "5"),
        *("--server-side", "--chunk", "10", "--out", str(tmp_path)),
    )
    frames = read(tmp_path / "md_remote.extxyz", index=":")
    assert len(frames) == 10  # steps 0, 5, ..., 20 of each phase, none repeated
    times = [frame.info["time_fs"] for frame in frames]
    assert times == [2.5 * k for k in range(5)] + [10 + 2.5 * k for k in range(5)]
    assert [f.info["phase"] for f in frames] == ["langevin"] * 5 + ["nve"] * 5
    assert frames[-1].get_forces().shape == (len(frames[0]), 3)
    assert_png(tmp_path / "md_remote_energy.png")
    assert "meV/atom/ps" in summary


def test_relax_remote(server_url: str, tmp_path: Path) -> None:
    summary = run_example(
        "relax_remote.py",
        *("--url", server_url, "--model", "tiny-ff", "--molecule", "ethanol"),
        *("--fmax", "1e-5", "--steps", "5", "--out", str(tmp_path)),
    )
    frames = read(tmp_path / "relax_remote.extxyz", index=":")
    assert len(frames) == 6  # the initial state and 5 BFGS steps
    assert frames[-1].get_potential_energy() <= frames[0].get_potential_energy()
    assert_png(tmp_path / "relax_remote.png")
    assert "steps: E" in summary


def test_nbody_rollout(server_url: str, tmp_path: Path) -> None:
    summary = run_example(
        "nbody_rollout.py",
        *("--url", server_url, "--model", "tiny-nbody", "--steps", "3"),
        *("--out", str(tmp_path)),
    )
    assert_png(tmp_path / "nbody_rollout.png")
    assert "position MSE" in summary


def test_nbody_reference_is_the_training_simulator() -> None:
    """The example's few-line integrator equals training.data.nbody's."""
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import nbody_rollout
    finally:
        sys.path.remove(str(REPO / "examples"))
    from hegnn_serve.training.data.nbody import simulate

    x, v, q = nbody_rollout.initial_state(5, seed=0)
    reference = nbody_rollout.simulate(x, v, q, delta_t=0.1, steps=2)
    positions, _ = simulate(x[None], v[None], q[None], 0.001, (100, 200))
    assert abs(reference[1:] - positions[0]).max() < 1e-12
