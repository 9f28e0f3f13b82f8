"""`hegnn ipi`, the i-PI driver, against ASE's SocketIOCalculator as the i-PI server
on a unix socket: it answers what RemoteCalculator answers, an NVE run through the
socket is the in-process run, and it exits cleanly when the server ends the run. The
driver runs as a real process (`python -m hegnn_cli ipi`)."""

import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.socketio import SocketIOCalculator
from ase.io import read, write
from ase.md.verlet import VelocityVerlet
from typer.testing import CliRunner, Result

from hegnn import HEGNNCalculator
from hegnn_cli import app
from hegnn_serve.service.calculator import RemoteCalculator
from tests.service.conftest import NBODY, POTENTIAL, make_settings, running_server

ROOT = Path(__file__).resolve().parents[2]


def ethanol() -> Atoms:
    """C2H6O: only species the test model knows (H, C, O)."""
    return molecule("CH3CH2OH")


def socket_name() -> str:
    """A fresh i-PI unix socket name (the socket is /tmp/ipi_NAME)."""
    return f"hegnn-test-{uuid.uuid4().hex[:12]}"


@contextmanager
def driver(*options: str, structure: Path) -> Iterator[subprocess.Popen]:
    """`hegnn ipi --model tiny-ff --structure STRUCTURE OPTIONS` as a process;
    killed if still running when the block ends."""
    argv = [sys.executable, "-m", "hegnn_cli", "ipi"]
    if "--model" not in options:
        argv += ["--model", POTENTIAL]
    argv += ["--structure", str(structure), "--log-level", "warning", *options]
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def assert_exits_cleanly(proc: subprocess.Popen) -> None:
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr


def free_port() -> int:
    """A local port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def structure(tmp_path: Path) -> Path:
    path = tmp_path / "ethanol.xyz"
    write(path, ethanol())
    return path


@pytest.mark.parametrize("backend", ["url", "checkpoint"])
def test_driver_answers_what_remote_calculator_answers(
    backend: str, server_url: str, checkpoint_dir: Path, structure: Path
) -> None:
    """Energies and forces through the socket equal RemoteCalculator's (1e-6 eV/Å);
    the driver exits with 0 when the server closes the socket (SocketIOCalculator
    sends no EXIT)."""
    source = server_url if backend == "url" else str(checkpoint_dir)
    name = socket_name()
    remote = RemoteCalculator(server_url, POTENTIAL)
    atoms = ethanol()
    with SocketIOCalculator(unixsocket=name, timeout=60) as calc:
        with driver(f"--{backend}", source, "--unix", name, structure=structure) as p:
            for seed in range(4):
                atoms.rattle(0.05, seed=seed)
                atoms.calc = calc
                energy, forces = atoms.get_potential_energy(), atoms.get_forces()
                atoms.calc = remote
                assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
                np.testing.assert_allclose(
                    forces, atoms.get_forces(), rtol=0, atol=1e-6
                )
            calc.close()
            assert_exits_cleanly(p)
    remote.close()


SHIPPED = "md17-ethanol-ff-hegnn"  # float32, as every shipped force field
MASS_H = 1.008  # amu, the lightest atom: the largest displacement per force error


@pytest.fixture
def shipped_ethanol(tmp_path: Path) -> Path:
    """A folder of checkpoints holding the shipped ethanol force field alone."""
    source = ROOT / "checkpoints" / SHIPPED
    if not (source / "card.json").is_file():
        pytest.skip(f"{source} is not in this checkout")
    shutil.copytree(source, tmp_path / "checkpoints" / SHIPPED)
    return tmp_path / "checkpoints"


def nve(atoms: Atoms, calc, steps: int) -> dict[str, np.ndarray]:
    """VelocityVerlet, 0.5 fs, from ``atoms`` with 300 K velocities (seed 0): per step
    the positions (Å), velocities (Å/fs), forces (eV/Å) and potential energy (eV)."""
    atoms = atoms.copy()
    rng = np.random.default_rng(0)
    sigma = np.sqrt(units.kB * 300 / atoms.get_masses())[:, None]  # per component
    atoms.set_momenta(
        atoms.get_masses()[:, None] * sigma * rng.normal(size=(len(atoms), 3))
    )
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    frames = {"positions": [], "velocities": [], "forces": [], "energy": []}

    def record() -> None:
        frames["positions"].append(atoms.positions.copy())
        frames["velocities"].append(atoms.get_velocities() * units.fs)
        frames["forces"].append(atoms.get_forces())
        frames["energy"].append(atoms.get_potential_energy())

    dyn.attach(record, interval=1)
    dyn.run(steps)
    return {key: np.array(value) for key, value in frames.items()}


def test_nve_through_the_socket_is_the_in_process_run(shipped_ethanol: Path) -> None:
    """200 NVE steps of ethanol with the shipped float32 force field, driven through
    the socket by the driver over HTTP, follow the same steps with
    hegnn.HEGNNCalculator in this process."""
    steps, dt = 200, 0.5  # fs
    structure = ROOT / "training" / "geometries" / "ethanol.xyz"
    start = read(structure)
    local = nve(start, HEGNNCalculator(shipped_ethanol / SHIPPED, device="cpu"), steps)
    with running_server(make_settings(shipped_ethanol)) as url:
        name = socket_name()
        with SocketIOCalculator(unixsocket=name, timeout=60) as calc:
            options = ("--url", url, "--unix", name, "--model", SHIPPED)
            with driver(*options, structure=structure) as proc:
                remote = nve(start, calc, steps)
                calc.close()
                assert_exits_cleanly(proc)
    # The tolerance, from float32 arithmetic. Both runs evaluate the same float32
    # weights on the same float64 positions; only rounding may differ: the socket
    # converts Å -> Bohr and eV/Å -> Hartree/Bohr and back in float64 (~1e-16
    # relative), and the server's call may add float32 terms in another order than
    # the in-process one (batching, threads). That is a few float32 ulps of each
    # force: we allow δF = 4 eps32 |F|max (eps32 = 2**-23 ≈ 1.2e-7). Held for the
    # whole run t = 100 fs (too short for chaos to amplify it much), a force error
    # moves an atom of mass m by at most δF t² / (2m) (≈ 8e-5 Å) and changes its
    # velocity by δF t / m; hydrogen is the worst case. Energies: 4 float32 ulps of
    # |E| (≈ 2e-3 eV at 4200 eV) plus what the position error can change, |F|max per
    # Å for each atom. Measured with one torch thread on both sides: 3e-15 Å (the
    # float32 results agree bit for bit; only the float64 conversions differ); with
    # two threads in process, 1e-6 Å and 2e-6 eV, the summation-order effect allowed
    # for. A unit, atom-order or missed-step error is orders of magnitude above.
    eps32 = float(np.finfo(np.float32).eps)
    t = steps * dt  # fs
    f_max = np.abs(local["forces"]).max()  # eV/Å
    acceleration = 4 * eps32 * f_max / MASS_H * units.fs**2  # Å/fs²
    position_tol = acceleration * t**2 / 2  # Å
    velocity_tol = acceleration * t  # Å/fs
    energy_tol = 4 * eps32 * np.abs(local["energy"]).max()
    energy_tol += len(start) * f_max * position_tol  # eV
    for key, tol in [
        ("positions", position_tol),
        ("velocities", velocity_tol),
        ("energy", energy_tol),
    ]:
        np.testing.assert_allclose(
            remote[key], local[key], rtol=0, atol=tol, err_msg=key
        )


@pytest.mark.parametrize("ending", ["exit", "close"])
def test_driver_exits_cleanly_when_the_server_ends(
    ending: str, server_url: str, structure: Path
) -> None:
    """i-PI ends a run with EXIT; SocketIOCalculator.close() just closes the socket.
    Either way the driver exits with 0 and no traceback. (The EXIT case goes over
    an inet socket, --address.)"""
    if ending == "exit":
        port = free_port()
        server = {"port": port}
        where = ("--address", f"127.0.0.1:{port}")
    else:
        server = {"unixsocket": socket_name()}
        where = ("--unix", server["unixsocket"])
    atoms = ethanol()
    with SocketIOCalculator(**server, timeout=60) as calc:
        with driver("--url", server_url, *where, structure=structure) as p:
            atoms.calc = calc
            atoms.get_forces()
            if ending == "exit":
                calc.server.protocol.end()
            calc.close()
            assert_exits_cleanly(p)


def test_a_structure_of_another_size_ends_the_driver(
    server_url: str, tmp_path: Path
) -> None:
    write(tmp_path / "water.xyz", molecule("H2O"))
    name = socket_name()
    atoms = ethanol()
    with SocketIOCalculator(unixsocket=name, timeout=60) as calc:
        with driver(
            "--url", server_url, "--unix", name, structure=tmp_path / "water.xyz"
        ) as p:
            atoms.calc = calc
            with pytest.raises(OSError):  # the driver hung up
                atoms.get_forces()
            _, stderr = p.communicate(timeout=30)
    assert p.returncode == 1, stderr
    assert "the server sent 9 atoms; --structure has 3" in stderr
    assert "Traceback" not in stderr


def invoke(*argv: str) -> Result:
    return CliRunner().invoke(app, ["ipi", *argv], prog_name="hegnn")


@pytest.mark.parametrize("backend", ["url", "checkpoint"])
def test_a_dynamics_model_is_refused(
    backend: str, server_url: str, checkpoint_dir: Path, structure: Path
) -> None:
    source = server_url if backend == "url" else str(checkpoint_dir)
    result = invoke(
        "--model", NBODY, f"--{backend}", source, "--unix", socket_name(),
        "--structure", str(structure),
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "potential" in result.output and NBODY in result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--url", "http://127.0.0.1:{port}", "--unix", "x"), "cannot reach"),
        (("--url", "{url}", "--unix", "absent", "--connect-timeout", "0"), "/tmp/ipi_"),
        (("--url", "{url}", "--address", "127.0.0.1:{port}", "--connect-timeout", "0"),
         "no i-PI server listens"),
        (("--url", "{url}", "--checkpoint", "{checkpoints}", "--unix", "x"),
         "one of --url and --checkpoint"),
        (("--url", "{url}", "--address", "localhost"), "HOST:PORT"),
    ],
)  # fmt: skip
def test_errors_name_the_problem(
    options: tuple[str, ...],
    message: str,
    server_url: str,
    checkpoint_dir: Path,
    structure: Path,
) -> None:
    """An unreachable hegnn-serve or i-PI server and bad options end with a one-line
    error (exit 1 or 2), not a traceback."""
    values = {"url": server_url, "port": free_port(), "checkpoints": checkpoint_dir}
    argv = [option.format(**values) for option in options]
    result = invoke("--model", POTENTIAL, "--structure", str(structure), *argv)
    assert result.exit_code in (1, 2), result.output
    assert message in result.output
    assert isinstance(result.exception, SystemExit)


def test_elements_the_model_does_not_know_are_refused(
    server_url: str, tmp_path: Path
) -> None:
    write(tmp_path / "ammonia.xyz", molecule("NH3"))
    result = invoke(
        "--model", POTENTIAL, "--url", server_url, "--unix", socket_name(),
        "--structure", str(tmp_path / "ammonia.xyz"),
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "--structure has atomic numbers [7]" in result.output


@pytest.mark.slow
def test_ipi_runs_nvt_with_the_driver(tmp_path: Path) -> None:
    """i-PI (the `ipi` extra) runs the README's Langevin NVT input
    (examples/ipi/nvt.xml, 20 steps here) on the shipped ethanol force field through
    `hegnn ipi --checkpoint`; both end with 0 and i-PI wrote every step."""
    ipi = shutil.which("i-pi", path=str(Path(sys.executable).parent))
    if ipi is None:
        pytest.skip("i-PI is not installed (pip install 'hegnn-serve[ipi]')")
    if not (ROOT / "checkpoints" / SHIPPED / "card.json").is_file():
        pytest.skip(f"checkpoints/{SHIPPED} is not in this checkout")
    name = socket_name()
    xml = (ROOT / "examples" / "ipi" / "nvt.xml").read_text()
    xml = xml.replace("<address>hegnn</address>", f"<address>{name}</address>")
    xml = xml.replace("<total_steps>100</total_steps>", "<total_steps>20</total_steps>")
    (tmp_path / "nvt.xml").write_text(xml)
    shutil.copy(ROOT / "training" / "geometries" / "ethanol.xyz", tmp_path)
    server = subprocess.Popen(
        [sys.executable, ipi, "nvt.xml"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        options = ("--checkpoint", str(ROOT / "checkpoints"), "--model", SHIPPED)
        with driver(*options, "--unix", name, structure=tmp_path / "ethanol.xyz") as p:
            assert_exits_cleanly(p)
        log, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, log
    steps, _, conserved, temperature, _ = np.loadtxt(
        tmp_path / "ethanol-nvt.out", unpack=True
    )
    np.testing.assert_array_equal(steps, np.arange(0, 21, 10))
    assert np.isfinite(conserved).all() and (temperature > 0).all()
