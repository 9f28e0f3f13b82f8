"""Every model path: rotation, reflection, translation and permutation in float64."""

import pytest

from hegnn.testing import assert_equivariant, random_structure

from .conftest import LMAXES, tiny_model


@pytest.mark.parametrize("lmax", LMAXES)
def test_potential_is_invariant_and_forces_equivariant(lmax) -> None:
    model = tiny_model("potential", lmax)
    assert_equivariant(model, random_structure(n_atoms=20, seed=1), atol=1e-9)


@pytest.mark.parametrize("lmax", LMAXES)
def test_nbody_dynamics_is_equivariant(lmax) -> None:
    model = tiny_model("dynamics", lmax, "nbody")
    assert_equivariant(model, random_structure(n_atoms=20, seed=2), atol=1e-9)


@pytest.mark.parametrize("lmax", LMAXES)
def test_md17_trajectory_dynamics_is_equivariant(lmax) -> None:
    model = tiny_model("dynamics", lmax, "md17-traj", bond_cutoff=2.0)
    structure = random_structure(n_atoms=20, seed=3, species=(6, 7, 8))
    assert_equivariant(model, structure, atol=1e-9)


def test_clamped_coordinate_update_stays_equivariant() -> None:
    model = tiny_model("dynamics", 2, "nbody", coord_clamp=0.01)
    assert_equivariant(model, random_structure(n_atoms=8, seed=4), atol=1e-9)


@pytest.mark.parametrize("mapping", ["identity", "asinh", "bounded"])
def test_inner_product_maps_stay_equivariant(mapping) -> None:
    model = tiny_model("dynamics", 2, "nbody", inner_product_map=mapping)
    assert_equivariant(model, random_structure(n_atoms=8, seed=6), atol=1e-9)


@pytest.mark.parametrize("task", ["potential", "dynamics"])
def test_linear_phi_v_stays_equivariant(task) -> None:
    model = tiny_model(task, 3, phi_v="linear")
    assert type(model.backbone.layers[0].phi_v).__name__ == "Linear"
    assert_equivariant(model, random_structure(n_atoms=12, seed=7), atol=1e-9)


def test_inner_product_maps() -> None:
    import torch

    from hegnn.nn.spherical import InnerProducts

    v = torch.tensor([[1.0, 2.0, 0.0, 0.0]], dtype=torch.float64)  # l=0: 1, l=1: |2|
    z = torch.tensor([[1.0, 4.0]], dtype=torch.float64)
    expected = {
        "identity": z,
        "asinh": torch.asinh(z),
        "bounded": z / torch.sqrt(1 + z * z),
    }
    for mapping, want in expected.items():
        got = InnerProducts(1, mapping).double()(v, v)
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="mapping"):
        InnerProducts(1, "tanh")


def test_assert_equivariant_catches_a_broken_model() -> None:
    model = tiny_model("dynamics", 1, "nbody")
    model.backbone.layers[0].phi_vel = None  # still equivariant; now break it:
    original = model.forward

    def broken(data):
        out = original(data)
        out["positions"] = out["positions"] + data["positions"][:, :1] ** 2
        return out

    model.forward = broken
    with pytest.raises(AssertionError, match="rotation"):
        assert_equivariant(model, random_structure(n_atoms=6, seed=5), atol=1e-9)
