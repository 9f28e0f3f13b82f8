"""Charged N-body simulator of the EGNN and GMN/HEGNN protocols (HEGNN.md §7).

Physics in simulation units (unit masses, charges q = ±1, Coulomb strength 1):
F_i = sum_{j != i} q_i q_j (x_i - x_j) / |x_i - x_j|^3, each component clipped to
±``max_force`` (100 = 0.1/dt in both protocols; ``None`` turns the clip off). A step of
length dt is a kick then a drift (semi-implicit Euler): v += dt F(x); x += dt v. A frame
saved after m steps holds x after m drifts and v after m kicks.

- ``egnn``: x0 ~ N(0, σ²), σ = (N/5)^(1/3) (1 at N = 5), the initial state reflected
  into a ±5 box as EGNN's code does; frame k after 100 (k + 1) steps, 49 frames. A pool
  of 10,000 / 2,000 / 2,000 simulations is drawn; the first 3,000 / 2,000 / 2,000 of
  each pool are simulated and kept (the EGNN paper's choice).
- ``hegnn`` (GMN generator): σ = (N/5)^(1/3) + 0.1; frame k after 100 k + 1 steps, 50
  frames; 5,000 / 2,000 / 2,000 simulations, all kept.

Initial conditions are drawn one simulation after another from numpy's legacy
``RandomState(seed)`` with the draw sequence of each protocol's reference generator
(EGNN ``synthetic_sim.py``, GMN ``system.py``, run in one process), so the same seed
gives the same simulations. Integration is vectorised over simulations.

The arrays are bit-identical on any machine and numpy/BLAS build (a test pins the
content hash of a small set and checks it with numpy's AVX-512 kernels disabled):
float64 throughout, only correctly rounded element-wise operations in the dynamics
(no pow, einsum, BLAS or SIMD-ordered reductions) and a fixed summation order. The
draws come from ``RandomState``'s own Gaussian (glibc's log and sqrt).
"""

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from hegnn_serve.training.data.store import write_npz

logger = logging.getLogger(__name__)

Protocol = Literal["egnn", "hegnn"]
SPLITS = ("train", "val", "test")
_PAIR_BUDGET = 3_000_000  # simulations x N x N x 3 floats held per force evaluation


@dataclass(frozen=True)
class NBodyProtocol:
    """Everything that defines one protocol's simulations (simulation units)."""

    name: Protocol
    n_bodies: int
    loc_std: float  # σ of the initial positions
    save_steps: tuple[int, ...]  # steps after which each frame is saved
    pool: tuple[int, int, int]  # simulations drawn per split (train, val, test)
    sizes: tuple[int, int, int]  # simulations kept per split: first of each pool
    dt: float = 0.001
    vel_norm: float = 0.5  # initial speed of every body
    max_force: float | None = 100.0  # component clip; None = no clip
    box: float | None = None  # initial state reflected into [-box, box] (EGNN)


def nbody_protocol(
    name: Protocol,
    n_bodies: int = 5,
    sizes: tuple[int, int, int] | None = None,
    clip: bool = True,
) -> NBodyProtocol:
    """The paper's protocol ``name`` with ``n_bodies`` bodies and optional sizes."""
    if n_bodies < 2:
        raise ValueError(f"n_bodies: need at least 2 bodies, got {n_bodies}")
    scale = (n_bodies / 5.0) ** (1.0 / 3.0)
    if name == "egnn":
        sizes = sizes or (3000, 2000, 2000)
        pool = tuple(max(p, s) for p, s in zip((10000, 2000, 2000), sizes, strict=True))
        steps = tuple(100 * (k + 1) for k in range(49))
        loc_std, box = scale, 5.0
    elif name == "hegnn":
        sizes = sizes or (5000, 2000, 2000)
        pool, steps = sizes, tuple(100 * k + 1 for k in range(50))
        loc_std, box = scale + 0.1, None
    else:
        raise ValueError(f"protocol: expected 'egnn' or 'hegnn', got {name!r}")
    if min(sizes) < 0 or sum(sizes) == 0:
        raise ValueError(f"sizes: expected non-negative sizes, got {sizes}")
    return NBodyProtocol(
        name=name,
        n_bodies=n_bodies,
        loc_std=loc_std,
        save_steps=steps,
        pool=pool,
        sizes=tuple(sizes),
        max_force=100.0 if clip else None,
        box=box,
    )


def _reflect_into_box(x: np.ndarray, v: np.ndarray, box: float) -> int:
    """EGNN's ``_clamp`` on a state ``[N, 3]``, in place: mirror at ±box, flip v."""
    over, under = x > box, x < -box
    x[over] = 2 * box - x[over]
    v[over] = -np.abs(v[over])
    x[under] = -2 * box - x[under]
    v[under] = np.abs(v[under])
    return int(over.sum() + under.sum())


def _draw_egnn(rs: np.random.RandomState, p: NBodyProtocol) -> tuple[np.ndarray, ...]:
    """One simulation's (x0, v0, q), drawn as EGNN's ``sample_trajectory`` does."""
    n = p.n_bodies
    q = rs.choice(np.array([-1.0, 0.0, 1.0]), size=(n, 1), p=[0.5, 0.0, 0.5])
    x = rs.randn(3, n) * p.loc_std
    v = rs.randn(3, n)
    v = v * p.vel_norm / np.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).reshape(1, -1)
    n_frames = len(p.save_steps)
    rs.randn(n_frames, 3, n)  # EGNN draws observation noise (variance 0) for x ...
    rs.randn(n_frames, 3, n)  # ... and for v: consumed to keep the stream aligned
    return x.T.copy(), v.T.copy(), q[:, 0]


def _draw_gmn(rs: np.random.RandomState, p: NBodyProtocol) -> tuple[np.ndarray, ...]:
    """One simulation's (x0, v0, q) in the draw order of GMN's ``System`` (isolated)."""
    n = p.n_bodies
    q = rs.choice([1.0, -1.0], size=(n, 1))
    x = rs.randn(n, 3) * p.loc_std
    v = rs.randn(n, 3)
    speed = np.sqrt(v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1] + v[:, 2] * v[:, 2])
    v = v / speed.reshape(-1, 1) * p.vel_norm
    for remaining in range(n, 0, -1):  # GMN assigns bodies to objects at random
        rs.permutation(remaining)
    return x, v, q[:, 0]


def initial_conditions(
    p: NBodyProtocol, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw all pools; return the kept x0, v0 ``[S, N, 3]``, q ``[S, N]``, pool index.

    Simulations are drawn train pool, val pool, test pool in turn; the first
    ``sizes[k]`` of pool k are kept. ``pool index`` is each kept simulation's place in
    the drawn stream.
    """
    rs = np.random.RandomState(seed)
    draw = _draw_egnn if p.name == "egnn" else _draw_gmn
    x0, v0, q, kept = [], [], [], []
    reflected, start = 0, 0
    for pool_size, size in zip(p.pool, p.sizes, strict=True):
        for k in range(pool_size):
            x, v, charges = draw(rs, p)
            if p.box is not None:
                reflected += _reflect_into_box(x, v, p.box)
            if k < size:
                x0.append(x)
                v0.append(v)
                q.append(charges)
                kept.append(start + k)
        start += pool_size
    if reflected:
        logger.info("initial state: %d coordinates reflected into the box", reflected)
    return np.stack(x0), np.stack(v0), np.stack(q), np.asarray(kept, dtype=np.int64)


def coulomb_forces(
    x: np.ndarray, q: np.ndarray, max_force: float | None = None
) -> np.ndarray:
    """F_i = sum_j q_i q_j (x_i - x_j)/|x_i - x_j|^3 for ``x [S, N, 3]``, ``q [S, N]``.

    Each component is clipped to ±``max_force`` when given. Returns ``[S, N, 3]``.

    Bit-reproducible on any machine and numpy/BLAS build: float64 and only
    correctly rounded element-wise operations (+, -, *, /, sqrt; no pow, no
    einsum/BLAS, no reductions whose order a SIMD kernel may choose), summed in a
    fixed order: |x_ij|² as ((dx² + dy²) + dz²), 1/r³ as 1/(r² · sqrt(r²)), and the
    force as a left-to-right sum over j = 0..N-1 (numpy's float64 ``r2**-1.5`` has an
    AVX-512 kernel that differs from libm's pow by an ulp, which chaos amplifies).
    """
    x = np.asarray(x, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    n = x.shape[1]
    x_ij = x[:, :, None, :] - x[:, None, :, :]  # [S, N, N, 3]
    d = x_ij * x_ij
    r2 = d[..., 0] + d[..., 1]
    r2 += d[..., 2]
    r2[:, np.arange(n), np.arange(n)] = np.inf  # no self force
    w = q[:, :, None] * q[:, None, :]
    w /= r2 * np.sqrt(r2)  # [S, N, N]; 0 on the diagonal
    f = w[:, :, 0, None] * x_ij[:, :, 0, :]
    for j in range(1, n):
        f += w[:, :, j, None] * x_ij[:, :, j, :]
    if max_force is not None:
        np.clip(f, -max_force, max_force, out=f)
    return f


def total_energy(x: np.ndarray, v: np.ndarray, q: np.ndarray) -> np.ndarray:
    """E = sum_i |v_i|^2 / 2 + sum_{i<j} q_i q_j / |x_i - x_j| per simulation, [S]."""
    n = x.shape[1]
    r = np.linalg.norm(x[:, :, None, :] - x[:, None, :, :], axis=-1)
    iu = np.triu_indices(n, k=1)
    potential = (q[:, :, None] * q[:, None, :] / np.where(r > 0, r, np.inf))[
        :, iu[0], iu[1]
    ].sum(axis=-1)
    return 0.5 * (v**2).sum(axis=(1, 2)) + potential


def simulate(
    x0: np.ndarray,
    v0: np.ndarray,
    q: np.ndarray,
    dt: float,
    save_steps: tuple[int, ...],
    max_force: float | None = 100.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Kick-drift integration of ``S`` simulations at once.

    ``x0, v0: [S, N, 3]``, ``q: [S, N]``. Returns positions and velocities
    ``[S, len(save_steps), N, 3]`` after each step count in ``save_steps``. Simulations
    are processed in chunks to bound memory.
    """
    n_sims, n = x0.shape[:2]
    save = {m: k for k, m in enumerate(sorted(save_steps))}
    positions = np.empty((n_sims, len(save), n, 3))
    velocities = np.empty_like(positions)
    chunk = max(1, _PAIR_BUDGET // (3 * n * n))
    for start in range(0, n_sims, chunk):
        sl = slice(start, start + chunk)
        x, v, qc = x0[sl].copy(), v0[sl].copy(), q[sl]
        for m in range(1, max(save) + 1):
            v += dt * coulomb_forces(x, qc, max_force)
            x += dt * v
            if m in save:
                positions[sl, save[m]] = x
                velocities[sl, save[m]] = v
        logger.info("simulated %d / %d", min(start + chunk, n_sims), n_sims)
    return positions, velocities


def generate_nbody(
    path: str | Path, p: NBodyProtocol, seed: int = 43
) -> dict[str, object]:
    """Simulate protocol ``p`` with ``seed`` and write one .npz; return its metadata.

    Arrays: ``positions``, ``velocities`` ``[S, F, N, 3]``, ``charges [S, N]``,
    ``train_idx``/``val_idx``/``test_idx`` (indices into S) and ``pool_index`` (each
    simulation's place in the drawn stream). ``metadata`` is a JSON record.
    """
    t0 = time.perf_counter()
    x0, v0, q, pool_index = initial_conditions(p, seed)
    positions, velocities = simulate(x0, v0, q, p.dt, p.save_steps, p.max_force)
    bounds = np.cumsum((0, *p.sizes))
    arrays = {
        "positions": positions,
        "velocities": velocities,
        "charges": q,
        "pool_index": pool_index,
        **{
            f"{s}_idx": np.arange(bounds[k], bounds[k + 1], dtype=np.int64)
            for k, s in enumerate(SPLITS)
        },
    }
    wall = time.perf_counter() - t0
    metadata = {
        "generator": "hegnn-serve training.data.nbody",
        "protocol": p.name,
        "n_bodies": p.n_bodies,
        "seed": seed,
        "rng": "numpy legacy RandomState(seed), one simulation after another, "
        + ("EGNN synthetic_sim.py" if p.name == "egnn" else "GMN system.py")
        + " draw order",
        "dt": p.dt,
        "steps_between_frames": 100,
        "save_steps": list(p.save_steps),
        "frame_times": [round(m * p.dt, 12) for m in p.save_steps],
        "integrator": "kick-drift (semi-implicit Euler); frame m: x after m drifts, "
        "v after m kicks",
        "loc_std": p.loc_std,
        "vel_norm": p.vel_norm,
        "max_force": p.max_force,
        "initial_box": p.box,
        "units": "simulation units",
        "pool_sizes": dict(zip(SPLITS, p.pool, strict=True)),
        "sizes": dict(zip(SPLITS, p.sizes, strict=True)),
        "kept": "the first sizes[split] simulations of each split's pool",
        "wall_time_s": round(wall, 3),
    }
    metadata = write_npz(path, arrays, metadata)
    logger.info(
        "wrote %s: %s protocol, %d bodies, %s sims in %.1f s",
        path,
        p.name,
        p.n_bodies,
        json.dumps(metadata["sizes"]),
        wall,
    )
    return metadata
