"""What every benchmark shares: machine info, interleaved timing, targets, JSON out.

Timings on a shared machine drift with its load, so every benchmark measures the
things it compares in interleaved rounds (each round visits every candidate once,
in rotated order) and reports medians over rounds; ratios come from one run.
"""

import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.io import read

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
ASPIRIN = ROOT / "training" / "geometries" / "aspirin.xyz"
SHIPPED_CHECKPOINT = ROOT / "checkpoints" / "md17-aspirin-ff-hegnn"
SCHEMA_VERSION = 1


def aspirin() -> Atoms:
    """Aspirin (21 atoms, H/C/O), the MD17 molecule used throughout."""
    return read(ASPIRIN)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform's guess elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def git_commit() -> str | None:
    """Short commit of the working tree (with ``+dirty``), None outside git."""
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU, cores, versions and the device timed (load averages come from Run)."""
    import e3nn

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "platform": platform.platform(),
        "commit": git_commit(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class Target:
    """One §10 performance target: the measured value against its threshold."""

    name: str
    value: float | None
    threshold: float
    higher_is_better: bool
    unit: str = ""
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or not math.isfinite(self.value):
            return None
        if self.higher_is_better:
            return self.value >= self.threshold
        return self.value <= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


@dataclass
class Run:
    """The envelope of one benchmark's JSON: machine, load, config, results."""

    benchmark: str
    device: torch.device
    config: dict[str, Any]
    started: float = field(default_factory=time.time)
    load_start: list[float] = field(default_factory=load_average)
    notes: list[str] = field(default_factory=list)

    def finish(self, results: dict[str, Any], targets: list[Target]) -> dict[str, Any]:
        machine = machine_info(self.device)
        machine["load_average_start"] = self.load_start
        machine["load_average_end"] = load_average()
        return {
            "benchmark": self.benchmark,
            "schema_version": SCHEMA_VERSION,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "wall_seconds": round(time.time() - self.started, 1),
            "machine": machine,
            "config": self.config,
            "results": results,
            "targets": [t.to_json() for t in targets],
            "notes": self.notes,
        }


def result_stem(benchmark: str, device: torch.device) -> str:
    """File stem of a result, labelled by device: ``model-cpu``, ``md-cuda``."""
    return f"{benchmark}-{device.type}"


def write_json(payload: dict[str, Any], path: Path) -> Path:
    """Write one result file (6 significant digits, NaN and inf as null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(payload), indent=2, ensure_ascii=False) + "\n")
    logger.info("wrote %s", path)
    return path


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def interleaved(
    calls: dict[str, Callable[[], object]],
    rounds: int,
    min_round_s: float = 0.05,
    budget_s: float = 10.0,
) -> dict[str, list[float]]:
    """Seconds per call of every candidate, one sample per round, rounds interleaved.

    A first call warms each candidate up and estimates its cost t0 (a call over one
    second counts as a sample: its warm-up is negligible). A round calls each
    candidate k = ceil(min_round_s / t0) times and records the mean; a candidate
    takes part in at most ``budget_s / (k t0)`` rounds (at least one), so slow
    baselines stay bounded in time.
    """
    samples: dict[str, list[float]] = {name: [] for name in calls}
    repeat, allowed = {}, {}
    for name, fn in calls.items():
        start = time.perf_counter()
        fn()
        t0 = time.perf_counter() - start
        if t0 > 1.0:
            samples[name].append(t0)
        repeat[name] = max(1, math.ceil(min_round_s / max(t0, 1e-6)))
        allowed[name] = max(1, min(rounds, int(budget_s / (repeat[name] * t0))))
        allowed[name] -= len(samples[name])
    names = list(calls)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            if allowed[name] <= 0:
                continue
            allowed[name] -= 1
            fn, k = calls[name], repeat[name]
            start = time.perf_counter()
            for _ in range(k):
                fn()
            samples[name].append((time.perf_counter() - start) / k)
    return samples


def paired_ratio(samples: list[float], baseline: list[float]) -> float:
    """Median of round-by-round ratios (each pair timed seconds apart, so drifting
    load cancels); the ratio of medians when the round counts differ."""
    if len(samples) == len(baseline) and samples:
        return median([a / b for a, b in zip(samples, baseline, strict=True)])
    return median(samples) / median(baseline)


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50/p95/p99 (ms) of latencies in seconds."""
    if not seconds:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    ms = np.asarray(seconds) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mace_pythonpath(mace_path: Path) -> str:
    """PYTHONPATH of a MACE interpreter: the overlay first, then this checkout.
    Absolute, as :func:`run_in_mace` runs in the repository root."""
    return os.pathsep.join([str(mace_path.resolve()), str(ROOT)])


def run_in_mace(mace_path: Path, module: str, args: list[str], timeout: float) -> Any:
    """``python -m MODULE ARGS`` with the MACE overlay first; its last stdout line
    as JSON (benchmarks/mace_anchor.py explains the separate interpreter)."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**os.environ, "PYTHONPATH": mace_pythonpath(mace_path)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"MACE interpreter failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
