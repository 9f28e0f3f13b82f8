"""Task datasets as lists of PyG ``Data`` graphs, fields named as in ``hegnn.keys``.

Every sample's graph is built by :func:`hegnn.make_graph_data` with the model's
``ModelConfig``, as the service and the calculator build theirs: the config's input
rule (hegnn/rules/) decides the edges, the stored inputs and the atoms kept. The
datasets add the targets.

- ``nbody``: fully connected charges, (x, v) at one frame -> x at a later frame.
- ``md17-traj``: GMN's trajectory protocol (HEGNN.md §8): heavy atoms, v = R[t+1] - R[t]
  (Å per frame), target x at t + Δ, one bond + 2-hop graph from trajectory frame 0.
- ``md17-force``: energies (eV) and forces (eV/Å) on radius graphs.
"""

import logging
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from hegnn import keys
from hegnn.config import ModelConfig
from hegnn.inputs import make_graph_data
from hegnn.rules import input_rule
from hegnn_serve.training.data.md17 import MD17Frames, split_frames

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
GMN_FRACTIONS = (0.1, 0.05, 0.05)  # of the candidate frames, drawn in this order


def rotation_xyz(a_deg: float, b_deg: float, c_deg: float) -> np.ndarray:
    """Rx(a) Ry(b) Rz(c) for angles in degrees, ``[3, 3]``."""
    a, b, c = np.radians([a_deg, b_deg, c_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


def nbody_dataset(
    config: ModelConfig,
    npz_path: str | Path,
    split: str,
    frame_in: int = 30,
    frame_out: int = 40,
    rotate: bool = False,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> list[Data]:
    """One graph per simulation of ``split`` in a file of ``hegnn data nbody``.

    Graphs of ``make_graph_data(config, ...)`` (nbody rule: fully connected, with
    velocities and charges) at ``frame_in``, plus target_positions at ``frame_out``
    (simulation units). With ``rotate``, simulation s is rotated by Rx(a)Ry(b)Rz(c)
    with whole degrees a, b, c drawn from ``default_rng([seed, s])`` (the
    rotated-test protocol).
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    dtype = dtype or torch.get_default_dtype()
    with np.load(npz_path, allow_pickle=False) as npz:
        index = npz[f"{split}_idx"]
        n_frames = npz["positions"].shape[1]
        for name, frame in (("frame_in", frame_in), ("frame_out", frame_out)):
            if not 0 <= frame < n_frames:
                raise ValueError(f"{name}: frame {frame} not in 0..{n_frames - 1}")
        x = npz["positions"][index][:, [frame_in, frame_out]]  # [S, 2, N, 3]
        v = npz["velocities"][index, frame_in]  # [S, N, 3]
        q = npz["charges"][index]
    graphs = []
    for k, s in enumerate(index):
        x_in, x_out, v_in = x[k, 0], x[k, 1], v[k]
        if rotate:
            angles = np.random.default_rng([seed, int(s)]).integers(0, 360, size=3)
            r = rotation_xyz(*angles)
            x_in, x_out, v_in = x_in @ r.T, x_out @ r.T, v_in @ r.T
        data = make_graph_data(config, x_in, velocities=v_in, charges=q[k], dtype=dtype)
        data[keys.TARGET_POSITIONS] = torch.as_tensor(x_out, dtype=dtype)
        graphs.append(data)
    return graphs


def gmn_split(
    n_candidates: int, split_seed: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GMN's draw of candidate offsets: 10 % train, then 5 %, then 5 % of the rest.

    Sizes are ``int(fraction * n_candidates)``; val and test are drawn without
    replacement from what is left, with legacy ``np.random.seed(split_seed)`` calls
    exactly as GMN's ``MD17Dataset`` (which reproduces its shipped split files).
    """
    rs = np.random.RandomState(split_seed)
    free = np.ones(n_candidates, dtype=bool)
    drawn = []
    for k, fraction in enumerate(GMN_FRACTIONS):
        pool = np.arange(n_candidates) if k == 0 else np.flatnonzero(free)
        idx = rs.choice(pool, size=int(fraction * n_candidates), replace=False)
        free[idx] = False
        drawn.append(idx)
    return drawn[0], drawn[1], drawn[2]


def gmn_frames_needed(sizes: tuple[int, int, int], margin: int = 10000) -> int:
    """Fewest trajectory frames for which GMN's split yields ``sizes`` samples."""
    need = max(
        int(np.ceil(s / f - 1e-9)) for s, f in zip(sizes, GMN_FRACTIONS, strict=True)
    )
    while any(int(f * need) < s for s, f in zip(sizes, GMN_FRACTIONS, strict=True)):
        need += 1
    return need + 2 * margin + 1  # candidates are x = R[:-1] minus both margins


def md17_trajectory_dataset(
    frames: MD17Frames,
    config: ModelConfig,
    delta: int = 3000,
    split_seed: int = 100,
    sizes: tuple[int, int, int] = (500, 2000, 2000),
    margin: int = 10000,
    dtype: torch.dtype | None = None,
) -> dict[str, list[Data]]:
    """GMN's MD17 trajectory task: split name -> graphs.

    The atoms are those the config's rule keeps (``atom_mask``: heavy atoms only
    with ``heavy_atoms_only``). Candidates are t in [margin, n_frames - 1 - margin);
    :func:`gmn_split` draws the samples and the first ``sizes`` of each split are
    kept. Graphs of ``make_graph_data(config, ...)`` with positions R[t] (Å),
    velocities R[t+1] - R[t] (Å per frame) and numbers, edges built from frame 0
    (``graph_positions``: the same for all, bonds < ``config.bond_cutoff``), plus
    target_positions R[t + delta]. Needs consecutive MD frames.
    """
    dtype = dtype or torch.get_default_dtype()
    kept = input_rule(config).atom_mask(frames.numbers)
    r = frames.positions[:, kept]  # [n_frames, n_kept, 3]
    x, v = r[:-1], r[1:] - r[:-1]
    n_candidates = len(x) - 2 * margin
    if n_candidates <= 0:
        raise ValueError(
            f"frames: {len(frames)} frames leave no candidates with margin {margin}"
        )
    drawn = gmn_split(n_candidates, split_seed)
    numbers = frames.numbers[kept]
    out: dict[str, list[Data]] = {}
    for name, idx, size in zip(SPLITS, drawn, sizes, strict=True):
        if len(idx) < size:
            raise ValueError(
                f"sizes: {name} needs {size} samples but {len(frames)} frames give "
                f"{len(idx)}; GMN's split needs {gmn_frames_needed(sizes, margin)} "
                f"frames for sizes {sizes} with margin {margin}"
            )
        t = idx[:size] + margin
        if size and t.max() + delta >= len(x):
            raise ValueError(
                f"delta: target frame {t.max() + delta} beyond the trajectory "
                f"({len(x)} usable frames); use a margin >= delta"
            )
        graphs = []
        for s in t:
            data = make_graph_data(
                config,
                x[s],
                numbers=numbers,
                velocities=v[s],
                dtype=dtype,
                graph_positions=r[0],
            )
            data[keys.TARGET_POSITIONS] = torch.as_tensor(x[s + delta], dtype=dtype)
            graphs.append(data)
        out[name] = graphs
    some = next((g[0] for g in out.values() if g), None)
    logger.info(
        "md17-traj: %s samples, Δ = %d frames, %d of %d atoms, %s edges",
        {k: len(g) for k, g in out.items()},
        delta,
        int(kept.sum()),
        len(kept),
        some[keys.EDGE_INDEX].shape[1] if some is not None else "no",
    )
    return out


def force_graphs(
    frames: MD17Frames, config: ModelConfig, dtype: torch.dtype | None = None
) -> list[Data]:
    """One graph per frame, in order: ``make_graph_data(config, ...)`` (species
    rule: positions in Å, numbers, radius graph of cutoff ``config.r_max``) plus
    energy ``[1]`` float64 (eV) and forces ``[n, 3]`` (eV/Å)."""
    dtype = dtype or torch.get_default_dtype()
    graphs = []
    for x, energy, forces in zip(
        frames.positions, frames.energies, frames.forces, strict=True
    ):
        data = make_graph_data(config, x, numbers=frames.numbers, dtype=dtype)
        data[keys.FORCES] = torch.as_tensor(forces, dtype=dtype)
        data[keys.ENERGY] = torch.tensor([energy], dtype=torch.float64)
        graphs.append(data)
    return graphs


def md17_force_dataset(
    frames: MD17Frames,
    config: ModelConfig,
    sizes: tuple[int, int, int] = (650, 50, 100),
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> dict[str, list[Data]]:
    """Energies and forces on radius graphs: split name -> :func:`force_graphs`
    of the frames shuffled by ``default_rng(seed)`` and cut into ``sizes``."""
    return {
        name: force_graphs(part, config, dtype)
        for name, part in split_frames(frames, sizes, seed).items()
    }


def fit_reference_energies(
    numbers: list[np.ndarray], energies: np.ndarray, species: list[int] | np.ndarray
) -> np.ndarray:
    """Per-species energies e_Z (eV) minimising sum_k (E_k - sum_atoms e_Z)^2.

    ``numbers``: atomic numbers of each structure; ``energies [n_structures]`` eV.
    With one composition only, the system is rank one and the minimum-norm solution is
    returned (it still reproduces the mean energy). Returns ``[len(species)]``.
    """
    species = np.asarray(species)
    counts = np.stack(
        [(np.asarray(z)[:, None] == species).sum(axis=0) for z in numbers]
    )
    unknown = {int(z) for zs in numbers for z in zs} - set(species.tolist())
    if unknown:
        raise ValueError(
            f"numbers: species {sorted(unknown)} not in {species.tolist()}"
        )
    solution, *_ = np.linalg.lstsq(
        counts.astype(np.float64), np.asarray(energies, np.float64), rcond=None
    )
    return solution
