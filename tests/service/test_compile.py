"""HEGNN_COMPILE: a force field is compiled and warmed up at load, and answers as
the eager model does."""

import shutil

import numpy as np
import pytest
import torch

from hegnn import StructureInput, keys, save
from hegnn.testing import random_structure
from hegnn_serve.service import predictor as predictor_module
from hegnn_serve.service.predictor import Predictor
from tests.hegnn.conftest import tiny_model

ATOL = 1e-9  # float64 model: compiled and eager differ by rounding only
# inductor compiles C++ on the CPU
needs_compiler = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
    reason="no C++ compiler on PATH: torch.compile's CPU backend needs one",
)


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@needs_compiler
def test_predictor_compiles_and_warms_up_a_force_field(tmp_path, float64) -> None:
    save(tiny_model("potential", 1), tmp_path / "tiny", {"task": keys.TASK_POTENTIAL})
    cpu = torch.device("cpu")
    eager = Predictor.load(tmp_path / "tiny", cpu)
    compiled = Predictor.load(tmp_path / "tiny", cpu, compile=True)
    structure = random_structure(n_atoms=10, seed=4)
    s = StructureInput(structure.positions, numbers=structure.numbers)
    (want,), (got,) = (p.forces([p.prepare(s)]) for p in (eager, compiled))
    assert got.energy == pytest.approx(want.energy, abs=ATOL)
    np.testing.assert_allclose(got.forces, want.forces, atol=ATOL)


def test_a_failed_compile_serves_the_model_uncompiled(
    tmp_path, float64, monkeypatch, caplog
) -> None:
    def no_compiler(model):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(predictor_module, "compile_backbones", no_compiler)
    save(tiny_model("potential", 1), tmp_path / "tiny", {"task": keys.TASK_POTENTIAL})
    predictor = Predictor.load(tmp_path / "tiny", torch.device("cpu"), compile=True)
    structure = random_structure(n_atoms=6, seed=5)
    s = StructureInput(structure.positions, numbers=structure.numbers)
    (result,) = predictor.forces([predictor.prepare(s)])
    assert np.isfinite(result.forces).all()
    assert "torch.compile failed, serving it uncompiled" in caplog.text
    assert "No working C++ compiler" in caplog.text
