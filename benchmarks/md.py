"""ASE molecular dynamics: steps/s in-process vs through a server, and NVE drift.

Aspirin (21 atoms) with the shipped potential ``md17-aspirin-ff-hegnn`` (a random
weight HEGNN of the same architecture when that checkpoint is absent), velocity
Verlet at 0.5 fs from a 300 K Maxwell-Boltzmann start. Three calculators, timed in
interleaved segments of the same trajectory length:

- ``hegnn_calculator``: ``hegnn.HEGNNCalculator`` in this process (the library);
- ``predictor``: the server's own compute path (``Predictor`` + ASE adapter from
  service.md) in this process: the server's cost without HTTP;
- ``remote``: ``service.RemoteCalculator`` to a real server on 127.0.0.1 (its
  default msgpack body, float arrays as bytes);
- ``remote_json``: the same with JSON bodies (``HEGNNClient(binary=False)``).

HTTP overhead per step = remote − predictor, from the median step times (ms);
steps/s come from the total time of all timed steps. The server's /metrics give its
compute time per call, so the rest of a remote step (JSON, HTTP, checks, graph,
client) is also reported. ``profile`` names each millisecond of one remote step
(see :func:`profile_step`), for msgpack and for JSON. NVE: a fixed run in process;
the drift is the slope of a straight-line fit of the total energy per atom, in
meV/atom/ps.
"""

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md.verlet import VelocityVerlet
from pydantic import TypeAdapter

from hegnn import HEGNNCalculator, ModelConfig, build_model, save
from hegnn.thermal import thermalize
from hegnn_serve.benchmarks.common import (
    SHIPPED_CHECKPOINT,
    Run,
    Target,
    aspirin,
    median,
    percentiles,
)
from hegnn_serve.benchmarks.server import (
    copy_checkpoint,
    delta,
    running_servers,
    scrape,
)
from hegnn_serve.service import codec
from hegnn_serve.service.calculator import RemoteCalculator
from hegnn_serve.service.client import HEGNNClient, forces_result, structure_json
from hegnn_serve.service.md import PredictorCalculator
from hegnn_serve.service.predictor import Predictor, StructureInput
from hegnn_serve.service.routes.predict import check_sizes, forces_response
from hegnn_serve.service.schemas import ForcesBody
from hegnn_serve.service.settings import Settings

logger = logging.getLogger(__name__)

FALLBACK_NAME = "aspirin-random-hegnn"
PROFILED = ("remote", "remote_json")  # stage profiles against the eager calculator
FORCES_LATENCY = (
    'hegnn_request_duration_seconds_sum{method="POST",route="/v1/models/{name}/forces"}'
)


@dataclass(frozen=True)
class MDBenchConfig:
    """Integration settings, timing segments and the NVE run length."""

    timestep_fs: float = 0.5
    temperature_K: float = 300.0
    segment_steps: int = 10
    rounds: int = 15
    nve_steps: int = 2000
    checkpoint: Path = SHIPPED_CHECKPOINT
    compiled: bool = True  # also time torch.compile'd models, in-process and served

    @classmethod
    def quick(cls, checkpoint: Path = SHIPPED_CHECKPOINT) -> "MDBenchConfig":
        return cls(
            segment_steps=3,
            rounds=1,
            nve_steps=10,
            checkpoint=checkpoint,
            compiled=False,
        )


def random_checkpoint(root: Path) -> Path:
    """An aspirin-capable HEGNN (L=3, 64 wide, 4 layers) with random weights."""
    torch.manual_seed(0)
    config = ModelConfig(task="potential", species=(1, 6, 8), r_max=5.0)
    model = build_model(config)
    model.set_statistics(torch.zeros(3), 1.0, 0.0, 14.0)
    save(model.eval(), root / FALLBACK_NAME, {"units": {"energy": "eV"}})
    return root / FALLBACK_NAME


def start_state(temperature_K: float) -> Atoms:
    """Aspirin with seeded Maxwell-Boltzmann velocities, no net momentum."""
    atoms = aspirin()
    thermalize(atoms, temperature_K, np.random.default_rng(0), zero_rotation=False)
    return atoms


def step_times(
    calculator: Calculator, start: Atoms, steps: int, dt_fs: float
) -> list[float]:
    """Wall time of each velocity-Verlet step (one force call each) from ``start``."""
    atoms = start.copy()
    atoms.calc = calculator
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    atoms.get_forces()  # the first call happens before the steps
    stamps = [time.perf_counter()]
    dyn.attach(lambda: stamps.append(time.perf_counter()), interval=1)
    dyn.run(steps)
    # ASE calls observers once before the first step too.
    return list(np.diff(stamps[1:] if len(stamps) == steps + 2 else stamps))


def nve_drift(
    calculator: Calculator, start: Atoms, steps: int, dt_fs: float
) -> dict[str, Any]:
    """Total energy along an NVE run: drift (slope) and fluctuation per atom."""
    atoms = start.copy()
    atoms.calc = calculator
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    energies, temperatures = [], []

    def record() -> None:
        energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        temperatures.append(atoms.get_temperature())

    dyn.attach(record, interval=1)
    begin = time.perf_counter()
    dyn.run(steps)
    wall = time.perf_counter() - begin
    n = len(atoms)
    t_ps = np.arange(len(energies)) * dt_fs / 1000
    e_mev = (np.asarray(energies) - energies[0]) * 1000 / n  # meV/atom
    slope = float(np.polyfit(t_ps, e_mev, 1)[0]) if len(e_mev) > 2 else float("nan")
    return {
        "steps": steps,
        "timestep_fs": dt_fs,
        "duration_ps": steps * dt_fs / 1000,
        "drift_mev_per_atom_per_ps": slope,
        "max_abs_deviation_mev_per_atom": float(np.abs(e_mev).max()),
        "rms_fluctuation_mev_per_atom": float(np.std(e_mev)),
        "mean_temperature_K": float(np.mean(temperatures)),
        "final_energy_mev_per_atom": float(e_mev[-1]),
        "steps_per_s": steps / wall,
        "trace": {
            "time_ps": t_ps[:: max(1, steps // 400)].tolist(),
            "total_energy_mev_per_atom": e_mev[:: max(1, steps // 400)].tolist(),
        },
    }


def _ms(fn: Any, seconds: float = 0.2) -> float:
    """Median ms of ``fn()`` over calls filling about ``seconds``."""
    fn()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * median(times)


def stage_times(
    predictor: Predictor, atoms: Atoms, binary: bool, url: str
) -> dict[str, float]:
    """ms of each stage of one /forces call, timed here with the server's and the
    client's own functions (the server runs the same code on the same input)."""
    adapter = TypeAdapter(ForcesBody)
    settings = Settings(checkpoints=Path("unused"))
    body = structure_json(atoms, binary=binary)
    raw = codec.pack(body) if binary else json.dumps(body).encode()
    as_json = (
        json.dumps(codec.as_json_body(codec.unpack(raw))).encode() if binary else raw
    )
    parsed = json.loads(as_json)
    validated = adapter.validate_python(parsed)
    structure = validated.arrays()
    n_edges = predictor.check(structure)
    prepared = predictor.prepare(structure, n_edges)
    (result,) = predictor.forces([prepared])
    answer = forces_response(predictor, [result], False, binary).body
    http = HEGNNClient(url)

    def decode() -> Any:
        out = codec.unpack(answer) if binary else json.loads(answer)
        return forces_result(out)

    def validate() -> StructureInput:
        items = adapter.validate_python(json.loads(as_json)).items()
        check_sizes(settings, items)
        return items[0][1].arrays()

    try:
        stages = {
            "client encode": _ms(
                lambda: (
                    codec.pack(structure_json(atoms, binary=True))
                    if binary
                    else json.dumps(structure_json(atoms)).encode()
                )
            ),
            "server: msgpack to JSON body": _ms(
                lambda: json.dumps(codec.as_json_body(codec.unpack(raw))).encode()
            )
            if binary
            else 0.0,
            "server: JSON parse + validation + arrays": _ms(validate),
            "server: checks (species, cell, edge count)": _ms(
                lambda: predictor.check(structure)
            ),
            "server: distance check + graph build": _ms(
                lambda: predictor.prepare(structure, n_edges)
            ),
            "server: serialise answer": _ms(
                lambda: forces_response(predictor, [result], False, binary)
            ),
            "client decode": _ms(decode),
            "HTTP floor: GET /healthz round trip": _ms(
                lambda: http.http.get("/healthz")
            ),
        }
    finally:
        http.close()
    return stages


def profile_step(
    step_ms: float,
    reference_ms: float,
    stages: dict[str, float],
    queue_wait_ms: float,
    compute_ms: float,
    in_app_ms: float,
) -> dict[str, Any]:
    """One remote MD step as named rows that add up to its median time.

    ``stages``: :func:`stage_times`; from the server's /metrics: batcher hand-off
    (enqueue to the model thread's start), model call, and the time the request
    spent inside the app (outermost middleware, first to last byte: ``in_app_ms``).
    The in-app time not named by a stage is middleware, FastAPI routing and
    dependencies and the model thread's way back; the step's time outside the app
    and the client's named stages is transport, uvicorn's HTTP parsing, httpx and
    the ASE integrator (the in-process ``HEGNNCalculator`` step, same integrator,
    graph and model, is the reference; GET /healthz round trip: the HTTP floor).
    """
    rows = {k: v for k, v in stages.items() if not k.startswith("HTTP floor")}
    rows["server: batcher hand-off (queue wait)"] = queue_wait_ms
    rows["server: model call (E + F)"] = compute_ms
    server = sum(v for k, v in rows.items() if k.startswith("server"))
    client = sum(v for k, v in rows.items() if k.startswith("client"))
    rows["server: rest in the app (middleware, FastAPI, thread hop back)"] = (
        in_app_ms - server
    )
    rows["rest: transport, uvicorn, httpx, ASE step"] = step_ms - in_app_ms - client
    return {
        "rows_ms": rows,
        "remote_step_ms": step_ms,
        "http_floor_ms": stages["HTTP floor: GET /healthz round trip"],
        "in_process_step_ms": reference_ms,
        "overhead_ms": step_ms - reference_ms,
    }


def profile_markdown(payload: dict[str, Any]) -> str:
    """The profile tables of an md result as Markdown."""
    results = payload["results"]
    lines = [
        "# One ASE MD step through HTTP, aspirin (`hegnn bench md`)",
        "",
        f"{payload['date']}, {payload['machine']['cpu']}, "
        f"{payload['machine']['cores']} cores, torch threads "
        f"{payload['machine']['torch_threads']}, load "
        f"{payload['machine']['load_average_start']}, commit "
        f"{payload['machine']['commit']}. Median ms per step; stages timed "
        "in-process with the server's and client's own functions, batcher and "
        "model from the server's /metrics, the rest is the measured step minus them.",
        "",
    ]
    profiles = results["profile"]
    names = list(profiles)
    lines += ["| stage | " + " | ".join(names) + " |"]
    lines += ["|---|" + "---|" * len(names)]
    for row in profiles[names[0]]["rows_ms"]:
        values = [f"{profiles[n]['rows_ms'][row]:.3f}" for n in names]
        lines.append(f"| {row} | " + " | ".join(values) + " |")
    for label, key in (
        ("**remote MD step**", "remote_step_ms"),
        ("in-process `HEGNNCalculator` step", "in_process_step_ms"),
        ("**overhead (remote − in-process)**", "overhead_ms"),
        ("HTTP floor (GET /healthz round trip)", "http_floor_ms"),
    ):
        values = [f"{profiles[n][key]:.3f}" for n in names]
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def targets(results: dict[str, Any]) -> list[Target]:
    return [
        Target(
            "RemoteCalculator HTTP overhead per MD step (remote − in-process "
            "Predictor), aspirin",
            results["overhead_ms_per_step"]["remote_minus_predictor"],
            2.0,
            False,
            "ms",
        ),
        Target(
            "RemoteCalculator overhead per MD step (remote − in-process "
            "HEGNNCalculator), aspirin",
            results["overhead_ms_per_step"]["remote_minus_hegnn_calculator"],
            2.0,
            False,
            "ms",
            "profile: benchmarks/results/md-<device>-profile.md",
        ),
    ]


def run(cfg: MDBenchConfig, device: torch.device) -> dict[str, Any]:
    """The whole MD benchmark; returns the JSON payload."""
    start = start_state(cfg.temperature_K)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "checkpoints"
        root.mkdir()
        checkpoint = cfg.checkpoint
        shipped = checkpoint.is_dir()
        if shipped:
            copy_checkpoint(checkpoint, root)
        else:
            checkpoint = random_checkpoint(root)
        run_ = Run(
            "md",
            device,
            {
                **{k: v for k, v in cfg.__dict__.items() if k != "checkpoint"},
                "checkpoint": checkpoint.name,
                "weights": "shipped checkpoint" if shipped else "random",
                "molecule": f"aspirin ({len(start)} atoms)",
                "integrator": "ASE VelocityVerlet (NVE)",
            },
        )
        calculators: dict[str, Calculator] = {
            "hegnn_calculator": HEGNNCalculator(checkpoint, device=str(device)),
            "predictor": PredictorCalculator(Predictor.load(checkpoint, device)),
        }
        variants = [{"device": device, "torch_threads": 1}]
        if cfg.compiled:
            calculators["hegnn_calculator_compiled"] = HEGNNCalculator(
                checkpoint, device=str(device), compile=True
            )
            variants.append({**variants[0], "compile": True})
        with running_servers(root, variants) as (server, *compiled):
            remotes = {
                "remote": RemoteCalculator(server.url, checkpoint.name),
                "remote_json": RemoteCalculator(
                    model=checkpoint.name, client=HEGNNClient(server.url, binary=False)
                ),
            }
            if compiled:
                remotes["remote_compiled"] = RemoteCalculator(
                    compiled[0].url, checkpoint.name
                )
            calculators.update(remotes)
            samples: dict[str, list[float]] = {name: [] for name in calculators}
            compute: dict[str, list[float]] = {name: [] for name in remotes}
            waits: dict[str, list[float]] = {name: [] for name in remotes}
            in_app: dict[str, list[float]] = {name: [] for name in remotes}
            names = list(calculators)
            for r in range(cfg.rounds):
                k = r % len(names)
                for name in names[k:] + names[:k]:
                    url = remotes[name].url if name in remotes else None
                    before = scrape(url) if url else None
                    samples[name] += step_times(
                        calculators[name], start, cfg.segment_steps, cfg.timestep_fs
                    )
                    if url:
                        after = scrape(url)
                        calls = delta(before, after, "hegnn_compute_seconds_count")
                        seconds = delta(before, after, "hegnn_compute_seconds_sum")
                        compute[name].append(seconds / calls)
                        wait = delta(before, after, "hegnn_queue_wait_seconds_sum")
                        waits[name].append(wait / calls)
                        inside = delta(before, after, FORCES_LATENCY)
                        in_app[name].append(inside / calls)
            stages = {
                name: stage_times(
                    calculators["predictor"].predictor,
                    start,
                    name == "remote",
                    server.url,
                )
                for name in PROFILED
            }
            for remote in remotes.values():
                remote.client.close()
        ms = {name: 1000 * median(values) for name, values in samples.items()}
        profile = {
            name: profile_step(
                ms[name],
                ms["hegnn_calculator"],
                stages[name],
                1000 * median(waits[name]),
                1000 * median(compute[name]),
                1000 * median(in_app[name]),
            )
            for name in PROFILED
        }
        logger.info("ms per MD step: %s", ms)
        nve = nve_drift(calculators["predictor"], start, cfg.nve_steps, cfg.timestep_fs)
        logger.info(
            "NVE %d steps: drift %.3g meV/atom/ps",
            cfg.nve_steps,
            nve["drift_mev_per_atom_per_ps"],
        )
    server_compute_ms = 1000 * median(compute["remote"])
    results = {
        "n_atoms": len(start),
        "ms_per_step": ms,
        "steps_per_s": {k: len(v) / sum(v) for k, v in samples.items()},
        "step_ms": {
            k: {"mean": 1000 * float(np.mean(v)), **percentiles(v)}
            for k, v in samples.items()
        },
        "server_compute_ms_per_call": server_compute_ms,
        "overhead_ms_per_step": {
            "remote_minus_predictor": ms["remote"] - ms["predictor"],
            "remote_minus_hegnn_calculator": ms["remote"] - ms["hegnn_calculator"],
            "remote_minus_server_compute": ms["remote"] - server_compute_ms,
            "remote_json_minus_hegnn_calculator": ms["remote_json"]
            - ms["hegnn_calculator"],
        },
        "compiled": {
            "speedup": {
                "hegnn_calculator": ms["hegnn_calculator"]
                / ms["hegnn_calculator_compiled"],
                "remote": ms["remote"] / ms["remote_compiled"],
                "server_compute": server_compute_ms
                / (1000 * median(compute["remote_compiled"])),
            },
            "remote_minus_hegnn_calculator_ms": ms["remote_compiled"]
            - ms["hegnn_calculator_compiled"],
        }
        if cfg.compiled
        else None,
        "profile": profile,
        "nve": nve,
    }
    return run_.finish(results, targets(results))
