"""PNG plots of the benchmark JSON payloads (matplotlib, Agg backend)."""

import logging
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

logger = logging.getLogger(__name__)

PLAIN = FuncFormatter(lambda value, _: f"{value:g}")  # 0.5, 20, 300 on log axes
COLORS = {"egnn": "black", "hegnn": "tab:blue", "tp": "tab:red", "mace*": "tab:purple"}


MARKERS = {0: "o", 1: "o", 2: "s", 3: "^", 6: "D"}
SHADES = {"hegnn": plt.cm.Blues, "tp": plt.cm.Reds}


def _style(name: str) -> dict[str, Any]:
    """Colour by family (darker for higher L), marker by L, dashed for TP and for a
    variant ("+key=value" after the name)."""
    name, *variant = name.split("+")
    family = name.split("-")[0]
    lmax = int(name.split("-l")[1]) if "-l" in name else 0
    shades = SHADES.get(family)
    color = shades(0.45 + 0.09 * lmax) if shades else COLORS.get(family, "gray")
    return {
        "color": color,
        "linestyle": "--" if family == "tp" or variant else "-",
        "marker": MARKERS.get(lmax, "o"),
    }


def _title(payload: dict[str, Any], what: str) -> str:
    m = payload["machine"]
    return (
        f"{what}: {m['device']}, {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
        f"{m['torch_threads']} thread(s), load {m['load_average_start'][0]:.1f}"
    )


def _label_bars(ax: plt.Axes, bars: Any, labels: list[str]) -> None:
    """Write each label just above its bar."""
    for bar, label in zip(bars, labels, strict=True):
        ax.annotate(
            label,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    logger.info("wrote %s", path)
    return path


def plot_model(payload: dict[str, Any], path: Path) -> Path:
    """Left: fwd+bwd time vs bodies (log-log); right: aspirin E+F per model."""
    settings = payload["results"]["settings"]
    nbody = sorted(
        (s for s in settings.values() if s.get("task") == "dynamics"),
        key=lambda s: s["nodes"],
    )
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    names = list(nbody[0]["models"]) if nbody else []
    for name in names:
        points = [
            (s["nodes"], s["models"][name]["fwd_bwd"]["ms"])
            for s in nbody
            if "fwd_bwd" in s["models"].get(name, {})
        ]
        if points:
            x, y = zip(*points, strict=True)
            left.plot(x, y, label=name, **_style(name))
    left.set(
        xscale="log",
        yscale="log",
        xlabel="bodies N (fully connected graph)",
        ylabel="ms per forward + backward",
        title="N-body dynamics models: training step",
    )
    left.legend(fontsize=8, ncol=2)
    left.grid(True, which="both", alpha=0.3)
    molecule = settings.get("aspirin")
    if molecule:
        entries = [
            (name, m["energy_forces"]["ms"], m["energy_forces"]["ratio_to_egnn"])
            for name, m in molecule["models"].items()
            if "energy_forces" in m
        ]
        anchor = settings.get("aspirin-mace", {}).get("models", {}).get("mace")
        if anchor:  # timed in its own process beside EGNN: its ratio is to that EGNN
            mace = anchor["energy_forces"]
            entries.append(("mace*", mace["ms"], mace["ratio_to_egnn"]))
        labels = [e[0] for e in entries]
        bars = right.bar(
            labels,
            [e[1] for e in entries],
            color=[_style(n)["color"] for n in labels],
            alpha=0.8,
        )
        _label_bars(right, bars, [f"{e[2]:.1f}x" for e in entries])
        right.set(
            yscale="log",
            ylabel="ms per energy + forces (autograd)",
            title=f"Aspirin potential, radius graph 5 Å ({molecule['edges']} edges);"
            " label: x EGNN"
            + ("\n*MACE: own process (e3nn 0.4.4), x its EGNN" if anchor else ""),
        )
        right.tick_params(axis="x", rotation=45)
        right.grid(True, axis="y", which="both", alpha=0.3)
    left.set_xticks([s["nodes"] for s in nbody])
    for axis in (left.xaxis, left.yaxis, right.yaxis):  # after set(yscale=...)
        axis.set_major_formatter(PLAIN)
    left.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    fig.suptitle(_title(payload, "model cost"), fontsize=9)
    return _save(fig, path)


def plot_service(payload: dict[str, Any], path: Path) -> Path:
    """Left: structures/s vs clients; right: p50/p99 latency vs clients."""
    results = payload["results"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    for mode, color in (("batching_on", "tab:blue"), ("batching_off", "tab:orange")):
        runs = sorted(
            (r for r in results["runs"] if r["mode"] == mode),
            key=lambda r: r["clients"],
        )
        clients = [r["clients"] for r in runs]
        left.plot(
            clients,
            [r["structures_per_s"] for r in runs],
            "o-",
            color=color,
            label=f"HTTP, {mode.replace('_', ' ')}",
        )
        for key, style in (("p50_ms", "o-"), ("p99_ms", "^:")):
            right.plot(
                clients,
                [r[key] for r in runs],
                style,
                color=color,
                label=f"{mode.replace('_', ' ')} {key[:3]}",
            )
    local = sorted(results["in_process"].items(), key=lambda kv: int(kv[0]))
    left.plot(
        [int(c) for c, _ in local],
        [v["structures_per_s"] for _, v in local],
        "s--",
        color="tab:green",
        label="in-process Predictor, same batches",
    )
    left.plot(
        [int(c) for c, _ in local],
        [v["with_prepare_structures_per_s"] for _, v in local],
        "s:",
        color="tab:olive",
        label="in-process, with prepare",
    )
    left.set(
        xscale="log",
        xlabel="concurrent clients",
        ylabel="structures/s (aspirin)",
        title="throughput",
    )
    right.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent clients",
        ylabel="latency, ms",
        title="latency",
    )
    for ax in (left, right):
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xticks(sorted({r["clients"] for r in results["runs"]}))
        ax.xaxis.set_major_formatter(PLAIN)
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    right.yaxis.set_major_formatter(PLAIN)
    model = payload["config"]["checkpoint"]
    fig.suptitle(_title(payload, f"service ({model})"), fontsize=9)
    return _save(fig, path)


def plot_md(payload: dict[str, Any], path: Path) -> Path:
    """Left: ms per MD step per calculator; right: NVE total energy trace."""
    results = payload["results"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    names = list(results["ms_per_step"])
    values = [results["ms_per_step"][n] for n in names]
    bars = left.bar(names, values, color=[f"C{k}" for k in range(len(names))])
    plt.setp(left.get_xticklabels(), rotation=25, ha="right")
    _label_bars(left, bars, [f"{results['steps_per_s'][n]:.0f} steps/s" for n in names])
    left.axhline(
        results["server_compute_ms_per_call"],
        color="gray",
        linestyle=":",
        label="server compute per call",
    )
    left.set(ylabel="ms per velocity-Verlet step", title="ASE MD, aspirin")
    left.legend(fontsize=8)
    nve = results["nve"]
    right.plot(nve["trace"]["time_ps"], nve["trace"]["total_energy_mev_per_atom"])
    right.set(
        xlabel="time, ps",
        ylabel="E_total − E_total(0), meV/atom",
        title=f"NVE, dt {nve['timestep_fs']} fs: drift "
        f"{nve['drift_mev_per_atom_per_ps']:.3g} meV/atom/ps",
    )
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    fig.suptitle(_title(payload, f"MD ({payload['config']['checkpoint']})"), fontsize=9)
    return _save(fig, path)


def plot_committee(payload: dict[str, Any], path: Path) -> Path:
    """ms per energy+forces call of one member and of the committee, by batch."""
    committees = payload["results"]["committees"]
    fig, axes = plt.subplots(1, len(committees), figsize=(6 * len(committees), 4.5))
    for ax, (name, found) in zip(np.atleast_1d(axes), committees.items(), strict=True):
        batches = found["batches"]
        sizes = list(batches)
        x = np.arange(len(sizes))
        for offset, key, label in (
            (-0.27, "member", "one member"),
            (0.0, "stacked", "stacked members"),
            (0.27, "looped", "members in turn"),
        ):
            values = [batches[s][f"{key}_ms"] for s in sizes]
            bars = ax.bar(x + offset, values, 0.27, label=label)
            if key != "member":
                ratios = [f"{batches[s][f'{key}_ratio']:.2f}×" for s in sizes]
                _label_bars(ax, bars, ratios)
        ax.set_xticks(x, [f"{s} structures" for s in sizes])
        ax.set(ylabel="ms per call (energy + forces)", yscale="log")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(_title(payload, "committee of 3 vs one member"), fontsize=9)
    return _save(fig, path)


def plot_soak(payload: dict[str, Any], path: Path) -> Path:
    """Each small job's latency in turn, against the 2 s target; force latencies."""
    results = payload["results"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind in ("trajectory", "md"):
        probes = [
            (k, p["latency_s"])
            for k, p in enumerate(results["small_jobs"])
            if p["kind"] == kind
        ]
        if probes:
            ax.plot(*zip(*probes, strict=True), "o", label=f"small /{kind} job")
    ax.axhline(2.0, color="red", linestyle=":", label="target 2 s")
    forces = results["forces"]
    latency = forces["latency"]
    ax.set(
        xlabel="probe (every few seconds, during the load)",
        ylabel="latency, s",
        title=f"/forces: {forces['requests']} requests, {forces['failed']} failed, "
        f"p50 {latency['p50_ms']:.0f} ms, p99 {latency['p99_ms']:.0f} ms",
    )
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.suptitle(_title(payload, "soak beside a long /md job"), fontsize=9)
    return _save(fig, path)


def plot_batched(payload: dict[str, Any], path: Path) -> Path:
    """ms per energy+forces call of each model, grouped by setting (log scale)."""
    found = payload["results"]["settings"]
    names = list(found)
    models = list(next(iter(found.values()))["models"])
    fig, ax = plt.subplots(figsize=(13, 5.2))
    width = 0.8 / len(models)
    for k, model in enumerate(models):
        values = [found[n]["models"].get(model, {}).get("ms", np.nan) for n in names]
        x = np.arange(len(names)) + (k - (len(models) - 1) / 2) * width
        ax.bar(x, values, width, label=model)
    ax.set_xticks(
        np.arange(len(names)),
        [f"{n}\n{found[n]['atoms']} atoms, {found[n]['edges']} edges" for n in names],
    )
    ax.set(yscale="log", ylabel="ms per energy + forces call")
    ax.legend(fontsize=8, ncol=3)
    fig.suptitle(_title(payload, "batched energy + forces"), fontsize=9)
    return _save(fig, path)


def plot_train(payload: dict[str, Any], path: Path) -> Path:
    """Left: test force MAE vs training budget; right: validation curves of the
    largest budget, each model's inference time in its legend."""
    budgets = payload["results"]["budgets"]
    timing = payload["results"]["inference"]
    models = list(dict.fromkeys(m for found in budgets.values() for m in found))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    for model in models:
        trained = [b for b in budgets if "test" in budgets[b].get(model, {})]
        mae = [budgets[b][model]["test"]["force_mae_mev_per_a"] for b in trained]
        left.plot([float(b) for b in trained], mae, label=model, **_style(model))
        curve = budgets[list(budgets)[-1]].get(model, {}).get("curve", [])
        ms = timing.get(model, {}).get("ms")
        right.plot(
            [c["minutes"] for c in curve],
            [c["val_force_mae"] for c in curve],
            label=model if ms is None else f"{model} (E+F {ms:.1f} ms)",
            color=_style(model)["color"],
        )
    left.set(
        xscale="log",
        yscale="log",
        xlabel="training budget (CPU-minutes, one thread)",
        ylabel="test force MAE (meV/Å)",
    )
    right.set(
        yscale="log",
        xlabel="minutes",
        ylabel="validation force MAE (meV/Å), EMA weights",
    )
    for ax in (left, right):
        ax.yaxis.set_major_formatter(PLAIN)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(_title(payload, "equal-budget training"), fontsize=9)
    return _save(fig, path)


def plot_step(payload: dict[str, Any], path: Path) -> Path:
    """ms per structure of a training step against batch size, one line per model."""
    results = payload["results"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for model, found in results["models"].items():
        sizes = [int(b) for b in found["batches"]]
        per = [r["per_structure_ms"] for r in found["batches"].values()]
        ax.plot(sizes, per, label=model, **_style(model))
    ax.set(xlabel="batch size (structures)", ylabel="ms per structure", xscale="log")
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(_title(payload, "training step cost by batch size"), fontsize=9)
    return _save(fig, path)


PLOTS = {
    "step": plot_step,
    "train": plot_train,
    "batched": plot_batched,
    "model": plot_model,
    "service": plot_service,
    "md": plot_md,
    "committee": plot_committee,
    "soak": plot_soak,
}
