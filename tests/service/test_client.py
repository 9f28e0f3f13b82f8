"""HEGNNClient against a real server on 127.0.0.1, plus retry rules on a mock transport.

Fixtures ``server_url`` and ``checkpoint_dir`` (models "tiny-ff", species (1, 6, 8),
and "tiny-nbody") come from tests/service/conftest.py.
"""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from ase.md.verlet import VelocityVerlet

from hegnn import HEGNNCalculator, load, make_graph_data
from hegnn_serve.service.client import (
    ForcesResult,
    HEGNNClient,
    HEGNNConnectionError,
    HEGNNServiceError,
    MDTrajectory,
    Trajectory,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def client(server_url: str):
    with HEGNNClient(server_url) as c:
        yield c


def nbody_state(n: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "positions": rng.normal(size=(n, 3)),
        "velocities": 0.5 * rng.normal(size=(n, 3)),
        "charges": rng.choice([-1.0, 1.0], size=n),
    }


# What the base install (`pip install hegnn-serve`, no extras) lacks: blocked in a child
# interpreter, so importing any of them there raises ImportError.
SERVER_SIDE = (
    "torch",
    "e3nn",
    "torch_geometric",
    "hegnn",
    "fastapi",
    "pydantic",
    "typer",
)

CLIENT_ONLY = """
import json, sys
for name in {blocked}:
    sys.modules[name] = None  # `import name` now raises ImportError
from ase.build import molecule
from hegnn_serve.service.calculator import RemoteCalculator
atoms = molecule("CH3CH2OH")
atoms.calc = RemoteCalculator(sys.argv[1], "tiny-ff")
print(json.dumps([atoms.get_potential_energy(), atoms.get_forces().tolist()]))
"""


def test_client_runs_without_the_server_side_packages(
    server_url: str, client: HEGNNClient
) -> None:
    """RemoteCalculator in an interpreter where torch, hegnn, fastapi, pydantic and
    typer cannot be imported gives the server's answer."""
    code = CLIENT_ONLY.format(blocked=SERVER_SIDE)
    out = subprocess.run(
        [sys.executable, "-c", code, server_url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    energy, forces = json.loads(out.stdout.splitlines()[-1])
    expected = client.forces("tiny-ff", molecule("CH3CH2OH"))
    assert energy == expected.energy
    np.testing.assert_array_equal(np.array(forces), expected.forces)


def test_models_and_card(client: HEGNNClient) -> None:
    names = {m["name"]: m for m in client.models()}
    assert {"tiny-ff", "tiny-nbody"} <= set(names)
    assert names["tiny-ff"]["task"] == "potential"
    card = client.model("tiny-ff")
    assert card["task"] == "potential"
    assert sorted(card["model"]["species"]) == [1, 6, 8]
    assert client.model("tiny-nbody")["task"] == "dynamics"


def test_forces_one_and_many(client: HEGNNClient) -> None:
    ethanol, water = molecule("CH3CH2OH"), molecule("H2O")
    one = client.forces("tiny-ff", ethanol)
    assert isinstance(one, ForcesResult)
    assert isinstance(one.energy, float)
    assert one.forces.shape == (9, 3) and one.forces.dtype == np.float64
    many = client.forces("tiny-ff", [water, ethanol])
    assert [len(r.forces) for r in many] == [3, 9]
    np.testing.assert_allclose(many[1].energy, one.energy, rtol=1e-9)
    np.testing.assert_allclose(many[1].forces, one.forces, rtol=1e-7, atol=1e-9)
    arrays = {"numbers": ethanol.numbers, "positions": ethanol.positions}
    # Equal to round-off, not bit for bit: CUDA scatter sums run in no fixed order
    # (seen on an H200: a zero component came back as 1e-20 and as -0.0).
    np.testing.assert_allclose(
        client.forces("tiny-ff", arrays).forces, one.forces, rtol=1e-7, atol=1e-9
    )


def test_unknown_model_is_404_with_the_server_message(client: HEGNNClient) -> None:
    with pytest.raises(HEGNNServiceError) as err:
        client.forces("no-such-model", molecule("H2O"))
    assert err.value.status_code == 404
    assert "no-such-model" in err.value.message and "tiny-ff" in err.value.message


def test_invalid_input_is_422_with_the_field_named(client: HEGNNClient) -> None:
    bad = {"numbers": [1, 8, 1], "positions": [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]}
    with pytest.raises(HEGNNServiceError) as err:
        client.forces("tiny-ff", bad)
    assert err.value.status_code == 422
    assert "positions" in err.value.message or "numbers" in err.value.message
    assert err.value.detail


def test_connections_are_kept_alive_without_nagle(client: HEGNNClient) -> None:
    """One socket for every call, with TCP_NODELAY: a POST's body must not wait
    ~40 ms for the ACK of its headers (delayed ACK)."""
    sockets = []

    def note_socket(response: httpx.Response) -> None:
        sockets.append(response.extensions["network_stream"].get_extra_info("socket"))

    client.http.event_hooks["response"].append(note_socket)
    client.models()
    for _ in range(2):
        client.forces("tiny-ff", molecule("H2O"))
    assert len(sockets) == 3 and len({s.getsockname() for s in sockets}) == 1
    assert sockets[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_server_down_fails_fast_without_hanging() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with HEGNNClient(f"http://127.0.0.1:{port}", timeout=2.0, retries=2) as c:
        with pytest.raises(HEGNNConnectionError, match="after 3 attempts"):
            c.models()
    assert time.perf_counter() - start < 5.0


def test_silent_server_times_out_without_retrying() -> None:
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        start = time.perf_counter()
        with HEGNNClient(url, timeout=0.5, retries=3) as c:
            with pytest.raises(HEGNNConnectionError, match="no answer .* 0.5 s"):
                c.forces("tiny-ff", molecule("H2O"))
        assert time.perf_counter() - start < 2.0


def mock_client(handler, **kwargs) -> tuple[HEGNNClient, list[httpx.Request]]:
    """A client whose HTTP goes to ``handler``; returns it and the requests seen."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request, len(seen))

    transport = httpx.MockTransport(record)
    return HEGNNClient("http://test", backoff=0.0, transport=transport, **kwargs), seen


def test_retries_connection_errors_with_backoff() -> None:
    def flaky(request: httpx.Request, n: int) -> httpx.Response:
        if n < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"models": []})

    c, seen = mock_client(flaky, retries=3)
    assert c.models() == []
    assert len(seen) == 3


def test_http_errors_are_not_retried() -> None:
    # Retried statuses: tests/service/test_client_retries.py
    def failing(request: httpx.Request, n: int) -> httpx.Response:
        return httpx.Response(500, json={"detail": "internal error (request id 1)"})

    c, seen = mock_client(failing, retries=3)
    with pytest.raises(HEGNNServiceError, match="internal error") as err:
        c.models()
    assert err.value.status_code == 500 and len(seen) == 1


def test_api_key_is_sent_as_bearer() -> None:
    def check(request: httpx.Request, n: int) -> httpx.Response:
        if request.headers.get("authorization") != "Bearer s3cret":
            return httpx.Response(401, json={"detail": "missing or invalid API key"})
        return httpx.Response(200, json={"models": [{"name": "m"}]})

    assert mock_client(check, api_key="s3cret")[0].models() == [{"name": "m"}]
    with pytest.raises(HEGNNServiceError, match="API key") as err:
        mock_client(check)[0].models()
    assert err.value.status_code == 401


def test_validation_detail_becomes_one_line() -> None:
    detail = [
        {"loc": ["body", "positions"], "msg": "expected shape (3, 3)"},
        {"loc": ["body", "steps"], "msg": "too many"},
    ]

    def reject(request: httpx.Request, n: int) -> httpx.Response:
        assert json.loads(request.content)["steps"] == 10**9
        return httpx.Response(422, json={"detail": detail})

    c, _ = mock_client(reject)
    with pytest.raises(HEGNNServiceError) as err:
        c.trajectory("m", nbody_state(3), steps=10**9)
    assert err.value.detail == detail
    assert "positions: expected shape (3, 3); steps: too many" in err.value.message


def test_dynamics_trajectory_matches_in_process(
    client: HEGNNClient, checkpoint_dir: Path
) -> None:
    state = nbody_state()
    out = client.trajectory("tiny-nbody", state, steps=3)
    assert out.positions.shape == (3, 5, 3) and out.times.tolist() == [1.0, 2.0, 3.0]
    model, card = load(checkpoint_dir / "tiny-nbody")
    data = make_graph_data(
        card.model,
        state["positions"],
        velocities=state["velocities"],
        charges=state["charges"],
        dtype=next(model.parameters()).dtype,
    )
    expected = model.rollout(data, 3).to(torch.float64).numpy()
    np.testing.assert_allclose(out.positions, expected, rtol=1e-6, atol=1e-9)


def test_server_side_md_equals_local_velocity_verlet(
    client: HEGNNClient, checkpoint_dir: Path
) -> None:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    rng = np.random.default_rng(3)
    atoms.set_velocities(rng.normal(scale=0.01, size=(9, 3)) / units.fs)  # 0.01 Å/fs
    out = client.md("tiny-ff", atoms, steps=6, every=3, timestep_fs=0.5)
    assert isinstance(out, MDTrajectory) and out.forces is None
    assert out.steps.tolist() == [0, 3, 6]
    np.testing.assert_allclose(out.times, [0.0, 1.5, 3.0])
    local = atoms.copy()
    local.calc = HEGNNCalculator(checkpoint_dir / "tiny-ff", device="cpu")
    np.testing.assert_allclose(out.velocities[0], atoms.get_velocities() * units.fs)
    VelocityVerlet(local, 0.5 * units.fs).run(6)
    np.testing.assert_allclose(out.positions[-1], local.positions, atol=1e-9)
    np.testing.assert_allclose(out.energies[-1], local.get_potential_energy())


def test_md_of_several_structures_with_forces(client: HEGNNClient) -> None:
    water, ethanol = molecule("H2O"), molecule("CH3CH2OH")
    runs = client.md(
        "tiny-ff",
        [water, ethanol],
        steps=4,
        every=2,
        temperature=300.0,
        seed=1,
        return_forces=True,
    )
    assert [r.positions.shape for r in runs] == [(3, 3, 3), (3, 9, 3)]
    assert runs[1].forces.shape == (3, 9, 3)
    assert runs[0].raw["units"]["velocities"] == "Å/fs"
    alone = client.md(
        "tiny-ff",
        ethanol,
        steps=4,
        every=2,
        temperature=300.0,
        seed=1,
        return_forces=True,
    )
    np.testing.assert_array_equal(alone.positions, runs[1].positions)


def test_trajectory_of_several_states(client: HEGNNClient) -> None:
    states = [nbody_state(4, seed=1), nbody_state(6, seed=2)]
    runs = client.trajectory("tiny-nbody", states, steps=2)
    assert all(isinstance(r, Trajectory) for r in runs)
    assert [r.positions.shape for r in runs] == [(2, 4, 3), (2, 6, 3)]


def test_the_wrong_endpoint_names_the_right_one(client: HEGNNClient) -> None:
    with pytest.raises(HEGNNServiceError, match="/v1/models/tiny-ff/md") as err:
        client.trajectory("tiny-ff", {**nbody_state(3), "numbers": [8, 1, 1]}, 2)
    assert err.value.status_code == 422
    with pytest.raises(HEGNNServiceError, match="/v1/models/tiny-nbody/trajectory"):
        client.md("tiny-nbody", molecule("H2O"), steps=2)
