"""`hegnn bench ...`: the performance benchmarks of DESIGN.md §10.

Each command writes ``<out>/<name>-<device>.json`` and ``.png`` and prints its
table; ``all`` runs model, service and md in turn. The benchmarks read the shipped
checkpoint and geometries of the source checkout they run from (``pip install -e .``).
"""

import dataclasses
import logging
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.table import Table

from hegnn import resolve_device
from hegnn_serve.benchmarks import batched as batched_bench
from hegnn_serve.benchmarks import committee as committee_bench
from hegnn_serve.benchmarks import common, plots
from hegnn_serve.benchmarks import md as md_bench
from hegnn_serve.benchmarks import model as model_bench
from hegnn_serve.benchmarks import service as service_bench
from hegnn_serve.benchmarks import soak as soak_bench
from hegnn_serve.benchmarks import step as step_bench
from hegnn_serve.benchmarks import train as train_bench

logger = logging.getLogger(__name__)
bench_app = typer.Typer(
    no_args_is_help=True,
    help="Benchmarks (DESIGN.md §10): JSON and PNG results under --out.",
)
BENCHMARKS: dict[str, ModuleType] = {
    "model": model_bench,
    "service": service_bench,
    "md": md_bench,
    "committee": committee_bench,
    "soak": soak_bench,
    "batched": batched_bench,
    "train": train_bench,
    "step": step_bench,
}

Out = Annotated[Path, typer.Option(help="folder for <bench>-<device>.json/.png")]
Quick = Annotated[
    bool, typer.Option("--quick", help="tiny configuration (smoke test, seconds)")
]
Device = Annotated[str, typer.Option(help="cpu, cuda[:N] or auto")]
Threads = Annotated[int, typer.Option(min=1, help="torch threads of this process")]
MacePath = Annotated[
    Path | None,
    typer.Option(
        envvar="HEGNN_BENCH_MACE_PATH",
        help="a mace-torch overlay for PYTHONPATH (benchmarks/mace_anchor.py): "
        "adds MACE on aspirin",
    ),
]
DEFAULT_OUT = Path("benchmarks/results")


@bench_app.callback()
def _setup() -> None:
    """Log INFO messages to stderr unless logging is configured already."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "hegnn", "service"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _run(name: str, config: Any, out: Path, device: str, threads: int) -> dict:
    """Run one benchmark, write its JSON and PNG, print its tables."""
    torch.set_num_threads(threads)
    try:
        resolved = resolve_device(device)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    start = time.perf_counter()
    payload = BENCHMARKS[name].run(config, resolved)
    stem = common.result_stem(name, resolved)
    common.write_json(payload, out / f"{stem}.json")
    if name == "md":  # the profile of one remote step, as a table
        (out / f"{stem}-profile.md").write_text(md_bench.profile_markdown(payload))
    plots.PLOTS[name](payload, out / f"{stem}.png")
    _print(name, payload)
    logger.info("%s benchmark: %.0f s", name, time.perf_counter() - start)
    return payload


def _config(name: str, quick: bool, **options: Any) -> Any:
    """The benchmark's config dataclass: its quick variant or defaults, + options."""
    cls = {
        "model": model_bench.ModelBenchConfig,
        "service": service_bench.ServiceBenchConfig,
        "md": md_bench.MDBenchConfig,
        "committee": committee_bench.CommitteeBenchConfig,
        "soak": soak_bench.SoakConfig,
        "batched": batched_bench.BatchedBenchConfig,
        "train": train_bench.TrainBenchConfig,
        "step": step_bench.StepBenchConfig,
    }[name]
    given = {k: v for k, v in options.items() if v is not None}
    return dataclasses.replace(cls.quick(), **given) if quick else cls(**given)


@bench_app.command()
def model(
    out: Out = DEFAULT_OUT,
    quick: Quick = False,
    device: Device = "cpu",
    threads: Threads = 1,
    mace_path: MacePath = None,
) -> None:
    """Time, memory, parameters: EGNN, HEGNN L=1,2,3,6, e3nn tensor products.

    N-body graphs of 5-100 bodies (dynamics) and aspirin (energy + forces);
    --mace-path adds MACE on aspirin.
    """
    config = _config("model", quick, mace_path=mace_path)
    _run("model", config, out, device, threads)


@bench_app.command()
def batched(
    out: Out = DEFAULT_OUT,
    quick: Quick = False,
    threads: Threads = 1,
    mace_path: MacePath = None,
) -> None:
    """Batched E+F: 1/8/32 aspirins, a 100-atom all-pairs cluster (CPU).

    EGNN, HEGNN L=1-3, compiled HEGNN L=3; --mace-path adds MACE, all timed together.
    """
    _run("batched", _config("batched", quick, mace_path=mace_path), out, "cpu", threads)


@bench_app.command()
def train(
    out: Out = DEFAULT_OUT,
    quick: Quick = False,
    config: Annotated[
        Path | None, typer.Option(help="a md17-force training config")
    ] = None,
    budgets: Annotated[
        str | None, typer.Option(help="comma-separated CPU-minutes per run")
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="comma-separated: egnn, hegnn-lK, mace")
    ] = None,
    jobs: Annotated[int | None, typer.Option(min=1, help="runs in parallel")] = None,
    run_root: Annotated[
        Path | None, typer.Option(help="runs and checkpoints (resumable)")
    ] = None,
    mace_path: MacePath = None,
    keep_earlier: Annotated[
        bool,
        typer.Option(
            help="keep OUT/train-cpu.json's results of the budgets and models "
            "not trained now (same config)"
        ),
    ] = True,
) -> None:
    """Equal-budget training: EGNN, HEGNN and MACE on one force-field split.

    Test force/energy MAE per budget, learning curves, E+F time of each trained
    model; --mace-path adds MACE (trained in its own interpreter).
    """
    options = {
        "config": config,
        "budgets_min": budgets and tuple(float(b) for b in budgets.split(",")),
        "models": models and tuple(models.split(",")),
        "jobs": jobs,
        "run_root": run_root,
        "mace_path": mace_path,
        "keep_from": out / "train-cpu.json" if keep_earlier else None,
    }
    _run("train", _config("train", quick, **options), out, "cpu", 1)


# The benchmarks whose only options are the common ones, with their help text.
SIMPLE_BENCHMARKS = {
    "service": "A real server, 1-64 clients: batching on vs off vs the Predictor "
    "in-process.\n\nRequests/s, structures/s, µs/atom, p50/p95/p99 latency (aspirin).",
    "md": "ASE MD steps/s in-process vs RemoteCalculator; NVE energy drift.",
    "committee": "A committee's cost against one member (ethanol, batches of 1/8/32).",
    "soak": "64 force clients × 60 s beside a long /md job, small jobs probed "
    "(issue 16).",
    "step": "One training step of EGNN and HEGNN by batch size: ms per structure, "
    "s per epoch.",
}


def _add_simple_command(name: str, help_text: str) -> None:
    """Register `hegnn bench NAME` with the common options only."""

    def command(
        out: Out = DEFAULT_OUT,
        quick: Quick = False,
        device: Device = "cpu",
        threads: Threads = 1,
    ) -> None:
        _run(name, _config(name, quick), out, device, threads)

    command.__doc__ = help_text
    bench_app.command(name)(command)


for _name, _help in SIMPLE_BENCHMARKS.items():
    _add_simple_command(_name, _help)


@bench_app.command("all")
def all_(
    out: Out = DEFAULT_OUT,
    quick: Quick = False,
    device: Device = "cpu",
    threads: Threads = 1,
    mace_path: MacePath = None,
) -> None:
    """model, service and md, one after the other (about 6-8 min on 2 cores)."""
    start = time.perf_counter()
    _run("model", _config("model", quick, mace_path=mace_path), out, device, threads)
    for name in ("service", "md"):
        _run(name, _config(name, quick), out, device, threads)
    logger.info("all benchmarks: %.0f s", time.perf_counter() - start)


# -- tables ------------------------------------------------------------------------


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"
    return str(value)


def _print(name: str, payload: dict) -> None:
    console = Console(width=None if sys.stdout.isatty() else 130)
    tables = {
        "model": _model_table,
        "service": _service_table,
        "md": _md_table,
        "committee": _committee_table,
        "soak": _soak_table,
        "batched": _batched_table,
        "train": _train_table,
        "step": _step_table,
    }
    tables[name](console, payload["results"])
    targets = Table(title=f"{name}: targets (DESIGN.md §10)")
    for column in ("target", "measured", "threshold", "met"):
        targets.add_column(column)
    for t in payload["targets"]:
        sign = "≥" if t["higher_is_better"] else "≤"
        met = {True: "yes", False: "NO", None: "-"}[t["met"]]
        targets.add_row(
            t["name"], _f(t["value"]), f"{sign} {t['threshold']} {t['unit']}", met
        )
    console.print(targets)


def _batched_table(console: Console, results: dict) -> None:
    found = results["settings"]
    models = list(next(iter(found.values()))["models"])
    table = Table(title="batched energy + forces, ms per call (× EGNN)")
    for column in ("setting", "atoms", "edges", *models):
        table.add_column(column, justify="right")
    for name, s in found.items():
        cells = [
            f"{_f(m['ms'])} ({_f(m['ratio_to_egnn'])}×)"
            if (m := s["models"].get(model))
            else "-"
            for model in models
        ]
        table.add_row(name, _f(s["atoms"]), _f(s["edges"]), *cells)
    console.print(table)


def _train_table(console: Console, results: dict) -> None:
    timing = results["inference"]
    table = Table(
        title="equal-budget training: test MAE of the best-validation weights"
    )
    for column in (
        "budget min",
        "model",
        "params",
        "epochs",
        "F MAE meV/Å",
        "E MAE meV",
        "E+F ms",
    ):
        table.add_column(column, justify="right")
    for budget, found in results["budgets"].items():
        for model, r in found.items():
            if "failed" in r:
                table.add_row(budget, model, "-", f"failed: {r['failed']}")
                continue
            table.add_row(
                budget,
                model,
                f"{r['params']:,}",
                f"{r['epochs']} (best {r['best_epoch']})",
                _f(r["test"]["force_mae_mev_per_a"]),
                _f(r["test"]["energy_mae_mev"]),
                _f(timing.get(model, {}).get("ms")),
            )
    console.print(table)


def _soak_table(console: Console, results: dict) -> None:
    forces = results["forces"]
    table = Table(title="soak: /forces beside a long /md job, and small jobs")
    for column in ("what", "requests", "failed", "p50 ms", "p99 ms", "worst s"):
        table.add_column(column)
    latency = forces["latency"]
    table.add_row(
        "/forces",
        _f(forces["requests"]),
        _f(forces["failed"]),
        _f(latency["p50_ms"]),
        _f(latency["p99_ms"]),
        "-",
    )
    small = results["small_jobs"]
    failed = sum(p["status"] != 200 for p in small)
    table.add_row(
        "small jobs",
        _f(len(small)),
        _f(failed),
        "-",
        "-",
        _f(results["small_job_worst_s"]),
    )
    long_job = results["long_job"]
    table.add_row(
        f"long /md (status {long_job.get('status')})",
        "1",
        "-",
        "-",
        "-",
        _f(long_job.get("elapsed_s")),
    )
    console.print(table)


def _committee_table(console: Console, results: dict) -> None:
    table = Table(title="committee cost (ms per energy + forces call)")
    columns = ("committee", "structures", "edges", "one member", "stacked", "in turn")
    for column in (*columns, "served: ratio (paired)"):
        table.add_column(column)
    for name, found in results["committees"].items():
        for n, r in found["batches"].items():
            table.add_row(
                name,
                n,
                str(r["edges"]),
                _f(r["member_ms"]),
                f"{_f(r['stacked_ms'])} ({_f(r['stacked_ratio'])}×)",
                f"{_f(r['looped_ms'])} ({_f(r['looped_ratio'])}×)",
                f"{r['served_path']}: {_f(r['ratio'])}×",
            )
    console.print(table)


def _step_table(console: Console, results: dict) -> None:
    n = results["train_structures"]
    table = Table(title=f"training step (ms; epoch = {n} training structures)")
    for column in ("model", "batch", "edges", "step", "per structure", "epoch s", "×"):
        table.add_column(column)
    for model, found in results["models"].items():
        for bs, r in found["batches"].items():
            ratio = results["ratio_to_egnn"].get(bs, {}).get(model)
            table.add_row(
                model,
                bs,
                _f(r["edges_per_step"]),
                _f(r["step_ms"]),
                _f(r["per_structure_ms"]),
                _f(r["epoch_s"]),
                _f(ratio),
            )
    console.print(table)


def _model_table(console: Console, results: dict) -> None:
    table = Table(title="model cost (ms per call; ×: ratio to EGNN in this run)")
    for column in (
        "setting",
        "model",
        "params",
        "fwd",
        "fwd+bwd / E+F",
        "train",
        "peak MiB",
    ):
        table.add_column(column, justify="right")
    for setting, s in results["settings"].items():
        if "skipped" in s:
            table.add_row(setting, "-", "-", s["skipped"], "", "", "")
            continue
        for model_name, m in s["models"].items():
            if "skipped" in m:
                table.add_row(setting, model_name, "-", m["skipped"], "", "", "")
                continue
            second = m.get("fwd_bwd") or m["energy_forces"]
            train = m.get("train_step")
            table.add_row(
                setting,
                model_name,
                f"{m['params']:,}",
                f"{_f(m['fwd']['ms'])} ({_f(m['fwd']['ratio_to_egnn'])}×)",
                f"{_f(second['ms'])} ({_f(second['ratio_to_egnn'])}×)",
                ""
                if train is None
                else f"{_f(train['ms'])} ({_f(train['ratio_to_egnn'])}×)",
                _f(second["peak_mib"]),
            )
    console.print(table)


def _service_table(console: Console, results: dict) -> None:
    table = Table(title=f"service, aspirin ({results['n_atoms']} atoms) per request")
    for column in (
        "mode",
        "clients",
        "req/s",
        "µs/atom",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "structures/call",
    ):
        table.add_column(column, justify="right")
    for r in results["runs"]:
        table.add_row(
            r["mode"],
            str(r["clients"]),
            _f(r["requests_per_s"]),
            _f(r["us_per_atom"]),
            _f(r["p50_ms"]),
            _f(r["p95_ms"]),
            _f(r["p99_ms"]),
            _f(r["mean_structures_per_model_call"]),
        )
    for clients, v in results["in_process"].items():
        table.add_row(
            "in-process",
            clients,
            _f(v["structures_per_s"]),
            _f(1e6 / (v["structures_per_s"] * results["n_atoms"])),
            "",
            "",
            "",
            _f(v["batch"]),
        )
    console.print(table)


def _md_table(console: Console, results: dict) -> None:
    table = Table(title=f"ASE MD, aspirin ({results['n_atoms']} atoms)")
    for column in ("calculator", "ms/step", "steps/s"):
        table.add_column(column, justify="right")
    for name, ms in results["ms_per_step"].items():
        table.add_row(name, _f(ms), _f(results["steps_per_s"][name]))
    console.print(table)
    profile = Table(title="one remote MD step, ms (benchmarks/md.py profile_step)")
    profile.add_column("stage")
    for name in results["profile"]:
        profile.add_column(name, justify="right")
    first = next(iter(results["profile"].values()))
    for row in first["rows_ms"]:
        profile.add_row(
            row, *(_f(p["rows_ms"][row]) for p in results["profile"].values())
        )
    console.print(profile)
    overhead = results["overhead_ms_per_step"]
    nve = results["nve"]
    console.print(
        f"server compute per call {_f(results['server_compute_ms_per_call'])} ms; "
        + "; ".join(f"{k} {_f(v)} ms" for k, v in overhead.items())
        + f"\nNVE {nve['steps']} steps × {nve['timestep_fs']} fs: drift "
        f"{_f(nve['drift_mev_per_atom_per_ps'])} meV/atom/ps, max |ΔE| "
        f"{_f(nve['max_abs_deviation_mev_per_atom'])} meV/atom"
    )
    if results.get("compiled"):
        compiled = results["compiled"]
        console.print(
            "torch.compile speed-up: "
            + "; ".join(f"{k} {_f(v)}×" for k, v in compiled["speedup"].items())
            + f"; compiled remote − compiled in-process "
            f"{_f(compiled['remote_minus_hegnn_calculator_ms'])} ms"
        )
