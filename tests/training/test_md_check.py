"""`hegnn md-check`: NVE through HEGNNCalculator reports drift and stability."""

from pathlib import Path

import numpy as np
from ase.io import read

from hegnn import HEGNNCalculator, save
from hegnn_serve.training.data.md17 import load_frames
from hegnn_serve.training.md_check import run_nve
from tests.hegnn.conftest import tiny_model

ROOT = Path(__file__).resolve().parents[2]


def test_short_nve_run_is_stable_and_conserves_energy(tmp_path) -> None:
    model = tiny_model("potential", 2).float()
    save(model, tmp_path / "ff", {"units": {"energy": "eV"}})
    result = run_nve(
        tmp_path / "ff",
        ROOT / "data/md17/rmd17_ethanol_random100.xyz",
        picoseconds=0.01,
        timestep_fs=0.5,
        equilibrate_ps=0.01,
        relax_fmax=1e-3,
    )
    assert result["steps"] == 20 and result["n_atoms"] == 9
    relaxation = result["relaxation"]
    assert relaxation["converged"] and relaxation["steps"] > 0
    assert relaxation["energy_change_ev"] < 0  # a real snapshot is not a minimum
    assert result["equilibration"]["picoseconds"] == 0.01
    assert result["stable"] and np.isfinite(result["drift_mev_per_atom_per_ps"])
    # Velocity Verlet at 0.5 fs on a smooth potential: total energy moves far less
    # than kT per atom (26 meV) over 10 fs.
    assert result["max_abs_energy_change_mev_per_atom"] < 2.6


def test_trajectory_frames_carry_the_model_energy_and_read_back_as_md_frames(
    tmp_path,
) -> None:
    model = tiny_model("potential", 2).float()
    save(model, tmp_path / "ff", {"units": {"energy": "eV"}})
    traj = tmp_path / "nve.xyz"
    result = run_nve(
        tmp_path / "ff",
        ROOT / "data/md17/rmd17_ethanol_random100.xyz",
        picoseconds=0.01,
        equilibrate_ps=0.0,
        trajectory=traj,
        trajectory_every_fs=2.5,
    )
    # 20 steps, a frame every 5 steps from step 0: 5 frames
    assert result["trajectory"] == {"file": str(traj), "frames": 5}
    frames = load_frames(traj, "eV")
    assert frames.positions.shape == (5, 9, 3)
    atoms = read(traj, index=-1)
    atoms.calc = HEGNNCalculator(tmp_path / "ff", device="cpu")
    # The written energy is the model's at the written positions: extxyz rounds
    # positions to 1e-8 Å (|F| ~ 1 eV/Å: ~1e-7 eV) and float32 rounds |E| of a few eV
    # at ~1e-6 eV.
    assert abs(atoms.get_potential_energy() - frames.energies[-1]) < 1e-5
