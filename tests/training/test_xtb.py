"""GFN2-xTB surrogate trajectories: sGDML files read back in eV; resume after a stop."""

import os

import numpy as np
import pytest

from hegnn_serve.training.data import xtb
from hegnn_serve.training.data.md17 import load_frames
from hegnn_serve.training.data.xtb import XTBRun, partial_dir, run_xtb_md

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before tblite loads OpenMP
pytest.importorskip("tblite.ase", reason="tblite (optional extra 'xtb') not installed")


def test_three_steps_read_back_in_ev(tmp_path) -> None:
    out = tmp_path / "eth.npz"
    meta = run_xtb_md(XTBRun("ethanol", seed=0), 3, out, progress=False)
    raw = np.load(out)
    assert raw["R"].shape == (4, 9, 3) and raw["E"].shape == (4, 1)
    assert str(raw["e_unit"]) == "kcal/mol" and meta["units"]["energy"] == "kcal/mol"
    frames = load_frames(out)
    assert frames.source["format"] == "sgdml"
    assert frames.numbers.tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]
    # GFN2-xTB total energy of ethanol is about -309.5 eV (-7138 kcal/mol)
    assert frames.energies[0] == pytest.approx(-309.6, abs=0.5)
    np.testing.assert_allclose(frames.energies * 23.0605, raw["E"][:, 0], rtol=1e-4)
    # recorded forces (eV/Å after reading) are -dE/dx: finite differences on frame 3
    from ase import Atoms
    from tblite.ase import TBLite

    atoms = Atoms(numbers=frames.numbers, positions=frames.positions[3])
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    a, k = np.unravel_index(np.abs(frames.forces[3]).argmax(), (9, 3))
    h, energies = 1e-3, []
    for sign in (1, -1):
        atoms.positions[a, k] = frames.positions[3, a, k] + sign * h
        energies.append(atoms.get_potential_energy())
    fd = -(energies[0] - energies[1]) / (2 * h)
    assert abs(frames.forces[3, a, k]) > 0.1
    assert frames.forces[3, a, k] == pytest.approx(fd, rel=1e-2)
    assert meta["s_per_step"] > 0 and not partial_dir(out).exists()
    with pytest.raises(FileExistsError):
        run_xtb_md(XTBRun("ethanol", seed=0), 3, out, progress=False)


def test_resume_continues_where_it_stopped(tmp_path, monkeypatch) -> None:
    run = XTBRun("ethanol", seed=3)
    whole = run_xtb_md(run, 5, tmp_path / "whole.npz", chunk=2, progress=False)
    save = xtb._save_chunk

    def save_then_stop(folder, index, arrays):
        save(folder, index, arrays)
        if index == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(xtb, "_save_chunk", save_then_stop)
    out = tmp_path / "resumed.npz"
    with pytest.raises(KeyboardInterrupt):
        run_xtb_md(run, 5, out, chunk=2, progress=False)
    assert len(list(partial_dir(out).glob("chunk_*.npz"))) == 2 and not out.exists()
    monkeypatch.setattr(xtb, "_save_chunk", save)
    with pytest.raises(ValueError, match="settings"):
        run_xtb_md(XTBRun("ethanol", seed=4), 5, out, chunk=2, progress=False)
    resumed = run_xtb_md(run, 5, out, chunk=2, progress=False)
    a, b = np.load(tmp_path / "whole.npz"), np.load(out)
    assert b["R"].shape == (6, 9, 3) and resumed["n_frames"] == whole["n_frames"]
    np.testing.assert_array_equal(a["R"][:4], b["R"][:4])  # saved before the stop
    np.testing.assert_allclose(a["R"], b["R"], atol=1e-6)  # same RNG stream after it
    np.testing.assert_allclose(a["E"], b["E"], atol=1e-4)


def angular_momentum(frames) -> np.ndarray:
    """|sum_i m_i r_i x (R[t+1] - R[t])_i| per frame, amu Å² per frame."""
    from ase.data import atomic_masses

    m = atomic_masses[frames.numbers][None, :, None]
    x = frames.positions
    r = x[:-1] - (m * x[:-1]).sum(axis=1, keepdims=True) / m.sum()
    return np.linalg.norm((m * np.cross(r, x[1:] - x[:-1])).sum(axis=1), axis=-1)


def test_bussi_keeps_the_molecule_from_tumbling(tmp_path) -> None:
    spin = {}
    for thermostat in ("bussi", "langevin"):
        out = tmp_path / f"{thermostat}.npz"
        run = XTBRun("ethanol", thermostat=thermostat, tau_fs=5.0)
        meta = run_xtb_md(run, 20, out, progress=False)
        assert meta["thermostat"] == thermostat
        spin[thermostat] = angular_momentum(load_frames(out))[-1]
    assert spin["bussi"] < 1e-4 < 1e-2 < spin["langevin"]
