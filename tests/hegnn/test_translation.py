"""Answers do not depend on where a structure sits: positions are centred (periodic:
wrapped) in float64 before a float32 model (hegnn.structure.centred)."""

import numpy as np
import pytest
import torch
from ase import Atoms

from hegnn import HEGNNCalculator, save
from hegnn.structure import StructureInput, centred
from hegnn.testing import random_structure

from .conftest import tiny_model

FAR = 1e5  # Å: float32 spacing there is 0.008 Å
ATOL = 1e-5  # eV/Å


def test_centred_moves_back_exactly() -> None:
    s = random_structure(12, seed=2)
    far = StructureInput(positions=s.positions + FAR, numbers=s.numbers)
    moved, shift = centred(far)
    assert np.abs(moved.positions.mean(axis=0)).max() < 1e-9
    np.testing.assert_allclose(moved.positions + shift, far.positions, rtol=0, atol=0)
    cell = np.diag([9.0, 9.0, 20.0])
    pbc = np.array([True, True, False])
    periodic = StructureInput(
        positions=s.positions + [FAR, -FAR, FAR], numbers=s.numbers, cell=cell, pbc=pbc
    )
    moved, shift = centred(periodic)
    frac = moved.positions @ np.linalg.inv(cell)
    assert (frac[:, :2] >= 0).all() and (frac[:, :2] < 1).all()
    assert abs(moved.positions[:, 2].mean()) < 1e-9
    np.testing.assert_allclose(moved.positions + shift, periodic.positions, atol=1e-9)


@pytest.fixture(scope="module")
def float32_checkpoint(tmp_path_factory):
    model = tiny_model("potential", 2).to(torch.float32)
    folder = tmp_path_factory.mktemp("ckpt") / "tiny32"
    save(model, folder, {"units": {"energy": "eV", "forces": "eV/Å"}})
    return folder


@pytest.mark.parametrize("periodic", [False, True])
def test_forces_do_not_depend_on_absolute_position(float32_checkpoint, periodic):
    calc = HEGNNCalculator(float32_checkpoint, device="cpu")
    s = random_structure(15, seed=4)
    cell = np.diag([8.0, 8.5, 9.0]) if periodic else None
    answers = []
    for offset in (0.0, FAR):
        atoms = Atoms(
            numbers=s.numbers,
            positions=s.positions + offset,
            cell=cell,
            pbc=periodic,
        )
        atoms.calc = calc
        answers.append((atoms.get_potential_energy(), atoms.get_forces()))
    (e0, f0), (e1, f1) = answers
    np.testing.assert_allclose(f1, f0, rtol=0, atol=ATOL)
    assert abs(e1 - e0) <= 1e-6 * max(1.0, abs(e0))
