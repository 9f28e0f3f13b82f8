"""Shipped checkpoints stay honest: each loads, is small, and `hegnn eval` reproduces
the metric in its card (``eval_test``, written by ``hegnn eval --write-card``)."""

import json
from pathlib import Path

import pytest

from hegnn import load
from training.commands import evaluate_checkpoint
from training.data.nbody import generate_nbody, nbody_protocol

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.parent for p in (ROOT / "checkpoints").glob("*/card.json"))
NAMES = [p.name for p in SHIPPED]


def _card(path: Path) -> dict:
    return json.loads((path / "card.json").read_text())


@pytest.mark.parametrize("path", SHIPPED, ids=NAMES)
def test_checkpoint_loads_and_is_small(path: Path) -> None:
    model, card = load(path)
    assert (path / "model.safetensors").stat().st_size < 5 * 2**20
    assert card.metrics.get("test"), "card has no test metrics"
    assert card.model_extra["training"]["command"].startswith("hegnn train")


@pytest.fixture(scope="module")
def nbody_egnn_data(tmp_path_factory) -> Path:
    """The EGNN-protocol set, regenerated with the project's own generator."""
    path = tmp_path_factory.mktemp("nbody") / "nbody_egnn_5.npz"
    generate_nbody(path, nbody_protocol("egnn", 5), seed=43)
    return path


def _data_for(path: Path, request) -> Path | None:
    card = _card(path)
    data = Path(card["data"]["path"])
    if card["dataset"] == "nbody":
        return request.getfixturevalue("nbody_egnn_data")
    if (ROOT / data).is_file():
        return ROOT / data
    return None


EVALUATED = [p for p in SHIPPED if "eval_test" in _card(p).get("metrics", {})]


@pytest.mark.parametrize("path", EVALUATED, ids=[p.name for p in EVALUATED])
def test_eval_reproduces_the_card_metric(path: Path, request) -> None:
    stored = _card(path)["metrics"]["eval_test"]
    data = _data_for(path, request)
    if data is None:
        pytest.skip(f"{path.name}: its data file is generated (see the card's command)")
    expected = _card(path)["data"].get("content_sha256")
    if expected:
        from training.prepare import content_sha256

        assert content_sha256(data) == expected, (
            "regenerated data differ from the card's"
        )
    again = evaluate_checkpoint(path, data, "test", stored["n"])
    for key, value in stored.items():
        if isinstance(value, float):
            assert again[key] == pytest.approx(value, rel=1e-5), key
