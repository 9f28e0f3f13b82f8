"""`hegnn bench`: each benchmark runs in its --quick configuration and writes JSON of
the documented schema and a PNG. Timings are never asserted (shared machines)."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hegnn.testing import assert_equivariant, random_structure
from hegnn_cli import app
from hegnn_serve.benchmarks.tp_baseline import TPDynamics, TPPotential
from hegnn_serve.benchmarks.train import WALL_CLOCK_ONLY_EPOCHS as UNCAPPED

ENVELOPE = {
    "benchmark",
    "schema_version",
    "date",
    "wall_seconds",
    "machine",
    "config",
    "results",
    "targets",
    "notes",
}
MACHINE = {"cpu", "cores", "torch", "device", "load_average_start", "load_average_end"}


def run_bench(name: str, out: Path, *options: str) -> dict:
    """``hegnn bench NAME --quick --out OUT [OPTIONS]``; the JSON it wrote."""
    args = ["bench", name, "--quick", "--out", str(out), *options]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (out / f"{name}-cpu.png").stat().st_size > 10_000
    payload = json.loads((out / f"{name}-cpu.json").read_text())
    assert ENVELOPE <= payload.keys()
    assert payload["benchmark"] == name
    assert MACHINE <= payload["machine"].keys()
    for target in payload["targets"]:
        assert {"name", "value", "threshold", "met"} <= target.keys()
    return payload["results"]


def test_bench_model(tmp_path: Path) -> None:
    results = run_bench("model", tmp_path)
    assert {"nbody-5", "aspirin"} <= results["settings"].keys()
    for setting in results["settings"].values():
        assert {"egnn", "hegnn-l1", "tp-l1"} <= setting["models"].keys()
        for model in setting["models"].values():
            assert model["params"] > 0
            for metric in setting["metrics"]:
                assert model[metric]["ms"] > 0
                assert {"ratio_to_egnn", "peak_mib", "samples_ms"} <= model[
                    metric
                ].keys()
    assert results["settings"]["aspirin"]["metrics"] == [
        "fwd",
        "energy_forces",
        "train_step",
    ]


def test_bench_service(tmp_path: Path) -> None:
    results = run_bench("service", tmp_path)
    modes = {(r["mode"], r["clients"]) for r in results["runs"]}
    assert modes == {(m, c) for m in ("batching_on", "batching_off") for c in (1, 4)}
    for r in results["runs"]:
        assert r["requests"] > 0
        for key in (
            "requests_per_s",
            "structures_per_s",
            "us_per_atom",
            "p50_ms",
            "p95_ms",
            "p99_ms",
        ):
            assert r[key] > 0
    assert set(results["in_process"]) == {"1", "4"}


def test_bench_md(tmp_path: Path) -> None:
    results = run_bench("md", tmp_path)
    calculators = {"hegnn_calculator", "predictor", "remote", "remote_json"}
    assert set(results["ms_per_step"]) == calculators
    assert set(results["overhead_ms_per_step"]) == {
        "remote_minus_predictor",
        "remote_minus_hegnn_calculator",
        "remote_minus_server_compute",
        "remote_json_minus_hegnn_calculator",
    }
    for profile in results["profile"].values():  # named rows add up to the step
        rows = profile["rows_ms"]
        assert "server: model call (E + F)" in rows and "client encode" in rows
        assert sum(rows.values()) == pytest.approx(profile["remote_step_ms"], 1e-3)
    assert (tmp_path / "md-cpu-profile.md").read_text().count("|") > 40
    assert results["nve"]["steps"] == 10
    assert "drift_mev_per_atom_per_ps" in results["nve"]


def test_bench_committee(tmp_path: Path) -> None:
    """On the shipped ethanol committee: three timings, paired ratios, the path."""
    found = run_bench("committee", tmp_path)["committees"]
    batches = found["md17-ethanol-ff-hegnn-committee"]["batches"]
    assert set(batches) == {"1", "2"}
    for r in batches.values():
        assert min(r["member_ms"], r["stacked_ms"], r["looped_ms"]) > 0
        assert r["served_path"] == "stacked"  # 9 atoms: far below the edge limit
        assert r["ratio"] == r["stacked_ratio"] > 0


def test_bench_step(tmp_path: Path) -> None:
    """The trainer's real step, timed per batch size; epoch = steps x step time."""
    results = run_bench("step", tmp_path)
    n = results["train_structures"]
    assert n == 30  # md17-force-tiny: 30 training frames
    assert set(results["models"]) == {"egnn", "hegnn-l1", "hegnn-l1+phi_v=linear"}
    variant = results["models"]["hegnn-l1+phi_v=linear"]["params"]
    assert variant < results["models"]["hegnn-l1"]["params"]  # no hidden φ_v layer
    for found in results["models"].values():
        assert found["params"] > 0
        for bs, r in found["batches"].items():
            steps = -(-n // int(bs))
            assert r["step_ms"] > 0 and r["edges_per_step"] > 0
            # the JSON keeps 6 significant digits: each value within 5e-6 relative
            exact = pytest.approx(r["step_ms"] / int(bs), rel=1e-5)
            assert r["per_structure_ms"] == exact
            assert r["epoch_s"] == pytest.approx(r["step_ms"] * steps / 1e3, rel=1e-5)
    assert set(results["ratio_to_egnn"]) == {"1", "5"}
    assert all(
        r["hegnn-l1"] > 0 and r["hegnn-l1+phi_v=linear"] > 0
        for r in results["ratio_to_egnn"].values()
    )


def test_bench_batched(tmp_path: Path) -> None:
    results = run_bench("batched", tmp_path)
    assert list(results["settings"]) == ["aspirin-x1", "aspirin-x2"]
    for copies, setting in enumerate(results["settings"].values(), start=1):
        assert setting["structures"] == copies
        assert setting["atoms"] == 21 * copies
        assert set(setting["models"]) == {"egnn", "hegnn-l1"}  # no MACE overlay
        for model in setting["models"].values():
            assert model["ms"] > 0 and model["samples_ms"]


def test_bench_train(tmp_path: Path) -> None:
    """Real `hegnn train` runs at a seconds-long budget, then their E+F timed; a
    second call resumes (keeps the finished runs) instead of training again."""
    runs = tmp_path / "runs"
    results = run_bench("train", tmp_path, "--run-root", str(runs))
    found = results["budgets"]["0.02"]
    assert set(found) == {"egnn", "hegnn-l1"}  # no MACE overlay
    for r in found.values():
        assert r["epochs"] >= 1 and r["params"] > 0 and r["curve"]
        assert r["test"]["force_mae_mev_per_a"] > 0
        card = json.loads(Path(r["folder"], "card.json").read_text())
        # the budget alone ends the run, not the tiny config's 4-epoch cap
        assert card["training"]["config"]["optim"]["max_epochs"] == UNCAPPED
    assert set(results["inference"]) == {"egnn", "hegnn-l1"}
    cards = sorted(runs.rglob("card.json"))
    stamps = [c.stat().st_mtime_ns for c in cards]
    run_bench("train", tmp_path, "--run-root", str(runs))
    assert [c.stat().st_mtime_ns for c in cards] == stamps
    # another budget: the earlier one is kept from the JSON, marked as such
    args = ("--run-root", str(runs), "--budgets", "0.03", "--models", "egnn")
    budgets = run_bench("train", tmp_path, *args)["budgets"]
    assert list(budgets) == ["0.02", "0.03"]
    assert "earlier_run" in budgets["0.02"]["egnn"]
    assert "earlier_run" not in budgets["0.03"]["egnn"]
    trained_002 = budgets["0.02"]["egnn"]["earlier_run"]
    # another model at that budget: the budget's EGNN result is kept beside it,
    # with the stamp of the run that trained it, and both models are timed
    args = ("--run-root", str(runs), "--budgets", "0.03", "--models", "hegnn-l1")
    results = run_bench("train", tmp_path, *args)
    budgets = results["budgets"]
    assert set(budgets["0.03"]) == {"egnn", "hegnn-l1"}
    assert "earlier_run" not in budgets["0.03"]["hegnn-l1"]
    egnn = budgets["0.03"]["egnn"]
    assert egnn["earlier_run"]["cpu"] and egnn["folder"].endswith("egnn-s0")
    # carried over twice, the 0.02 result keeps the stamp of the run that trained it
    assert budgets["0.02"]["egnn"]["earlier_run"] == trained_002
    assert set(results["inference"]) == {"egnn", "hegnn-l1"}


def test_bench_soak(tmp_path: Path) -> None:
    """A real server on the shipped checkpoints: force clients beside a long /md
    job, small jobs probed; every request counted by status."""
    results = run_bench("soak", tmp_path)
    forces = results["forces"]
    assert forces["requests"] == sum(forces["by_status"].values()) > 0
    assert results["small_jobs"], "no small job was probed"
    assert {p["kind"] for p in results["small_jobs"]} <= {"trajectory", "md"}
    assert results["long_job"]["status"] is not None


@pytest.mark.parametrize("task", ["potential", "dynamics"])
def test_tp_baseline_is_equivariant(task: str) -> None:
    """The tensor-product baseline is a real E(3)-equivariant model."""
    torch.manual_seed(0)
    model = (
        TPPotential((1, 6, 8), lmax=2, channels=4, num_layers=2)
        if task == "potential"
        else TPDynamics(lmax=2, channels=4, num_layers=2)
    )
    assert_equivariant(model.to(torch.float64), random_structure(n_atoms=7))
