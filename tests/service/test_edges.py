"""The edge budget: structures are refused (413) by their counted graph edges, per
structure (HEGNN_MAX_EDGES) and per request (HEGNN_MAX_REQUEST_EDGES), before any
graph is built."""

import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch

import hegnn_serve.service.predictor as predictor_module
from hegnn.graph import count_radius_edges
from hegnn.structure import StructureInput
from hegnn_serve.service.errors import LimitError
from hegnn_serve.service.predictor import EdgeBudget, Predictor

from .conftest import POTENTIAL, make_settings, running_server

R_MAX = 4.0  # the tiny potential's cutoff


def carbon_grid(side: int, spacing: float = 1.2) -> list[list[float]]:
    g = np.arange(side) * spacing
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3).tolist()


DENSE = carbon_grid(4)  # 64 atoms, 1.2 Å apart
DENSE_EDGES = count_radius_edges(np.array(DENSE), R_MAX)
SPARSE = carbon_grid(3, spacing=2.0)  # 27 atoms
SPARSE_EDGES = count_radius_edges(np.array(SPARSE), R_MAX)


@pytest.fixture(scope="module")
def edge_server(checkpoint_dir) -> Iterator[str]:
    settings = make_settings(
        checkpoint_dir,
        max_edges=DENSE_EDGES - 1,
        max_request_edges=2 * SPARSE_EDGES + 1,
    )
    with running_server(settings) as url:
        yield url


def structure(positions) -> dict:
    return {"numbers": [6] * len(positions), "positions": positions}


def test_a_dense_structure_is_413_naming_it(edge_server) -> None:
    assert DENSE_EDGES > 3 * SPARSE_EDGES
    body = {"structures": [structure(SPARSE), structure(DENSE)]}
    for endpoint, extra in [("forces", {}), ("md", {"steps": 1})]:
        r = httpx.post(
            f"{edge_server}/v1/models/{POTENTIAL}/{endpoint}",
            json={**body, **extra},
            timeout=30,
        )
        assert r.status_code == 413, r.text
        detail = r.json()["detail"]
        assert "structures.1.positions" in detail and "HEGNN_MAX_EDGES" in detail
        assert f"{DENSE_EDGES} edges" in detail


def test_a_request_over_the_edge_budget_is_413(edge_server) -> None:
    url = f"{edge_server}/v1/models/{POTENTIAL}/forces"
    two = {"structures": [structure(SPARSE)] * 2}
    assert httpx.post(url, json=two, timeout=30).status_code == 200
    three = {"structures": [structure(SPARSE)] * 3}
    r = httpx.post(url, json=three, timeout=30)
    assert r.status_code == 413, r.text
    assert "HEGNN_MAX_REQUEST_EDGES" in r.json()["detail"]
    assert f"{3 * SPARSE_EDGES} edges" in r.json()["detail"]


def test_edges_are_counted_before_the_graph_is_built(
    checkpoint_dir, monkeypatch
) -> None:
    """A refused structure never reaches make_graph_data (whose memory the budget
    bounds)."""
    predictor = Predictor.load(checkpoint_dir / POTENTIAL, device=torch.device("cpu"))
    predictor.max_edges = DENSE_EDGES - 1

    def refuse(*args, **kwargs):
        raise AssertionError("graph built for a structure over the edge budget")

    monkeypatch.setattr(predictor_module, "make_graph_data", refuse)
    s = StructureInput(positions=np.array(DENSE), numbers=np.full(len(DENSE), 6))
    with pytest.raises(LimitError, match="HEGNN_MAX_EDGES"):
        predictor.prepare(s)


def test_the_edge_budget_lets_calls_in_only_while_they_fit() -> None:
    budget = EdgeBudget(100)
    entered: list[str] = []

    def call(name: str, edges: int, leave: threading.Event) -> threading.Thread:
        def run() -> None:
            with budget.hold(edges):
                entered.append(name)
                leave.wait(5)

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    release = threading.Event()
    first = call("70", 70, release)
    second = call("30", 30, release)
    time.sleep(0.2)
    assert sorted(entered) == ["30", "70"] and budget.in_use == 100
    big = call("500", 500, release)  # over the capacity: runs alone
    time.sleep(0.2)
    assert "500" not in entered
    release.set()
    for thread in (first, second, big):
        thread.join(5)
    assert entered[-1] == "500" and budget.in_use == 0
