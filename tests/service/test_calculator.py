"""RemoteCalculator follows the ASE calculator contract and equals HEGNNCalculator.

Fixtures ``server_url`` and ``checkpoint_dir`` come from tests/service/conftest.py.
"""

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet

from hegnn import HEGNNCalculator
from hegnn_serve.service.calculator import RemoteCalculator
from hegnn_serve.service.client import HEGNNClient
from hegnn_serve.service.codec import as_json_body, unpack, wants_msgpack

from .conftest import POTENTIAL

N_STEPS = 200
TIMESTEP_FS = 0.5
# Velocity Verlet with smooth conservative forces conserves a shadow Hamiltonian: the
# total energy oscillates by O(dt^2) with no secular trend (tiny-ff, 0.5 fs: ~5e-5
# meV/atom peak to peak, fitted slope ~2e-4 meV/atom/ps). A real drift comes from
# non-conservative or inconsistent forces (stale positions, wrong units, a dropped
# cell, a cutoff discontinuity). 0.1 meV/atom/ps heats a molecule by < 0.4 K/ps
# (dE = 3 k_B dT per atom), negligible for MD, and is ~500x what Verlet leaves here.
MAX_DRIFT_MEV_PER_ATOM_PS = 0.1


class CountingClient(HEGNNClient):
    """A client that keeps the body of every request it sends."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.sent: list[httpx.Request] = []
        self.http.event_hooks["request"].append(self.sent.append)

    def bodies(self, path_end: str) -> list[dict]:
        """The bodies sent (msgpack or JSON) as their JSON form."""
        return [
            as_json_body(unpack(r.content))
            if wants_msgpack(r.headers.get("content-type"))
            else json.loads(r.content)
            for r in self.sent
            if r.url.path.endswith(path_end)
        ]


@pytest.fixture
def client(server_url: str):
    with CountingClient(server_url) as c:
        yield c


@pytest.fixture
def calc(client: CountingClient) -> RemoteCalculator:
    return RemoteCalculator(model="tiny-ff", client=client)


@pytest.fixture(scope="module")
def local(checkpoint_dir: Path) -> HEGNNCalculator:
    return HEGNNCalculator(checkpoint_dir / "tiny-ff", device="cpu")


def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    return atoms


def test_results_have_ase_types_and_units(calc: RemoteCalculator) -> None:
    atoms = ethanol()
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    assert isinstance(energy, float)
    assert forces.shape == (len(atoms), 3) and forces.dtype == np.float64
    assert atoms.get_potential_energy(force_consistent=True) == energy
    assert calc.card["units"].get("energy", "eV") == "eV"


def test_equals_in_process_calculator(
    calc: RemoteCalculator, local: HEGNNCalculator
) -> None:
    atoms = ethanol()
    remote_e, remote_f = calc.get_potential_energy(atoms), calc.get_forces(atoms)
    local_e, local_f = local.get_potential_energy(atoms), local.get_forces(atoms)
    np.testing.assert_allclose(remote_e, local_e, rtol=1e-6)
    np.testing.assert_allclose(
        remote_f, local_f, rtol=1e-6, atol=1e-6 * np.abs(local_f).max()
    )


def test_caches_until_atoms_move(calc: RemoteCalculator, client: CountingClient):
    atoms = ethanol()
    atoms.calc = calc
    forces = atoms.get_forces()
    atoms.get_potential_energy()
    atoms.get_forces()
    assert len(client.bodies("/forces")) == 1
    atoms.positions[0, 0] += 0.05
    moved = atoms.get_forces()
    assert len(client.bodies("/forces")) == 2
    assert not np.allclose(moved, forces)
    sent = client.bodies("/forces")[-1]
    np.testing.assert_array_equal(sent["positions"], atoms.positions)
    assert wants_msgpack(client.sent[-1].headers["content-type"])  # the default


def test_stress_is_not_implemented(calc: RemoteCalculator) -> None:
    atoms = ethanol()
    atoms.calc = calc
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()
    with pytest.raises(PropertyNotImplementedError):
        calc.calculate(atoms, ["stress"])


def test_rejects_dynamics_model(server_url: str) -> None:
    with pytest.raises(ValueError, match="tiny-nbody.*dynamics.*potential model"):
        RemoteCalculator(server_url, "tiny-nbody")


def test_rejects_unsupported_species_before_sending(
    calc: RemoteCalculator, client: CountingClient
) -> None:
    atoms = molecule("CH3CONH2")  # contains N (Z = 7)
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"supports atomic numbers \[1, 6, 8\].*\[7\]"):
        atoms.get_forces()
    assert client.bodies("/forces") == []


def test_periodic_atoms_send_cell_and_pbc(
    calc: RemoteCalculator, client: CountingClient, local: HEGNNCalculator
) -> None:
    atoms = ethanol()
    atoms.set_cell([6.0, 6.5, 7.0])
    atoms.pbc = True
    np.testing.assert_allclose(
        calc.get_forces(atoms), local.get_forces(atoms), rtol=1e-6, atol=1e-9
    )
    sent = client.bodies("/forces")[-1]
    assert sent["pbc"] == [True, True, True]
    np.testing.assert_array_equal(sent["cell"], atoms.cell.array)
    calc.get_forces(ethanol())  # molecule: no cell sent
    assert "cell" not in client.bodies("/forces")[-1]


def nve(atoms: Atoms, calc, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions [steps + 1, n, 3] (Å) and total energies [steps + 1] (eV)."""
    atoms = atoms.copy()
    atoms.calc = calc
    positions, energies = [], []

    def record() -> None:
        positions.append(atoms.get_positions())
        energies.append(atoms.get_total_energy())

    dyn = VelocityVerlet(atoms, TIMESTEP_FS * units.fs)
    dyn.attach(record)
    dyn.run(steps)
    return np.asarray(positions), np.asarray(energies)


def test_nve_md_equals_in_process_and_conserves_energy(
    calc: RemoteCalculator, local: HEGNNCalculator
) -> None:
    atoms = ethanol()
    sigma = np.sqrt(atoms.get_masses() * units.kB * 300.0)  # Maxwell-Boltzmann, 300 K
    atoms.set_momenta(
        np.random.default_rng(0).normal(size=(len(atoms), 3)) * sigma[:, None]
    )
    Stationary(atoms)
    remote_x, remote_e = nve(atoms, calc, N_STEPS)
    local_x, local_e = nve(atoms, local, N_STEPS)
    np.testing.assert_allclose(remote_x, local_x, atol=1e-6)
    np.testing.assert_allclose(remote_e, local_e, atol=1e-6 * len(atoms))
    time_ps = np.arange(N_STEPS + 1) * TIMESTEP_FS * 1e-3
    slope = np.polyfit(time_ps, remote_e, 1)[0]  # eV/ps
    drift = abs(slope) * 1e3 / len(atoms)
    assert drift < MAX_DRIFT_MEV_PER_ATOM_PS


def test_todict_pickle_and_deepcopy(server_url: str) -> None:
    import copy
    import pickle

    calc = RemoteCalculator(server_url, POTENTIAL, api_key="secret")
    assert calc.todict() == {"url": server_url, "model": POTENTIAL, "timeout": 30.0}
    atoms = molecule("H2O")
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    for clone in (pickle.loads(pickle.dumps(calc)), copy.deepcopy(calc)):
        assert clone._client is None  # reconnects lazily
        other = atoms.copy()
        other.calc = clone
        assert other.get_potential_energy() == energy
        clone.close()
    copied = copy.deepcopy(atoms)
    assert copied.get_potential_energy() == energy
    calc.close()
