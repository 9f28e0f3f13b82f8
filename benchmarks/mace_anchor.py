"""MACE beside EGNN and HEGNN L=3 on aspirin, in one process (optional anchor).

mace-torch pins e3nn 0.4.4 while this project uses e3nn ≥ 0.5, so MACE runs in a
separate interpreter whose path puts a MACE overlay first, e.g.

    pip install --target /tmp/mace-site --no-deps mace-torch e3nn==0.4.4 \\
        opt-einsum opt-einsum-fx torch-ema prettytable configargparse \\
        python-hostlist torchmetrics lightning-utilities pandas matscipy h5py \\
        lmdb orjson
    PYTHONPATH=/tmp/mace-site:. python -m hegnn_serve.benchmarks.mace_anchor

(the project's venv supplies torch; hegnn runs on e3nn 0.4.4 too). Prints one JSON
object: the aspirin setting of benchmarks/model.py with ``egnn``, ``hegnn-l3`` and
``mace`` (ScaleShiftMACE, hidden 64x0e + 64x1o, max_ell 3, correlation 3, 2 layers,
204k parameters as in the anchors note, random weights), timed in interleaved rounds;
with ``--batched``, benchmarks/batched.py's settings with ``mace`` added.
"""

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import mace  # noqa: F401  (first: e3nn 0.4.4 needs it under torch >= 2.6)
import numpy as np
import torch
from ase import Atoms
from e3nn import o3
from mace import data as mace_data
from mace import modules, tools
from mace.tools import torch_geometric

from hegnn_serve.benchmarks import memory
from hegnn_serve.benchmarks.batched import BatchedBenchConfig
from hegnn_serve.benchmarks.batched import settings as batched_settings
from hegnn_serve.benchmarks.common import aspirin, interleaved, median, paired_ratio
from hegnn_serve.benchmarks.model import (
    R_MAX,
    SPECIES,
    Candidate,
    ModelBenchConfig,
    aspirin_graph,
    build,
    potential_calls,
)

logger = logging.getLogger(__name__)


def mace_model(avg_num_neighbors: float, r_max: float = R_MAX) -> torch.nn.Module:
    """ScaleShiftMACE as in the anchors note (random weights)."""
    torch.manual_seed(0)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        r_max=r_max,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=block,
        interaction_cls_first=block,
        num_interactions=2,
        num_elements=len(SPECIES),
        hidden_irreps=o3.Irreps("64x0e + 64x1o"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(SPECIES)),
        avg_num_neighbors=avg_num_neighbors,
        atomic_numbers=list(SPECIES),
        correlation=3,
        gate=torch.nn.functional.silu,
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )


def mace_calls(model: torch.nn.Module) -> dict[str, Callable[[], None]]:
    """The three potential metrics of benchmarks/model.py, for MACE's API."""
    config = mace_data.config_from_atoms(aspirin())
    table = tools.AtomicNumberTable(list(SPECIES))
    atomic = mace_data.AtomicData.from_config(config, z_table=table, cutoff=R_MAX)
    batch = torch_geometric.batch.Batch.from_data_list([atomic]).to_dict()

    def fresh() -> dict[str, torch.Tensor]:
        return {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}

    def fwd() -> None:
        model.eval()
        with torch.no_grad():
            model(fresh(), training=False, compute_force=False)

    def energy_forces() -> None:
        model.eval().requires_grad_(False)
        model(fresh(), training=False, compute_force=True)

    def train_step() -> None:
        model.train().requires_grad_(True)
        model.zero_grad(set_to_none=True)
        out = model(fresh(), training=True, compute_force=True)
        (out["energy"].pow(2).mean() + out["forces"].pow(2).mean()).backward()

    return {"fwd": fwd, "energy_forces": energy_forces, "train_step": train_step}


def mace_energy_forces(
    structures: list[Atoms], r_max: float, n_avg: float
) -> dict[str, Callable[[], None]]:
    """benchmarks/batched.py's hook: MACE energy + forces of ``structures`` batched."""
    model = mace_model(n_avg, r_max).eval().requires_grad_(False)
    table = tools.AtomicNumberTable(list(SPECIES))
    graphs = [
        mace_data.AtomicData.from_config(
            mace_data.config_from_atoms(a), z_table=table, cutoff=r_max
        )
        for a in structures
    ]
    batch = torch_geometric.batch.Batch.from_data_list(graphs).to_dict()

    def call() -> None:
        fresh = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
        model(fresh, training=False, compute_force=True)

    return {"mace": call}


def batched(config: str) -> None:
    """benchmarks/batched.py's settings with MACE, as one JSON line on stdout."""
    cfg = BatchedBenchConfig(
        **{
            k: tuple(v) if isinstance(v, list) else v
            for k, v in json.loads(config).items()
        }
    )
    found = batched_settings(cfg, extra=mace_energy_forces)
    for setting in found.values():
        setting["versions"] = {"mace": mace.__version__}
    json.dump(found, sys.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=6.0)
    parser.add_argument(
        "--batched", action="store_true", help="benchmarks/batched.py's settings"
    )
    parser.add_argument("--config", default="{}", help="BatchedBenchConfig as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    torch.set_num_threads(1)
    if args.batched:
        batched(args.config)
        return
    cfg = ModelBenchConfig()
    graph = aspirin_graph()
    n_avg = graph.edge_index.shape[1] / graph.num_nodes
    models: dict[str, torch.nn.Module] = {
        "egnn": build(Candidate("egnn", None), "potential", cfg, n_avg),
        "hegnn-l3": build(Candidate("hegnn", 3), "potential", cfg, n_avg),
        "mace": mace_model(n_avg),
    }
    calls = {}
    for name, model in models.items():
        fns = (
            mace_calls(model)
            if name == "mace"
            else potential_calls(model, graph, torch.device("cpu"))
        )
        calls.update({f"{name}/{m}": fn for m, fn in fns.items()})
    samples = interleaved(calls, args.rounds, cfg.min_round_s, args.budget_s)
    memory.prepare_cpu_measurement()
    peaks = {
        key: memory.peak_bytes(fn, torch.device("cpu")) for key, fn in calls.items()
    }
    out: dict[str, Any] = {}
    metrics = ("fwd", "energy_forces", "train_step")
    for name, model in models.items():
        entry: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters())}
        for m in metrics:
            ms = 1000 * median(samples[f"{name}/{m}"])
            peak = peaks[f"{name}/{m}"]
            entry[m] = {
                "ms": ms,
                "ratio_to_egnn": paired_ratio(
                    samples[f"{name}/{m}"], samples[f"egnn/{m}"]
                ),
                "peak_mib": None if peak is None else peak / 2**20,
                "rounds": len(samples[f"{name}/{m}"]),
                "samples_ms": [1000 * s for s in samples[f"{name}/{m}"]],
            }
        out[name] = entry
    import e3nn

    json.dump(
        {
            "task": "potential",
            "nodes": graph.num_nodes,
            "edges": int(graph.edge_index.shape[1]),
            "metrics": list(metrics),
            "models": out,
            "versions": {"mace": mace.__version__, "e3nn": e3nn.__version__},
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
