"""Shipped checkpoints stay honest: each loads, is small, and `hegnn eval` reproduces
the metric in its card (``eval_test``, written by ``hegnn eval --write-card``)."""

import json
from pathlib import Path

import pytest

from hegnn import load
from hegnn_serve.training.commands import evaluate_checkpoint
from hegnn_serve.training.config import stored_config
from hegnn_serve.training.data.nbody import generate_nbody, nbody_protocol

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.parent for p in (ROOT / "checkpoints").glob("*/card.json"))
NAMES = [p.name for p in SHIPPED]


def _card(path: Path) -> dict:
    return json.loads((path / "card.json").read_text())


@pytest.mark.parametrize("path", SHIPPED, ids=NAMES)
def test_checkpoint_loads_and_is_small(path: Path) -> None:
    model, card = load(path)
    assert card.metrics.get("test"), "card has no test metrics"
    if card.committee is None:
        assert (path / "model.safetensors").stat().st_size < 5 * 2**20
        assert card.model_extra["training"]["command"].startswith("hegnn train")
        return
    # A committee: its members are shipped checkpoints of their own, in its folder.
    assert card.model_extra["training"]["command"].startswith("hegnn committee")
    assert card.committee.uncertainty["threshold_max_force_std"] > 0
    for member in card.committee.members:
        test_checkpoint_loads_and_is_small(path / member.folder)


COMMITTEES = [p for p in SHIPPED if "committee" in _card(p)]


@pytest.mark.parametrize("path", COMMITTEES, ids=[p.name for p in COMMITTEES])
def test_the_single_model_is_its_committees_best_seed_on_validation(
    path: Path,
) -> None:
    """``NAME`` ships the seed of ``NAME-committee`` with the lowest validation
    force MAE (`hegnn committee --best-to`); the test split plays no part."""
    single = path.with_name(path.name.removesuffix("-committee"))
    if not single.is_dir():
        pytest.skip(f"{path.name}: no single model of that name")
    members = [path / m["folder"] for m in _card(path)["committee"]["members"]]
    best = min(members, key=lambda m: _card(m)["metrics"]["val"]["force_mae_mev_per_a"])
    assert _card(single)["weights_sha256"] == _card(best)["weights_sha256"]


_GENERATED: dict[str, Path] = {}


def _regenerated_nbody(card: dict, tmp_path_factory) -> Path:
    """The card's N-body set (``nbody_<protocol>_<N>.npz``, seed 43, the protocol's
    sizes), regenerated once per session with the project's own generator."""
    stem = Path(card["data"]["path"]).stem
    if stem not in _GENERATED:
        _, protocol, bodies = stem.split("_")
        path = tmp_path_factory.mktemp("nbody") / f"{stem}.npz"
        generate_nbody(path, nbody_protocol(protocol, int(bodies)), seed=43)
        _GENERATED[stem] = path
    return _GENERATED[stem]


def _data_for(path: Path, request) -> Path | None:
    card = _card(path)
    data = Path(card["data"]["path"])
    if card["dataset"] == "nbody":
        return _regenerated_nbody(card, request.getfixturevalue("tmp_path_factory"))
    if (ROOT / data).is_file():
        return ROOT / data
    return None


@pytest.mark.parametrize("path", SHIPPED, ids=NAMES)
def test_stored_training_config_still_validates(path: Path) -> None:
    """Cards store the training config of their run; `hegnn eval` re-validates it."""
    card = _card(path)
    stored = card["training"]["config"]
    config = stored_config(stored)
    assert config.task == card["dataset"] == stored["task"]
    model = config.model.model_dump()
    assert {k: model[k] for k in stored["model"]} == stored["model"]
    data = config.data.model_dump(mode="json")
    kept = {k: v for k, v in stored["data"].items() if k in data}
    assert {k: data[k] for k in kept} == kept
    fields = type(config.data).model_fields
    added = set(data) - set(stored["data"])  # fields added since: at their defaults
    assert {k: data[k] for k in added} == {k: fields[k].default for k in added}


EVALUATED = [p for p in SHIPPED if "eval_test" in _card(p).get("metrics", {})]

# Float tolerances of a re-evaluation. A float32 model's outputs move by a few
# roundings (unit roundoff 2^-24) when another machine or library sums in another
# order (BLAS kernels, thread count, scatter order). Positions, forces and their
# MSE/MAEs are means of many such values, whose relative change stays far below
# REL_TOL. The energy is the float64 sum of n per-atom float32 network outputs of
# size ~ sigma_E (the card's energy_scale; the network's output is normalised),
# so it moves by ~ n * sigma_E * 2^-24 * (roundings per output): the float64
# total of ~ -4200 eV (ethanol) or ~ -17600 eV (aspirin) is not rounded to float32
# (that would be |E| * 2^-24 = 0.25 / 1 meV, far above the MAEs' precision). On
# each shipped force field, float32 and float64 evaluations of the same weights
# differ by less than 8 n sigma_E 2^-24 per test structure (at most 0.004 of
# 0.005 meV for ethanol, 0.009 of 0.013 meV for aspirin); two float32 evaluations,
# each within that of the exact value, differ by up to twice that. Example:
# ethanol (n = 9, sigma_E = 1.18 eV) allows 0.010 meV on a 3.27 meV MAE (3e-3
# relative; a fixed rel=1e-5 failed at 1.2e-5 on another machine than the card's).
REL_TOL = 1e-5
ROUNDINGS_PER_ENERGY = 2 * 8
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}


def _tolerance(card: dict, key: str, value: float) -> float:
    stored = card["metrics"]["eval_test"]
    if key in ("energy_mae_mev", "energy_per_atom_mae_mev"):
        n_atoms = stored["energy_mae_mev"] / stored["energy_per_atom_mae_mev"]
        sigma_e = card["normalisation"]["energy_scale"]  # eV
        ev = ROUNDINGS_PER_ENERGY * n_atoms * sigma_e * UNIT_ROUNDOFF[card["dtype"]]
        per = n_atoms if key == "energy_per_atom_mae_mev" else 1.0
        return max(1000 * ev / per, REL_TOL * abs(value))
    return REL_TOL * abs(value)


@pytest.mark.parametrize("path", EVALUATED, ids=[p.name for p in EVALUATED])
def test_eval_reproduces_the_card_metric(path: Path, request) -> None:
    stored = _card(path)["metrics"]["eval_test"]
    data = _data_for(path, request)
    if data is None:
        pytest.skip(f"{path.name}: its data file is generated (see the card's command)")
    expected = _card(path)["data"].get("content_sha256")
    if expected:
        from hegnn_serve.training.prepare import content_sha256

        assert content_sha256(data) == expected, (
            "regenerated data differ from the card's: the N-body generator is meant "
            "to be bit-reproducible (tests/training/test_nbody.py pins its hash); "
            "was it changed after the checkpoint was trained?"
        )
    again = evaluate_checkpoint(path, data, "test", stored["n"])
    card = _card(path)
    for key, value in stored.items():
        if isinstance(value, float):
            tol = _tolerance(card, key, value)
            assert again[key] == pytest.approx(value, rel=0, abs=tol), key
