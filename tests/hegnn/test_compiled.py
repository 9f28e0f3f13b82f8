"""torch.compile of the backbones: same numbers as eager, still equivariant, same
checkpoint layout."""

import copy
import shutil

import numpy as np
import pytest

from hegnn import compile_backbones, keys
from hegnn.testing import assert_equivariant, predict, random_structure

from .conftest import tiny_model

# float64 models: compiled kernels sum in another order, so results differ by a few
# ulps of the per-atom terms (|E| ~ 1e3 eV -> 1e-13 eV); 1e-9 is far above that and
# far below any real difference.
ATOL = 1e-9
# inductor compiles C++ on the CPU
needs_compiler = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
    reason="no C++ compiler on PATH: torch.compile's CPU backend needs one",
)


@needs_compiler
@pytest.mark.parametrize("lmax", [2])
def test_compiled_potential_equals_eager_and_is_equivariant(lmax) -> None:
    eager = tiny_model("potential", lmax)
    compiled = compile_backbones(copy.deepcopy(eager))
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    for n_atoms, seed in ((12, 1), (20, 2)):  # a second size: dynamic shapes
        structure = random_structure(n_atoms=n_atoms, seed=seed)
        want, got = predict(eager, structure), predict(compiled, structure)
        for key in (keys.ENERGY, keys.FORCES):
            np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), atol=ATOL)
    assert_equivariant(compiled, random_structure(n_atoms=12, seed=3), atol=ATOL)
