"""Long jobs (``/trajectory`` rollouts and ``/md`` runs): bounded, fair, stoppable.

A job is a function of a :class:`Job` run in a worker thread; it calls
``job.check()`` between steps (MD steps, rollout Δt steps), which raises
``JobStopped`` when the job must stop:

- its client disconnected (``JobCancelled``: nobody is listening, the answer is
  dropped; logged with status 499 as nginx does);
- its deadline passed, ``HEGNN_JOB_TIMEOUT_S`` after it arrived (``JobTimeout``:
  504; a job still waiting for a thread at its deadline gets 503 with
  ``Retry-After`` instead, since the server was busy, not the job too long);
- the server is shutting down and the drain time is over (``ShuttingDown``: 503
  with ``Retry-After``; another replica can take it).

Admission: at most ``max_queued`` jobs wait per model; one more is ``Overloaded``
(503 with ``Retry-After``). 503 and not 429: the limit is the model's capacity on
this server, shared by every client, not a quota of the client that asked, and a
503 tells a load balancer or a retrying client to come back or go elsewhere.

Scheduling: at most ``workers`` jobs run at once, in arrival order, and one model
runs at most ``workers - 1`` of them (when ``workers > 1``), so a long job of one
model never keeps another model's job waiting for a thread.
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from starlette.types import Receive

from hegnn_serve.service.errors import (
    JobCancelled,
    JobStopped,
    JobTimeout,
    Overloaded,
    QueueTimeout,
    ShuttingDown,
)
from hegnn_serve.service.metrics import Metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(eq=False)
class Job:
    """One job's stop conditions; ``check()`` is called between its steps."""

    model: str
    kind: str
    timeout_s: float
    runner: "JobRunner"
    arrived: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: asyncio.Future | None = None  # set when a thread is granted
    step: int = 0  # steps done, for messages

    @property
    def deadline(self) -> float:
        return self.arrived + self.timeout_s

    def check(self) -> None:
        """Raise JobStopped if the job must stop now; else count one step."""
        self.stop_if_needed()
        self.step += 1

    def stop_if_needed(self) -> None:
        """Raise JobStopped if the job must stop now."""
        if self.cancelled.is_set():
            raise JobCancelled(f"{self.kind} job of model {self.model}: client gone")
        now = time.monotonic()
        drain = self.runner.drain_deadline
        if drain is not None and now >= drain:
            raise ShuttingDown(
                f"the server is shutting down; the {self.kind} job of model "
                f"{self.model} was stopped after {self.step} steps: retry"
            )
        if now >= self.deadline:
            raise JobTimeout(
                f"the {self.kind} job of model {self.model} ran past this server's "
                f"deadline of {self.timeout_s:g} s (HEGNN_JOB_TIMEOUT_S) after "
                f"{self.step} steps: ask for fewer steps or structures"
            )


class JobRunner:
    """Admits, schedules and runs the jobs of every model on ``workers`` threads."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        workers: int = 2,
        max_queued: int = 4,
        timeout_s: float = 120.0,
        drain_s: float = 6.0,
    ) -> None:
        self.metrics = metrics
        self.workers = workers
        self.per_model = max(1, workers - 1)
        self.max_queued = max_queued
        self.timeout_s = timeout_s
        self.drain_s = drain_s
        self.drain_deadline: float | None = None  # monotonic; set by begin_drain
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="job")
        self._waiting: list[Job] = []  # arrival order
        self._running: set[Job] = set()
        self._running_per_model: Counter[str] = Counter()
        self._waiting_per_model: Counter[str] = Counter()

    # -- admission and scheduling (event loop only) -------------------------------

    async def run(
        self,
        model: str,
        kind: str,
        work: Callable[[Job], T],
        receive: Receive | None = None,
    ) -> T:
        """Run ``work(job)`` in a job thread once admitted; JobStopped or Overloaded
        when it does not run to its end. ``receive`` (the request's ASGI receive,
        body already read) is watched for the client's disconnect. Cancelling the
        caller (a server shutdown) also stops the job at its next step."""
        if self.drain_deadline is not None:
            raise ShuttingDown("the server is shutting down: retry")
        if self._waiting_per_model[model] >= self.max_queued and (
            self._running_per_model[model] >= self.per_model
            or len(self._running) >= self.workers
        ):
            raise Overloaded(
                f"model {model} has {self._waiting_per_model[model]} jobs waiting, "
                "this server's limit (HEGNN_MAX_QUEUED_JOBS); retry later"
            )
        loop = asyncio.get_running_loop()
        job = Job(model, kind, self.timeout_s, self)
        job.started = loop.create_future()
        self._waiting.append(job)
        self._waiting_per_model[model] += 1
        watcher = None
        if receive is not None:
            watcher = asyncio.create_task(_watch_disconnect(receive, job))
        handed_over = False
        try:
            self._dispatch()
            await self._wait_for_thread(job)
            future = loop.run_in_executor(self._executor, self._call, job, work)
            handed_over = True
            # Shielded: a cancelled caller must not cancel a job not yet started
            # by its thread, or its slot would never be released (_call does it).
            return await asyncio.shield(future)
        except JobStopped as stop:
            self.metrics.jobs_stopped.labels(model, stop.reason).inc()
            raise
        finally:
            job.cancelled.set()  # no-op after the end; stops it at its next step
            if watcher is not None:
                watcher.cancel()
            if job in self._waiting:
                self._waiting.remove(job)
                self._waiting_per_model[model] -= 1
                self._gauges()
            elif job in self._running and not handed_over:
                self._finished(job)  # granted a thread, cancelled before using it

    async def _wait_for_thread(self, job: Job) -> None:
        """Wait for a thread, polling the deadline and the drain (0.1 s)."""
        assert job.started is not None
        while not job.started.done():
            if self.drain_deadline is not None:
                raise ShuttingDown(
                    f"the server is shutting down; the {job.kind} job of model "
                    f"{job.model} did not start: retry"
                )
            remaining = job.deadline - time.monotonic()
            if remaining <= 0:
                raise QueueTimeout(
                    f"the {job.kind} job of model {job.model} waited "
                    f"{job.timeout_s:g} s (HEGNN_JOB_TIMEOUT_S) for a free worker; "
                    "the server is busy: retry later"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(job.started), min(remaining, 0.1))

    def _call(self, job: Job, work: Callable[[Job], T]) -> T:
        """Worker thread: the job, its slot released when it returns or raises."""
        try:
            job.stop_if_needed()  # cancelled while the thread was handed over?
            return work(job)
        finally:
            self._loop.call_soon_threadsafe(self._finished, job)

    def _dispatch(self) -> None:
        """Start waiting jobs, oldest first, while threads and model shares allow."""
        self._loop = asyncio.get_running_loop()
        for job in list(self._waiting):
            if len(self._running) >= self.workers:
                break
            if self._running_per_model[job.model] >= self.per_model:
                continue
            self._waiting.remove(job)
            self._waiting_per_model[job.model] -= 1
            self._running.add(job)
            self._running_per_model[job.model] += 1
            assert job.started is not None
            job.started.set_result(None)
        self._gauges()

    def _finished(self, job: Job) -> None:
        if job in self._running:
            self._running.remove(job)
            self._running_per_model[job.model] -= 1
        self._dispatch()

    def _gauges(self) -> None:
        models = set(self._running_per_model) | set(self._waiting_per_model)
        for model in models:
            self.metrics.jobs_running.labels(model).set(self._running_per_model[model])
            self.metrics.jobs_queued.labels(model).set(self._waiting_per_model[model])

    # -- shutdown ---------------------------------------------------------------

    def begin_drain(self, drain_s: float | None = None) -> None:
        """SIGTERM: refuse new jobs; running ones stop at ``drain_s`` from now.
        Safe to call from a signal handler (sets one attribute)."""
        if self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + (
                self.drain_s if drain_s is None else drain_s
            )

    @property
    def busy(self) -> int:
        return len(self._running) + len(self._waiting)

    async def close(self, wait_s: float = 5.0) -> None:
        """Stop every job now and wait up to ``wait_s`` for the threads."""
        self.drain_deadline = time.monotonic()
        for job in list(self._running) + list(self._waiting):
            job.cancelled.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.to_thread(self._executor.shutdown), wait_s)


async def _watch_disconnect(receive: Receive, job: Job) -> None:
    """Set the job's cancel flag when its client disconnects."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            logger.info("%s job of model %s: client disconnected", job.kind, job.model)
            job.cancelled.set()
            return
