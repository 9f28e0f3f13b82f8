"""Prometheus metrics of one app, in its own CollectorRegistry (several apps per
process, as in tests, never collide)."""

from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from hegnn_serve.service.predictor import ForceResult, Predictor

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
ATOM_BUCKETS = (10, 30, 100, 300, 1000, 3000, 10000, 30000)


class Metrics:
    """Request, batching and compute metrics; ``render()`` is the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "hegnn_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "hegnn_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_structures = Histogram(
            "hegnn_batch_structures",
            "structures evaluated together in one model call",
            ["model"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_atoms = Histogram(
            "hegnn_batch_atoms",
            "atoms evaluated together in one model call",
            ["model"],
            buckets=ATOM_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "hegnn_queue_wait_seconds",
            "time a structure waited before its model call started",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "hegnn_compute_seconds",
            "model compute time per call (forces batch, rollout or MD run)",
            ["model", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.atoms = Counter(
            "hegnn_atoms",
            "atoms evaluated (rate() gives atoms per second)",
            ["model"],
            registry=r,
        )
        self.atoms_per_second = Gauge(
            "hegnn_atoms_per_second",
            "atoms per second of the latest model call",
            ["model"],
            registry=r,
        )
        self.jobs_queued = Gauge(
            "hegnn_jobs_queued",
            "/trajectory and /md jobs waiting for a worker thread",
            ["model"],
            registry=r,
        )
        self.jobs_running = Gauge(
            "hegnn_jobs_running",
            "/trajectory and /md jobs running",
            ["model"],
            registry=r,
        )
        self.jobs_stopped = Counter(
            "hegnn_jobs_stopped",
            "jobs stopped before their end, by reason (cancelled, timeout, "
            "shutdown, queue_timeout)",
            ["model", "reason"],
            registry=r,
        )
        self.uncertain = Counter(
            "hegnn_uncertain_answers",
            "committee force answers whose max_force_std passed the card's "
            "threshold (the structure is outside what the committee knows)",
            ["model"],
            registry=r,
        )
        self.models = Gauge(
            "hegnn_models",
            "checkpoint folders by state (loaded, failed)",
            ["state"],
            registry=r,
        )

    def observe_call(
        self, model: str, kind: str, structures: int, atoms: int, seconds: float
    ) -> None:
        """Record one model call of ``atoms`` atoms (forces: also the batch size)."""
        if kind == "forces":
            self.batch_structures.labels(model).observe(structures)
            self.batch_atoms.labels(model).observe(atoms)
        self.compute.labels(model, kind).observe(seconds)
        self.atoms.labels(model).inc(atoms)
        if seconds > 0:
            self.atoms_per_second.labels(model).set(atoms / seconds)

    def observe_uncertainty(
        self, predictor: "Predictor", results: Sequence["ForceResult"]
    ) -> None:
        """Count a committee's answers above its card's ``max_force_std`` threshold."""
        threshold = predictor.threshold
        if threshold is None:
            return
        over = sum(r.max_force_std > threshold for r in results)
        if over:
            self.uncertain.labels(predictor.name).inc(over)

    def render(self) -> bytes:
        return generate_latest(self.registry)
