"""Dynamic batching: concurrent force requests for one model share one model call.

Each structure is queued with a future. A loop on the event loop takes the oldest
structures, up to an atom budget, once the budget is full, the oldest has waited
``max_wait``, or no other force request for the model is inside the server (so a
lone client never waits); the model then runs in the model's own worker thread, so
the event loop keeps accepting requests, and requests arriving meanwhile form the
next batch. Structures are checked before they are queued, and
if a batched call still fails, each structure is evaluated alone: one bad structure
never fails the others. A structure the model gives non-finite values for is an
``InputError`` (422); a model call that raises even alone, or a batch that fails
outside the model, is an ``InternalError`` (500, logged). With batching off, each
request is one call, one at a time in the same worker thread (the comparison
baseline).
"""

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hegnn import keys
from hegnn_serve.service.errors import InputError, InternalError, Overloaded
from hegnn_serve.service.metrics import Metrics
from hegnn_serve.service.predictor import ForceResult, Predictor, Prepared

logger = logging.getLogger(__name__)

# A result, or why there is none: the input (422) or the server (500).
Outcome = ForceResult | InputError | InternalError


class Arrivals:
    """Force requests inside the server per model, counted by the middleware from
    their first byte: more than the batcher holds means more are on their way."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def enter(self, model: str) -> None:
        self.counts[model] += 1

    def leave(self, model: str) -> None:
        self.counts[model] -= 1


@dataclass
class _Item:
    prepared: Prepared
    future: asyncio.Future[Outcome]
    enqueued: float = field(default_factory=time.perf_counter)


class ForceBatcher:
    """Evaluates one potential model's force requests off the event loop."""

    def __init__(
        self,
        predictor: Predictor,
        metrics: Metrics,
        *,
        enabled: bool = True,
        max_atoms: int = 4096,
        max_wait_s: float = 0.002,
        max_pending_atoms: int = 65536,
        max_edges: int = 100_000,
        arrivals: Arrivals | None = None,
    ) -> None:
        self.predictor = predictor
        self.metrics = metrics
        self.enabled = enabled
        self.max_atoms = max_atoms
        self.max_wait_s = max_wait_s
        self.max_pending_atoms = max_pending_atoms
        self.max_edges = max_edges  # edge budget of one call (bounds its memory)
        self._pending_atoms = 0  # atoms of requests accepted and not yet answered
        self._requests = 0  # requests inside forces()
        self.arrivals = arrivals  # None: always wait up to max_wait
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=predictor.name)
        self._items: deque[_Item] = deque()
        self._queued_atoms = 0
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name=f"batch-{self}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self._items:
            if not item.future.done():
                item.future.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __str__(self) -> str:
        return self.predictor.name

    async def forces(self, prepared: Sequence[Prepared]) -> list[Outcome]:
        """One outcome per structure, in order: a result or that structure's error.

        Raises Overloaded when more than ``max_pending_atoms`` atoms are waiting.
        """
        atoms = sum(p.n_atoms for p in prepared)
        if self._pending_atoms and self._pending_atoms + atoms > self.max_pending_atoms:
            raise Overloaded(
                f"model {self} is busy ({self._pending_atoms} atoms queued); retry"
            )
        self._pending_atoms += atoms
        self._requests += 1
        try:
            return await self._forces(prepared, atoms)
        finally:
            self._pending_atoms -= atoms
            self._requests -= 1

    async def _forces(self, prepared: Sequence[Prepared], atoms: int) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        if not self.enabled:
            now = time.perf_counter()
            return await loop.run_in_executor(
                self._executor, self._evaluate, list(prepared), [now] * len(prepared)
            )
        items = [_Item(p, loop.create_future()) for p in prepared]
        self._items.extend(items)
        self._queued_atoms += atoms
        self._arrived.set()
        return list(await asyncio.gather(*(item.future for item in items)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._items:
                self._arrived.clear()
                await self._arrived.wait()
            while (remaining := self.wait_s(time.perf_counter())) > 0:
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)
            batch = self._take()
            try:
                outcomes = await loop.run_in_executor(
                    self._executor,
                    self._evaluate,
                    [item.prepared for item in batch],
                    [item.enqueued for item in batch],
                )
            except Exception:  # executor shut down, or a bug: fail this batch
                logger.exception("%s: batch of %d failed", self, len(batch))
                outcomes = [
                    InternalError(f"the batch of model {self} failed") for _ in batch
                ]
            for item, outcome in zip(batch, outcomes, strict=True):
                if not item.future.done():
                    item.future.set_result(outcome)

    def wait_s(self, now: float) -> float:
        """Seconds to wait for more requests before the next model call; 0 means
        start now: the queue is empty, the atom budget is full, or no other force
        request for this model is inside the server (a lone client never waits).
        Otherwise more are arriving: wait for them until the oldest queued request
        has waited ``max_wait_s``."""
        if (
            not self._items
            or self._queued_atoms >= self.max_atoms
            or not self._more_coming()
        ):
            return 0.0
        return max(0.0, self._items[0].enqueued + self.max_wait_s - now)

    def _more_coming(self) -> bool:
        """Are force requests for this model in the server but not yet queued?"""
        if self.arrivals is None:
            return True
        return self.arrivals.counts[self.predictor.name] > self._requests

    def _take(self) -> list[_Item]:
        """Oldest items within the atom and edge budgets (always at least one)."""
        batch = [self._items.popleft()]
        atoms = batch[0].prepared.n_atoms
        edges = batch[0].prepared.n_edges
        while (
            self._items
            and atoms + self._items[0].prepared.n_atoms <= self.max_atoms
            and edges + self._items[0].prepared.n_edges <= self.max_edges
        ):
            item = self._items.popleft()
            atoms += item.prepared.n_atoms
            edges += item.prepared.n_edges
            batch.append(item)
        self._queued_atoms -= atoms
        return batch

    def _evaluate(
        self, prepared: list[Prepared], enqueued: list[float]
    ) -> list[Outcome]:
        """Worker thread: one model call; per-structure calls if the batch fails."""
        start = time.perf_counter()
        for t in enqueued:
            self.metrics.queue_wait.labels(self.predictor.name).observe(start - t)
        try:
            return self._call(prepared)
        except Exception:
            logger.warning(
                "%s: call of %d structures failed; evaluating one by one",
                self,
                len(prepared),
                exc_info=True,
            )
        return [self._call_alone(p) for p in prepared]

    def _call_alone(self, prepared: Prepared) -> Outcome:
        try:
            return self._call([prepared])[0]
        except InputError as err:
            return err
        except Exception:
            logger.exception("%s: model call failed on one structure", self)
            return InternalError(f"model {self} failed on this structure")

    def _call(self, prepared: list[Prepared]) -> list[Outcome]:
        start = time.perf_counter()
        results = self.predictor.forces(prepared)
        seconds = time.perf_counter() - start
        atoms = sum(p.n_atoms for p in prepared)
        self.metrics.observe_call(
            self.predictor.name, "forces", len(prepared), atoms, seconds
        )
        return [
            r
            if r.finite
            else InputError(keys.POSITIONS, "the model gave non-finite energy/forces")
            for r in results
        ]
