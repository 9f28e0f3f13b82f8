"""Dynamic batching: concurrent answers equal unbatched ones; bad structures stay
alone; a model call that raises is a 500 with the request id, not a 422."""

import asyncio
import logging
import re
import time

import httpx
import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from hegnn.testing import random_structure
from hegnn_serve.service.batching import Arrivals, ForceBatcher, _Item
from hegnn_serve.service.errors import InputError, InternalError, Overloaded
from hegnn_serve.service.metrics import Metrics
from hegnn_serve.service.predictor import (
    ForceResult,
    Predictor,
    Prepared,
    StructureInput,
)

from .conftest import POTENTIAL, make_settings, running_server

CLIENTS = 32


def batch_sizes(metrics_text: str, model: str) -> tuple[float, float]:
    """(model calls with one structure, all model calls) from /metrics."""
    label = f'model="{model}"'

    def value(pattern: str) -> float:
        match = re.search(pattern, metrics_text)
        return float(match.group(1)) if match else 0.0

    single = value(rf'hegnn_batch_structures_bucket{{le="1.0",{label}}} (\S+)')
    count = value(rf"hegnn_batch_structures_count{{{label}}} (\S+)")
    return single, count


async def post_concurrently(url: str, bodies: list[dict]) -> list[dict]:
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        start = asyncio.Event()

        async def one(body: dict) -> dict:
            await start.wait()
            response = await client.post(f"/v1/models/{POTENTIAL}/forces", json=body)
            assert response.status_code == 200, response.text
            return response.json()

        tasks = [asyncio.create_task(one(b)) for b in bodies]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*tasks)


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_answers_equal_unbatched_answers(
    checkpoint_dir, batching: bool
) -> None:
    structures = [random_structure(4 + k % 9, seed=100 + k) for k in range(CLIENTS)]
    bodies = [
        {"numbers": s.numbers.tolist(), "positions": s.positions.tolist()}
        for s in structures
    ]
    settings = make_settings(checkpoint_dir, batching=batching, max_wait_ms=20.0)
    with running_server(settings) as url:
        answers = asyncio.run(post_concurrently(url, bodies))
        metrics = httpx.get(f"{url}/metrics").text
    predictor = Predictor.load(checkpoint_dir / POTENTIAL, torch.device("cpu"))
    for s, answer in zip(structures, answers, strict=True):
        prepared = predictor.prepare(StructureInput(s.positions, s.numbers))
        (alone,) = predictor.forces([prepared])  # one structure per model call
        assert answer["energy"] == pytest.approx(alone.energy, rel=1e-9)
        np.testing.assert_allclose(answer["forces"], alone.forces, atol=1e-9)
    single, calls = batch_sizes(metrics, POTENTIAL)
    if batching:
        assert calls < CLIENTS and single < calls  # batches larger than one formed
    else:
        assert calls == CLIENTS and single == calls


class FakePredictor:
    """A model whose batched call fails when the poison structure is in it, and
    which gives NaN forces for the poison alone; the crash structure makes every
    call raise, alone too."""

    name = "fake"
    POISON = 13
    CRASH = 11

    def __init__(self) -> None:
        self.calls: list[int] = []

    def forces(self, prepared: list[Prepared]) -> list[ForceResult]:
        self.calls.append(len(prepared))
        sizes = [p.n_atoms for p in prepared]
        if self.CRASH in sizes:
            raise RuntimeError("model bug")
        if self.POISON in sizes and len(sizes) > 1:
            raise RuntimeError("batch poisoned")
        return [
            ForceResult(float(n), np.full((n, 3), np.nan if n == self.POISON else n))
            for n in sizes
        ]


def prepared(n_atoms: int) -> Prepared:
    return Prepared(Data(num_nodes=n_atoms), n_atoms)


def test_one_bad_structure_never_fails_the_others() -> None:
    fake = FakePredictor()

    async def scenario() -> list:
        batcher = ForceBatcher(fake, Metrics(), max_atoms=1000, max_wait_s=0.05)
        await batcher.start()
        try:
            requests = [[prepared(3)], [prepared(FakePredictor.POISON)], [prepared(5)]]
            requests.append([prepared(7), prepared(2)])
            return await asyncio.gather(*(batcher.forces(r) for r in requests))
        finally:
            await batcher.close()

    good3, (bad,), good5, (good7, good2) = asyncio.run(scenario())
    assert fake.calls[0] == 5  # all five structures were tried in one call
    assert isinstance(bad, InputError) and "non-finite" in bad.message
    for (outcome,), n in ((good3, 3), (good5, 5)):
        assert outcome.energy == n
    assert good7.energy == 7 and good2.energy == 2


def test_a_model_call_that_raises_is_an_internal_error_for_its_structure() -> None:
    fake = FakePredictor()

    async def scenario() -> list:
        batcher = ForceBatcher(fake, Metrics(), max_atoms=1000, max_wait_s=0.05)
        await batcher.start()
        try:
            requests = [[prepared(3)], [prepared(FakePredictor.CRASH), prepared(5)]]
            return await asyncio.gather(*(batcher.forces(r) for r in requests))
        finally:
            await batcher.close()

    (good3,), (crashed, good5) = asyncio.run(scenario())
    assert fake.calls == [3, 1, 1, 1]  # the batch, then each alone
    assert isinstance(crashed, InternalError) and "fake" in str(crashed)
    assert good3.energy == 3 and good5.energy == 5


def test_a_failed_batch_is_an_internal_error(monkeypatch) -> None:
    def broken(self, prepared, enqueued):
        raise RuntimeError("executor gone")

    monkeypatch.setattr(ForceBatcher, "_evaluate", broken)

    async def scenario() -> list:
        batcher = ForceBatcher(FakePredictor(), Metrics(), max_wait_s=0.01)
        await batcher.start()
        try:
            return await batcher.forces([prepared(3), prepared(4)])
        finally:
            await batcher.close()

    outcomes = asyncio.run(scenario())
    assert len(outcomes) == 2
    assert all(isinstance(o, InternalError) for o in outcomes)


WATER = {
    "numbers": [8, 1, 1],
    "positions": [[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]],
}


def raise_always(self, prepared):
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


def fail_batch(self, prepared, enqueued):
    raise RuntimeError("executor gone")


@pytest.mark.parametrize(
    ("target", "attribute", "replacement"),
    [
        (Predictor, "forces", raise_always),  # the batch and each structure alone
        (ForceBatcher, "_evaluate", fail_batch),  # the batch outside the model
    ],
)
def test_an_internal_failure_is_500_with_the_request_id(
    http, monkeypatch, caplog, target, attribute, replacement
) -> None:
    monkeypatch.setattr(target, attribute, replacement)
    url = f"/v1/models/{POTENTIAL}/forces"
    with caplog.at_level(logging.ERROR, logger="service"):
        for body in (WATER, {"structures": [WATER, WATER]}):
            response = http.post(url, json=body, headers={"X-Request-ID": "req-42"})
            assert response.status_code == 500, response.text
            detail = response.json()["detail"]
            assert detail.startswith("internal error (request id req-42)"), detail
            assert "CUDA" not in detail  # the cause is logged, not answered
            assert response.headers["x-request-id"] == "req-42"
    assert "internal error in request req-42" in caplog.text
    monkeypatch.undo()
    assert http.post(url, json=WATER).status_code == 200


def test_batches_respect_the_atom_budget() -> None:
    fake = FakePredictor()

    async def scenario() -> None:
        batcher = ForceBatcher(fake, Metrics(), max_atoms=10, max_wait_s=0.05)
        await batcher.start()
        try:
            await asyncio.gather(*(batcher.forces([prepared(4)]) for _ in range(6)))
        finally:
            await batcher.close()

    asyncio.run(scenario())
    assert fake.calls == [2, 2, 2]  # 4 + 4 <= 10 < 4 + 4 + 4


def test_batches_respect_the_edge_budget() -> None:
    fake = FakePredictor()

    async def scenario() -> None:
        batcher = ForceBatcher(
            fake, Metrics(), max_atoms=1000, max_edges=250, max_wait_s=0.05
        )
        await batcher.start()
        try:
            heavy = [Prepared(Data(num_nodes=4), 4, n_edges=100) for _ in range(6)]
            await asyncio.gather(*(batcher.forces([p]) for p in heavy))
        finally:
            await batcher.close()

    asyncio.run(scenario())
    assert fake.calls == [2, 2, 2]  # 100 + 100 <= 250 < 100 + 100 + 100


def test_a_full_queue_answers_overloaded() -> None:
    fake = FakePredictor()

    async def scenario() -> list:
        batcher = ForceBatcher(
            fake, Metrics(), max_atoms=1000, max_wait_s=0.05, max_pending_atoms=10
        )
        await batcher.start()
        try:
            calls = [batcher.forces([prepared(4)]) for _ in range(3)]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await batcher.close()

    first, second, third = asyncio.run(scenario())
    assert first[0].energy == 4 and second[0].energy == 4
    assert isinstance(third, Overloaded)


def test_a_rollout_that_raises_is_500_with_the_request_id(http, monkeypatch) -> None:
    def broken(self, prepared, steps, every=1):
        raise RuntimeError("model bug")

    monkeypatch.setattr(Predictor, "rollout", broken)
    s = random_structure(4, seed=3)
    state = {k: getattr(s, k).tolist() for k in ("positions", "velocities", "charges")}
    response = http.post("/v1/models/tiny-nbody/trajectory", json={**state, "steps": 2})
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert f"request id {request_id}" in response.json()["detail"]


def test_an_idle_batcher_starts_at_once_and_waits_only_for_arrivals() -> None:
    """The wait decision itself: no wait with an empty queue, a full atom budget,
    or no other request inside the server; otherwise up to max_wait."""
    fake = FakePredictor()
    arrivals = Arrivals()

    async def scenario() -> list[float]:
        batcher = ForceBatcher(
            fake, Metrics(), max_atoms=10, max_wait_s=0.5, arrivals=arrivals
        )
        now = time.perf_counter()
        waits = [batcher.wait_s(now)]  # empty queue
        arrivals.enter(fake.name)  # one request inside the server, queued
        batcher._requests = 1
        batcher._items.append(_Item(prepared(4), asyncio.Future(), now))
        batcher._queued_atoms = 4
        waits.append(batcher.wait_s(now))  # a lone client
        arrivals.enter(fake.name)  # a second one is still arriving
        waits.append(batcher.wait_s(now + 0.2))
        waits.append(batcher.wait_s(now + 0.6))  # the oldest waited max_wait
        batcher._queued_atoms = 10  # the atom budget is full
        waits.append(batcher.wait_s(now))
        return waits

    empty, lone, arriving, waited, full = asyncio.run(scenario())
    assert empty == lone == waited == full == 0
    assert arriving == pytest.approx(0.3)


def test_a_lone_request_does_not_wait_for_the_batch_window() -> None:
    """A batch window of an hour: a lone request is answered all the same."""
    fake = FakePredictor()
    arrivals = Arrivals()

    async def scenario() -> list:
        batcher = ForceBatcher(fake, Metrics(), max_wait_s=3600, arrivals=arrivals)
        await batcher.start()
        arrivals.enter(fake.name)
        try:
            return await asyncio.wait_for(batcher.forces([prepared(3)]), 60)
        finally:
            arrivals.leave(fake.name)
            await batcher.close()

    (outcome,) = asyncio.run(scenario())
    assert outcome.energy == 3
