"""Train MACE on a force-field split for a wall-clock budget (``hegnn bench train``).

Runs in a MACE interpreter (the overlay of benchmarks/mace_anchor.py first on
PYTHONPATH). Data, split, per-element reference energies (least squares, float64,
subtracted outside the network as ``hegnn train`` does), force-RMS scale, mean
residual shift and mean neighbour count all come from ``training.prepare`` on the
same config, so MACE and HEGNN see identical numbers. The recipe is MACE's rMD17
one: AMSGrad lr 0.01, batch 5, weight decay 5e-7, EMA 0.99, plateau factor 0.8,
loss 1 · MSE(E per atom) + 1000 · MSE(F); float32 like HEGNN. Validation on the EMA
weights every ``--eval-every`` epochs, best by force MAE (``primary_metric``);
the budget is checked after each epoch, as in ``hegnn train``.

Writes ``OUT/metrics.jsonl`` (curve), ``OUT/model.safetensors`` + ``OUT/mace.json``
(best weights and the arguments that rebuild them) and ``OUT/result.json``.
With ``--time RUN ...`` it instead times energy + forces of one test structure for
trained HEGNN/EGNN checkpoints and this MACE, interleaved, and prints JSON.
"""

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import mace  # noqa: F401  (first: e3nn 0.4.4 needs it under torch >= 2.6)
import numpy as np
import torch
from e3nn import o3
from mace import modules, tools
from mace.data import AtomicData
from mace.data.utils import Configuration
from mace.tools import torch_geometric
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from hegnn import keys
from hegnn_serve.benchmarks.train import checkpoint_call, timings
from hegnn_serve.training.config import load_config
from hegnn_serve.training.metrics import MetricSums, primary_metric
from hegnn_serve.training.prepare import prepare

logger = logging.getLogger(__name__)


def build_mace(arch: dict[str, Any]) -> torch.nn.Module:
    """ScaleShiftMACE from the JSON-able ``arch`` written next to its weights."""
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    c, lh = arch["channels"], arch["hidden_l"]
    hidden = " + ".join(
        f"{c}x{ell}{'e' if ell % 2 == 0 else 'o'}" for ell in range(lh + 1)
    )
    return modules.ScaleShiftMACE(
        r_max=arch["r_max"],
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=arch["max_ell"],
        interaction_cls=block,
        interaction_cls_first=block,
        num_interactions=arch["interactions"],
        num_elements=len(arch["species"]),
        hidden_irreps=o3.Irreps(hidden),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(arch["species"])),
        avg_num_neighbors=arch["avg_num_neighbors"],
        atomic_numbers=arch["species"],
        correlation=arch["correlation"],
        gate=torch.nn.functional.silu,
        atomic_inter_scale=arch["scale"],
        atomic_inter_shift=arch["shift"],
    )


def mace_graphs(graphs, e0: np.ndarray, species: list[int], r_max: float) -> list:
    """The project's graphs as MACE AtomicData; energies minus sum_i e0[Z_i] (eV)."""
    table = tools.AtomicNumberTable(species)
    out = []
    for g in graphs:
        numbers = g[keys.NUMBERS].numpy()
        residual = float(g[keys.ENERGY]) - float(
            e0[np.searchsorted(species, numbers)].sum()
        )
        config = Configuration(
            atomic_numbers=numbers,
            positions=g[keys.POSITIONS].double().numpy(),
            properties={"energy": residual, "forces": g[keys.FORCES].double().numpy()},
            property_weights={"energy": 1.0, "forces": 1.0},
        )
        out.append(AtomicData.from_config(config, z_table=table, cutoff=r_max))
    return out


def predict(model: torch.nn.Module, batch) -> dict[str, torch.Tensor]:
    out = model(batch.to_dict(), training=model.training, compute_force=True)
    return {keys.ENERGY: out["energy"], keys.FORCES: out["forces"]}


def evaluate(model: torch.nn.Module, loader) -> dict[str, float]:
    sums = MetricSums()
    model.eval()
    for batch in loader:
        out = predict(model, batch)
        ref = {
            keys.ENERGY: batch.energy,
            keys.FORCES: batch.forces,
            keys.BATCH: batch.batch,
        }
        sums.add_batch(keys.TASK_POTENTIAL, out, ref)
    return sums.result()


def train(args: argparse.Namespace) -> None:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    config = load_config(args.config)
    prepared = prepare(config)
    stats, mc = prepared.statistics, prepared.model_config
    species = [int(z) for z in mc.species]
    e0 = np.asarray(stats["atomic_energies"])
    arch = {
        "channels": args.channels,
        "hidden_l": args.hidden_l,
        "max_ell": args.max_ell,
        "correlation": args.correlation,
        "interactions": args.interactions,
        "r_max": float(mc.r_max),
        "species": species,
        "avg_num_neighbors": stats["avg_num_neighbors"],
        "scale": stats["energy_scale"],
        "shift": stats["energy_shift"],
        "atomic_energies_ev": e0.tolist(),
    }
    loaders = {
        split: torch_geometric.dataloader.DataLoader(
            mace_graphs(prepared.splits[split], e0, species, mc.r_max),
            batch_size=args.batch_size,
            shuffle=split == "train",
            drop_last=False,
        )
        for split in ("train", "val", "test")
    }
    model = build_mace(arch)
    ema = AveragedModel(
        model, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=False
    )
    optimizer = torch.optim.Adam(
        model.parameters(), lr=args.lr, amsgrad=True, weight_decay=args.weight_decay
    )
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.8, patience=args.plateau_patience
    )
    loss_fn = modules.WeightedEnergyForcesLoss(args.energy_weight, args.force_weight)
    metric = primary_metric(keys.TASK_POTENTIAL)
    best, best_state, best_epoch, epoch = float("inf"), None, 0, 0
    start = time.perf_counter()
    with open(out_dir / "metrics.jsonl", "w") as log:
        while True:
            model.train()
            total, n = 0.0, 0
            for batch in loaders["train"]:
                optimizer.zero_grad(set_to_none=True)
                out = model(batch.to_dict(), training=True, compute_force=True)
                loss = loss_fn(batch, out)
                loss.backward()
                optimizer.step()
                ema.update_parameters(model)
                total, n = total + float(loss), n + 1
            epoch += 1
            elapsed = time.perf_counter() - start
            out_of_time = elapsed > 60 * args.minutes
            record = {
                "epoch": epoch,
                "train_loss": total / n,
                "elapsed_s": round(elapsed, 2),
            }
            if epoch % args.eval_every == 0 or out_of_time:
                val = evaluate(ema.module, loaders["val"])
                plateau.step(val[metric])
                record.update({f"val_{k}": v for k, v in val.items()})
                record["lr"] = optimizer.param_groups[0]["lr"]
                if val[metric] < best:
                    best, best_epoch = val[metric], epoch
                    best_state = copy.deepcopy(ema.module.state_dict())
            log.write(json.dumps(record) + "\n")
            log.flush()
            if out_of_time:
                break
    final = build_mace(arch)
    final.load_state_dict(best_state)
    save_file(
        {k: v.contiguous() for k, v in best_state.items()},
        out_dir / "model.safetensors",
    )
    (out_dir / "mace.json").write_text(json.dumps(arch, indent=1))
    result = {
        "model": "mace",
        "budget_min": args.minutes,
        "epochs": epoch,
        "best_epoch": best_epoch,
        "wall_s": round(time.perf_counter() - start, 1),
        "params": sum(p.numel() for p in final.parameters()),
        "architecture": arch,
        "recipe": {k: getattr(args, k) for k in RECIPE},
        "metrics": {s: evaluate(final, loaders[s]) for s in ("val", "test")},
        "versions": {"mace": mace.__version__, "torch": torch.__version__},
    }
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))
    logger.info("MACE %s min: test %s", args.minutes, result["metrics"]["test"])


RECIPE = (
    "seed", "lr", "batch_size", "weight_decay", "ema", "plateau_patience",
    "energy_weight", "force_weight", "eval_every",
)  # fmt: skip


def time_models(args: argparse.Namespace) -> None:
    """E+F of one test structure: each trained model, interleaved rounds, as JSON."""
    graph = prepare(load_config(args.config)).splits["test"][0]
    calls = {}
    for name, folder in zip(args.names, map(Path, args.time), strict=True):
        if not (folder / "mace.json").is_file():
            calls[name] = checkpoint_call(folder, graph)
            continue
        arch = json.loads((folder / "mace.json").read_text())
        model = build_mace(arch)
        model.load_state_dict(load_file(folder / "model.safetensors"))
        model.eval().requires_grad_(False)  # as served: no parameter gradients
        e0 = np.asarray(arch["atomic_energies_ev"])
        data = torch_geometric.batch.Batch.from_data_list(
            mace_graphs([graph], e0, arch["species"], arch["r_max"])
        ).to_dict()

        def call(model=model, data=data) -> None:
            fresh = {k: v.clone() if torch.is_tensor(v) else v for k, v in data.items()}
            model(fresh, training=False, compute_force=True)

        calls[name] = call
    json.dump(timings(calls, args.rounds, args.budget_s), sys.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a md17-force training config")
    parser.add_argument("--out", help="run folder (training)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--hidden-l", type=int, default=1)
    parser.add_argument("--max-ell", type=int, default=2)
    parser.add_argument("--correlation", type=int, default=3)
    parser.add_argument("--interactions", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--weight-decay", type=float, default=5e-7)
    parser.add_argument("--ema", type=float, default=0.99)
    parser.add_argument("--plateau-patience", type=int, default=50)
    parser.add_argument("--energy-weight", type=float, default=1.0)
    parser.add_argument("--force-weight", type=float, default=1000.0)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--time", nargs="+", help="run folders to time (E+F)")
    parser.add_argument("--names", nargs="+", help="a name per --time folder")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--budget-s", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    torch.set_num_threads(1)
    if args.time:
        time_models(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
