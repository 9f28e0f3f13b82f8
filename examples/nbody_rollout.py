"""Roll a charged N-body system forward on the server and plot it against simulation.

    python examples/nbody_rollout.py --url http://127.0.0.1:8000 \\
        --model nbody-charged5-hegnn-l3 --steps 5

Draws a state as the EGNN protocol does, simulates it for ``--burn-in`` time units
(3.1: the protocol's input frame 30), then posts it (positions, velocities, charges
q = ±1; simulation units) to ``/v1/models/<model>/trajectory``. The dynamics model
predicts positions after Δt, 2Δt, ... (Δt from the model card). The reference is the
paper's simulator, re-implemented below in a few lines of numpy: Coulomb forces
F_i = Σ_j q_i q_j (x_i − x_j)/|x_i − x_j|³ with components clipped to ±100,
kick-drift steps of dt = 0.001. Writes ``<out>/nbody_rollout.png`` (paths in the x-y
plane and the per-step MSE). Needs numpy, httpx, ase and matplotlib; no torch.
"""

import logging
from pathlib import Path

import numpy as np
from common import server_parser, setup_logging
from matplotlib.figure import Figure

from hegnn_serve.service.client import HEGNNClient

logger = logging.getLogger("nbody_rollout")
DT = 0.001  # integration step of both N-body protocols
MAX_FORCE = 100.0  # component clip of the protocols
SUBFRAMES = 10  # simulated points per Δt drawn on the paths


def initial_state(
    n_bodies: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x ~ N(0, σ²) with σ = (N/5)^(1/3), |v| = 0.5, q = ±1 (EGNN protocol draw)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=(n_bodies / 5) ** (1 / 3), size=(n_bodies, 3))
    v = rng.normal(size=(n_bodies, 3))
    v *= 0.5 / np.linalg.norm(v, axis=1, keepdims=True)
    q = rng.choice([-1.0, 1.0], size=n_bodies)
    return x, v, q


def integrate(
    x: np.ndarray, v: np.ndarray, q: np.ndarray, n_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n_steps`` kick-drift steps of DT from (x, v); returns new (x, v)."""
    x, v = x.copy(), v.copy()
    qq = q[:, None] * q[None, :]
    for _ in range(n_steps):
        x_ij = x[:, None, :] - x[None, :, :]  # [n, n, 3]
        r = np.linalg.norm(x_ij, axis=-1)
        np.fill_diagonal(r, np.inf)
        force = np.einsum("ij,ijk->ik", qq / r**3, x_ij)
        v += DT * np.clip(force, -MAX_FORCE, MAX_FORCE)
        x += DT * v
    return x, v


def simulate(
    x: np.ndarray, v: np.ndarray, q: np.ndarray, delta_t: float, steps: int
) -> np.ndarray:
    """Reference positions ``[steps + 1, n, 3]`` at t = 0, Δt, ..., steps·Δt."""
    frames = [x]
    for _ in range(steps):
        x, v = integrate(x, v, q, round(delta_t / DT))
        frames.append(x)
    return np.stack(frames)


def plot_rollout(
    path_points: np.ndarray, predicted: np.ndarray, title: str, path: Path
) -> None:
    """Paths in the x-y plane (simulated solid, model dashed) and MSE per Δt.

    ``path_points: [steps * SUBFRAMES + 1, n, 3]`` simulated positions every
    Δt / SUBFRAMES; ``predicted: [steps + 1, n, 3]`` the posted state and the model's.
    """
    reference = path_points[::SUBFRAMES]
    fig = Figure(figsize=(10, 4.5))
    ax_xy, ax_mse = fig.subplots(1, 2)
    for i in range(reference.shape[1]):
        (line,) = ax_xy.plot(*path_points[:, i, :2].T, lw=1.5)
        ax_xy.plot(*predicted[:, i, :2].T, "--o", ms=3, color=line.get_color())
        ax_xy.plot(*reference[0, i, :2], "ks", ms=4)
    ax_xy.set(xlabel="x", ylabel="y", title=f"{title}: simulated (—) vs model (--)")
    ax_xy.set_aspect("equal", adjustable="datalim")
    mse = ((predicted[1:] - reference[1:]) ** 2).mean(axis=(1, 2))
    ax_mse.semilogy(np.arange(1, len(mse) + 1), mse, marker="o")
    ax_mse.set(xlabel="rollout step (Δt)", ylabel="position MSE")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = server_parser(__doc__, "nbody-charged5-hegnn-l3")
    parser.add_argument("--bodies", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="rollout steps of Δt")
    parser.add_argument(
        "--burn-in",
        type=float,
        default=3.1,
        help="time simulated before the posted state (EGNN protocol input frame 30)",
    )
    args = parser.parse_args(argv)
    setup_logging()

    x, v, q = initial_state(args.bodies, args.seed)
    x, v = integrate(x, v, q, round(args.burn_in / DT))
    with HEGNNClient(args.url, api_key=args.api_key) as client:
        card = client.model(args.model)
        if card["task"] != "dynamics":
            parser.error(
                f"{args.model} is a {card['task']} model, not dynamics (for MD with "
                "a potential model: md_remote.py --server-side)"
            )
        delta_t = float(card.get("delta_t") or 1.0)
        state = {"positions": x, "velocities": v, "charges": q}
        rollout = client.trajectory(args.model, state, steps=args.steps)
    logger.info("%d steps of Δt = %g from %s", args.steps, delta_t, args.model)
    predicted = np.concatenate([x[None], rollout.positions])
    path_points = simulate(x, v, q, delta_t / SUBFRAMES, args.steps * SUBFRAMES)
    reference = path_points[::SUBFRAMES]

    args.out.mkdir(parents=True, exist_ok=True)
    plot = args.out / "nbody_rollout.png"
    plot_rollout(path_points, predicted, args.model, plot)
    mse = ((predicted[1:] - reference[1:]) ** 2).mean(axis=(1, 2))
    print(  # noqa: T201  (the one summary line)
        f"{args.bodies} bodies, {args.steps} x Δt={delta_t:g}: position MSE "
        f"first {mse[0]:.3g}, last {mse[-1]:.3g}; plot -> {plot}"
    )


if __name__ == "__main__":
    main()
