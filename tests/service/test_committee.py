"""A committee checkpoint served as one model: its mean and spread in every /forces
answer (JSON and msgpack), its members and calibration in /v1/models, answers over
its threshold counted in /metrics, and the same ``calc.results`` keys from
``RemoteCalculator`` as from ``hegnn.HEGNNCalculator``.

The committee: three tiny random potentials (seeds 0, 1, 2) saved with the
project's own ``hegnn.save`` and ``hegnn.save_committee``; its threshold lies
between the spreads of two test structures (``ranked``: the one under it, then the
one over it; random weights decide which).
"""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from ase import Atoms
from ase.io import read

from hegnn import HEGNNCalculator, save, save_committee
from hegnn_serve.service.calculator import RemoteCalculator
from hegnn_serve.service.client import HEGNNClient

from .conftest import POTENTIAL, make_settings, running_server, tiny_potential
from .test_jobs import gauge

REPO = Path(__file__).resolve().parents[2]
COMMITTEE = "tiny-committee"
POTENTIAL_UNITS = {"energy": "eV", "forces": "eV/Å", "positions": "Å"}
# The server and the in-process calculator run the same float64 members on the
# same centred graph; only the summation order of batched calls may differ.
RTOL, ATOL = 1e-9, 1e-12


def ethanol(stretch: float = 1.0) -> Atoms:
    """rMD17 ethanol frame 0; ``stretch`` scales its first C-H bond."""
    atoms = read(REPO / "data/md17/rmd17_ethanol_random100.xyz", index=0)
    atoms.calc = None
    distances = atoms.get_all_distances()[:, :6]  # H are atoms 0-5 in this file
    carbon, hydrogen = np.unravel_index(
        np.argmin(np.where(atoms.numbers[:, None] == 6, distances, np.inf)),
        distances.shape,
    )
    bond = atoms.positions[hydrogen] - atoms.positions[carbon]
    atoms.positions[hydrogen] = atoms.positions[carbon] + stretch * bond
    return atoms


STRUCTURES = {"equilibrium": ethanol(), "stretched": ethanol(1.6)}


@pytest.fixture(scope="module")
def committee_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("committee")
    members = []
    for seed in range(3):
        folder = root / "members" / f"tiny-ff-s{seed}"
        save(tiny_potential(seed), folder, {"units": POTENTIAL_UNITS})
        members.append(folder)
    served = root / "served"
    save(tiny_potential(0), served / POTENTIAL, {"units": POTENTIAL_UNITS})
    save_committee(members, served / COMMITTEE, {"description": "test committee"})
    # The threshold: halfway between the two structures' max_force_std.
    spread = [
        in_process(served / COMMITTEE, a)["max_force_std"] for a in STRUCTURES.values()
    ]
    assert min(spread) < max(spread), "the test structures need different spreads"
    card_path = served / COMMITTEE / "card.json"
    card = json.loads(card_path.read_text())
    threshold = (min(spread) + max(spread)) / 2
    card["committee"]["uncertainty"] = {"threshold_max_force_std": threshold}
    card_path.write_text(json.dumps(card))
    return served


@pytest.fixture(scope="module")
def ranked(committee_dir: Path) -> tuple[Atoms, Atoms]:
    """The structure under the committee's threshold, then the one over it."""
    under, over = sorted(
        STRUCTURES.values(),
        key=lambda a: in_process(committee_dir / COMMITTEE, a)["max_force_std"],
    )
    return under, over


def in_process(checkpoint: Path, atoms: Atoms) -> dict:
    atoms = atoms.copy()
    atoms.calc = HEGNNCalculator(checkpoint, device="cpu")
    atoms.get_forces()
    return atoms.calc.results


@pytest.fixture(scope="module")
def url(committee_dir: Path) -> Iterator[str]:
    with running_server(make_settings(committee_dir)) as base:
        yield base


def assert_same_answer(found, expected: dict) -> None:
    """A client ForcesResult (or calc.results) equals the in-process results."""
    get = found.get if isinstance(found, dict) else lambda key: getattr(found, key)
    for key in ("energy", "energy_std", "max_force_std"):
        assert get(key) == pytest.approx(expected[key], rel=RTOL, abs=ATOL), key
    for key in ("forces", "forces_std"):
        np.testing.assert_allclose(get(key), expected[key], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
def test_forces_answers_carry_the_committee_spread(
    url: str, committee_dir: Path, binary: bool
) -> None:
    expected = {
        k: in_process(committee_dir / COMMITTEE, a) for k, a in STRUCTURES.items()
    }
    with HEGNNClient(url, binary=binary) as client:
        one = client.forces(COMMITTEE, STRUCTURES["stretched"])
        many = client.forces(COMMITTEE, list(STRUCTURES.values()))
        plain = client.forces(POTENTIAL, STRUCTURES["stretched"])
    assert_same_answer(one, expected["stretched"])
    for found, name in zip(many, STRUCTURES, strict=True):
        assert_same_answer(found, expected[name])
    assert one.forces_std.shape == (len(STRUCTURES["stretched"]),)
    assert one.max_force_std == pytest.approx(one.forces_std.max(), rel=1e-15)
    assert plain.forces_std is None and plain.max_force_std is None


def test_json_answer_states_the_spread_and_its_units(url: str) -> None:
    atoms = STRUCTURES["equilibrium"]
    body = {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist()}
    answer = httpx.post(f"{url}/v1/models/{COMMITTEE}/forces", json=body).json()
    assert answer["units"] == {
        **POTENTIAL_UNITS,
        "energy_std": "eV",
        "forces_std": "eV/Å",
        "max_force_std": "eV/Å",
    }
    assert len(answer["forces_std"]) == len(atoms) and answer["energy_std"] >= 0
    plain = httpx.post(f"{url}/v1/models/{POTENTIAL}/forces", json=body).json()
    assert not {"energy_std", "forces_std", "max_force_std"} & plain.keys()


def test_models_state_members_seeds_and_calibration(url: str) -> None:
    listed = {m["name"]: m for m in httpx.get(f"{url}/v1/models").json()["models"]}
    committee = listed[COMMITTEE]["committee"]
    assert [m["seed"] for m in committee["members"]] == [None, None, None]
    assert [m["folder"] for m in committee["members"]] == [
        f"tiny-ff-s{seed}" for seed in range(3)
    ]
    assert committee["uncertainty"]["threshold_max_force_std"] > 0
    assert listed[POTENTIAL]["committee"] is None
    card = httpx.get(f"{url}/v1/models/{COMMITTEE}").json()
    assert card["committee"] == committee


def test_metrics_count_answers_over_the_threshold(
    url: str, ranked: tuple[Atoms, Atoms]
) -> None:
    under, over = ranked
    name = "hegnn_uncertain_answers_total"
    before = gauge(url, name, COMMITTEE)
    with HEGNNClient(url) as client:
        client.forces(COMMITTEE, [under, over])  # one over
        client.forces(COMMITTEE, under)
        client.forces(COMMITTEE, over)  # one over
        client.forces(POTENTIAL, over)  # no committee, never counted
    assert gauge(url, name, COMMITTEE) == before + 2
    assert gauge(url, name, POTENTIAL) == 0


def test_remote_calculator_results_match_the_in_process_committee(
    url: str, committee_dir: Path
) -> None:
    atoms = STRUCTURES["stretched"].copy()
    expected = in_process(committee_dir / COMMITTEE, atoms)
    atoms.calc = RemoteCalculator(url, COMMITTEE)
    assert atoms.get_potential_energy() == pytest.approx(expected["energy"], rel=RTOL)
    assert atoms.calc.results.keys() == expected.keys()
    assert_same_answer(atoms.calc.results, expected)
    local = HEGNNCalculator(committee_dir / COMMITTEE, device="cpu")
    assert atoms.calc.threshold == local.threshold > 0
    assert "max_force_std" in atoms.calc.implemented_properties
    atoms.calc.close()


@pytest.mark.parametrize("on_uncertain", ["stop", "warn"])
def test_md_example_acts_when_the_spread_passes_the_threshold(
    url: str, ranked: tuple[Atoms, Atoms], tmp_path: Path, on_uncertain: str
) -> None:
    """Langevin from the structure over the threshold: its first force call
    passes it, so ``stop`` ends the run there (frame 0 kept) and ``warn`` warns
    and runs to the end."""
    start = tmp_path / "over.xyz"
    ranked[1].write(start)
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples/md_remote.py"),
            *("--url", url, "--model", COMMITTEE, "--molecule", str(start)),
            *("--steps", "20", "--langevin-steps", "20", "--every", "5"),
            *("--on-uncertain", on_uncertain, "--out", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    frames = read(tmp_path / "md_remote.extxyz", index=":")
    if on_uncertain == "stop":
        assert "stopped: max_force_std" in done.stderr
        assert len(frames) == 1
    else:
        assert "outside its training data (further steps" in done.stderr
        assert len(frames) == 10
