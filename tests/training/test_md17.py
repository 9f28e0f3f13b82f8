"""MD17 loaders on the real excerpts (units); md17-traj and md17-force datasets."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from typer.testing import CliRunner

from hegnn import InputError, StructureInput, input_rule, keys, make_graph_data
from hegnn.config import ModelConfig
from hegnn_serve.training.config import MD17ForceData
from hegnn_serve.training.data.cli import data_app
from hegnn_serve.training.data.md17 import load_frames, split_frames, write_canonical
from hegnn_serve.training.data.tasks import (
    fit_reference_energies,
    gmn_frames_needed,
    gmn_split,
    md17_force_dataset,
    md17_trajectory_dataset,
)
from hegnn_serve.training.prepare import md17_force_frames

from .graphs import assert_served_graph_plus

DATA = Path(__file__).resolve().parents[2] / "data" / "md17"
KCAL = 0.0433641  # eV per kcal/mol (SOURCE.md)
TRAJ = ModelConfig(task="dynamics", features="md17-traj", lmax=1, hidden_dim=8)


def force_field(r_max: float) -> ModelConfig:
    return ModelConfig(
        task="potential", features="species", species=(1, 6, 8), r_max=r_max
    )


@pytest.fixture(scope="module")
def ethanol():
    return load_frames(DATA / "md17_ethanol_first2000.npz")


def test_sgdml_npz_in_ev(ethanol) -> None:
    assert ethanol.positions.shape == (2000, 9, 3)
    assert ethanol.numbers.tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]
    assert ethanol.energies[0] == pytest.approx(-97208.40600498248 * KCAL, rel=1e-6)
    raw = np.load(DATA / "md17_ethanol_first2000.npz")
    np.testing.assert_allclose(ethanol.forces, raw["F"] * KCAL, rtol=1e-5)
    assert ethanol.source["format"] == "sgdml"
    assert ethanol.source["energy_unit_in_file"] == "kcal/mol"


@pytest.mark.parametrize(
    "name, unit, mean_ev, n_frames",
    [
        ("md17_ethanol_random2000.xyz", "kcal/mol", -97195.7 * KCAL, 2000),
        ("rmd17_ethanol_random100.xyz", "kcal/mol", -97076.1 * KCAL, 100),
        ("rmd17_ethanol_random800_eV.xyz", "eV", -4209.62, 800),
        ("rmd17_aspirin_random800_meV.xyz", "meV", -17617.738, 800),
    ],
)
def test_extxyz_with_unit(name: str, unit: str, mean_ev: float, n_frames: int) -> None:
    frames = load_frames(DATA / name, unit)
    assert len(frames) == n_frames
    assert frames.energies.mean() == pytest.approx(mean_ev, abs=0.01)
    # forces of all these sets are O(1) eV/Å: a wrong unit is off by 23x or 1000x
    assert 0.5 < np.sqrt((frames.forces**2).mean()) < 2.0


def test_extxyz_without_unit_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unit: the energy unit .* --unit"):
        load_frames(DATA / "rmd17_ethanol_random100.xyz")
    with pytest.raises(ValueError, match="unknown energy unit"):
        load_frames(DATA / "rmd17_ethanol_random100.xyz", "kcal")


def test_ccsdt_npz_and_rmd17_npz(tmp_path, ethanol) -> None:
    ccsdt = load_frames(DATA / "md17_ethanol_ccsdt_train1000.npz")
    assert len(ccsdt) == 1000 and ccsdt.energies.mean() == pytest.approx(-4210.0, abs=1)
    raw = np.load(DATA / "md17_ethanol_first2000.npz")
    rmd17 = tmp_path / "rmd17.npz"
    np.savez(
        rmd17,
        nuclear_charges=raw["z"],
        coords=raw["R"],
        energies=raw["E"][:, 0],
        forces=raw["F"],
    )
    frames = load_frames(rmd17)
    assert frames.source["format"] == "rmd17"
    np.testing.assert_allclose(frames.energies, ethanol.energies)
    np.testing.assert_allclose(frames.forces, ethanol.forces)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not an MD17 file"):
        load_frames(tmp_path / "other.npz")


def test_canonical_round_trip_converts_once(tmp_path) -> None:
    frames = load_frames(DATA / "rmd17_ethanol_random100.xyz", "kcal/mol")
    meta = write_canonical(frames, tmp_path / "eth.npz")
    assert meta["units"]["energy"] == "eV" and len(meta["sha256"]) == 64
    back = load_frames(tmp_path / "eth.npz")
    np.testing.assert_array_equal(back.energies, frames.energies)
    np.testing.assert_array_equal(back.forces, frames.forces)
    np.testing.assert_array_equal(back.numbers, frames.numbers)
    assert back.source["format"] == "hegnn-md17"
    with pytest.raises(ValueError, match="states energies in eV"):
        load_frames(tmp_path / "eth.npz", "kcal/mol")


def test_cli_md17_import(tmp_path) -> None:
    xyz, out = DATA / "rmd17_ethanol_random100.xyz", tmp_path / "eth.npz"
    result = CliRunner().invoke(data_app, ["md17", str(xyz), "--out", str(out)])
    assert result.exit_code == 2 and "--unit" in result.output and not out.exists()
    args = ["md17", str(xyz), "--unit", "kcal/mol", "--out", str(out)]
    assert CliRunner().invoke(data_app, args).exit_code == 0
    frames = load_frames(out)
    assert frames.energies.mean() == pytest.approx(-97076.1 * KCAL, abs=0.01)
    assert frames.source["metadata"]["source"]["file"] == str(xyz)


def test_gmn_frames_needed() -> None:
    n = gmn_frames_needed((500, 2000, 2000), margin=10000)
    assert n == 60001  # x = R[:-1]; 40000 candidates; 5 % of them = 2000
    train, val, test = gmn_split(n - 1 - 20000)
    assert (len(train), len(val), len(test)) == (4000, 2000, 2000)
    assert len(set(train) | set(val) | set(test)) == 8000


def test_md17_trajectory_dataset_on_real_ethanol(ethanol) -> None:
    delta, margin, sizes = 500, 500, (40, 20, 20)
    out = md17_trajectory_dataset(
        ethanol, TRAJ, delta=delta, sizes=sizes, margin=margin
    )
    assert [len(out[s]) for s in ("train", "val", "test")] == list(sizes)
    heavy = ethanol.positions[:, :3]  # C, C, O
    offsets = gmn_split(len(ethanol) - 1 - 2 * margin, 100)
    for split, idx in zip(("train", "val", "test"), offsets, strict=True):
        t = int(idx[0]) + margin
        g = out[split][0]
        assert g.num_nodes == 3
        assert g[keys.NUMBERS].tolist() == [6, 6, 8]
        np.testing.assert_allclose(g[keys.POSITIONS].numpy(), heavy[t], atol=1e-5)
        np.testing.assert_allclose(
            g[keys.VELOCITIES].numpy(), heavy[t + 1] - heavy[t], atol=1e-5
        )
        np.testing.assert_allclose(
            g[keys.TARGET_POSITIONS].numpy(), heavy[t + delta], atol=1e-5
        )
    g0, g1 = out["train"][0], out["test"][-1]
    assert torch.equal(g0[keys.EDGE_INDEX], g1[keys.EDGE_INDEX])
    assert set(g0[keys.EDGE_HOP].tolist()) <= {1, 2}
    # ethanol heavy atoms C-C-O: two bonds and one two-hop pair, both directions
    assert g0[keys.EDGE_INDEX].shape[1] == 6
    assert sorted(g0[keys.EDGE_HOP].tolist()) == [1, 1, 1, 1, 2, 2]


def test_md17_trajectory_dataset_errors(ethanol) -> None:
    with pytest.raises(ValueError, match="split needs 41001 frames"):
        md17_trajectory_dataset(ethanol, TRAJ, delta=500, margin=500)
    with pytest.raises(ValueError, match="margin"):
        md17_trajectory_dataset(ethanol, TRAJ, delta=3000, margin=10000)
    with pytest.raises(ValueError, match="delta"):
        md17_trajectory_dataset(ethanol, TRAJ, delta=1500, margin=100, sizes=(5, 5, 5))


def test_md17_force_dataset(ethanol) -> None:
    r_max = 3.0
    config = force_field(r_max)
    out = md17_force_dataset(ethanol, config, sizes=(6, 2, 3), seed=1)
    assert [len(out[s]) for s in ("train", "val", "test")] == [6, 2, 3]
    g = out["val"][1]
    assert g[keys.ENERGY].shape == (1,) and g[keys.ENERGY].dtype == torch.float64
    assert g[keys.FORCES].shape == (9, 3) and g.num_nodes == 9
    # the graph equals the brute-force set of pairs closer than r_max
    x = g[keys.POSITIONS].double().numpy()
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    expected = {
        (j, i) for j in range(9) for i in range(9) if j != i and d[j, i] < r_max
    }
    got = set(map(tuple, g[keys.EDGE_INDEX].T.tolist()))
    assert got == expected
    assert torch.all(g[keys.EDGE_SHIFTS] == 0)
    again = md17_force_dataset(ethanol, config, sizes=(6, 2, 3), seed=1)
    assert torch.equal(again["val"][1][keys.ENERGY], g[keys.ENERGY])
    with pytest.raises(ValueError, match="sizes"):
        md17_force_dataset(ethanol, config, sizes=(2000, 1, 0))


def test_a_test_file_gives_the_test_split_minus_seen_frames(tmp_path) -> None:
    """data.test_path: its frames in neither train nor val, found in any atom order;
    the card records the file and what was dropped."""
    source = DATA / "rmd17_ethanol_random100.xyz"
    reordered = []  # the same frames, atoms listed backwards
    for atoms in read(source, ":"):
        backwards = atoms[::-1]
        backwards.calc = SinglePointCalculator(
            backwards,
            energy=atoms.get_potential_energy(),
            forces=atoms.get_forces()[::-1],
        )
        reordered.append(backwards)
    write(tmp_path / "held.xyz", reordered)
    d = MD17ForceData(
        path=source,
        unit="kcal/mol",
        sizes=(30, 10, 0),
        test_path=tmp_path / "held.xyz",
    )
    card: dict = {}
    split = md17_force_frames(d, card)
    own = split_frames(load_frames(source, "kcal/mol"), (30, 10, 60), 0)
    assert [len(split[s]) for s in ("train", "val", "test")] == [30, 10, 60]
    # the 60 kept are the file's own test split (order aside), atoms reversed
    kept = sorted(split["test"].energies)
    np.testing.assert_array_equal(kept, sorted(own["test"].energies))
    assert split["test"].numbers.tolist() == own["test"].numbers[::-1].tolist()
    assert card["test"]["frames_in_file"] == 100
    assert card["test"]["frames_seen_in_training"] == 40
    assert card["test"]["path"] == str(tmp_path / "held.xyz")

    for a in reordered:
        a.numbers[a.numbers == 8] = 7  # an N the training file lacks
    write(tmp_path / "nitrogen.xyz", reordered)
    foreign = d.model_copy(update={"test_path": tmp_path / "nitrogen.xyz"})
    with pytest.raises(ValueError, match=r"data.test_path: .* species \[7\]"):
        md17_force_frames(foreign)
    every = d.model_copy(update={"sizes": (60, 40, 0), "test_path": source})
    with pytest.raises(ValueError, match="every frame"):
        md17_force_frames(every)


def test_md17_datasets_build_graphs_by_make_graph_data(ethanol) -> None:
    """Training graphs are the service's graphs of the same structure plus targets
    (md17-traj: edges from the trajectory's frame 0, heavy atoms)."""
    for dtype in (torch.float32, torch.float64):
        traj = md17_trajectory_dataset(
            ethanol, TRAJ, delta=100, margin=100, sizes=(4, 2, 2), dtype=dtype
        )
        g = traj["val"][1]
        t = int(gmn_split(len(ethanol) - 1 - 200, 100)[1][1]) + 100
        heavy = ethanol.numbers > 1
        r = ethanol.positions[:, heavy]
        served = make_graph_data(
            TRAJ,
            r[t],
            numbers=ethanol.numbers[heavy],
            velocities=r[t + 1] - r[t],
            dtype=dtype,
            graph_positions=r[0],
        )
        assert_served_graph_plus(g, served, keys.TARGET_POSITIONS)

        config = force_field(3.0)
        ff = md17_force_dataset(ethanol, config, sizes=(3, 1, 1), seed=2, dtype=dtype)
        f = int(np.random.default_rng(2).permutation(len(ethanol))[3])
        g = ff["val"][0]
        served = make_graph_data(
            config, ethanol.positions[f], numbers=ethanol.numbers, dtype=dtype
        )
        assert_served_graph_plus(g, served, keys.ENERGY, keys.FORCES)
        assert g[keys.ENERGY].dtype == torch.float64


def test_heavy_atoms_only_drops_and_refuses_hydrogens(ethanol) -> None:
    out = md17_trajectory_dataset(ethanol, TRAJ, delta=100, margin=100, sizes=(2, 1, 1))
    assert out["train"][0][keys.NUMBERS].tolist() == [6, 6, 8]  # no H in the data
    rule = input_rule(TRAJ)
    v = np.zeros((9, 3))
    with pytest.raises(InputError) as err:
        rule.check(StructureInput(ethanol.positions[0], ethanol.numbers, v))
    assert err.value.field == keys.NUMBERS and "hydrogen" in err.value.message
    heavy = ethanol.numbers > 1
    rule.check(
        StructureInput(ethanol.positions[0][heavy], ethanol.numbers[heavy], v[:3])
    )
    # a model that sees every atom keeps (and accepts) the hydrogens
    every = TRAJ.model_copy(update={"heavy_atoms_only": False})
    out = md17_trajectory_dataset(
        ethanol, every, delta=100, margin=100, sizes=(2, 1, 1)
    )
    assert out["train"][0][keys.NUMBERS].tolist() == ethanol.numbers.tolist()
    input_rule(every).check(StructureInput(ethanol.positions[0], ethanol.numbers, v))


def test_fit_reference_energies() -> None:
    rng = np.random.default_rng(0)
    species = [1, 6, 8]
    e_ref = np.array([-13.6, -1030.0, -2040.0])
    numbers = [rng.choice(species, size=rng.integers(3, 12)) for _ in range(40)]
    energies = np.array([sum(e_ref[species.index(z)] for z in zs) for zs in numbers])
    np.testing.assert_allclose(
        fit_reference_energies(numbers, energies, species), e_ref, rtol=1e-9
    )
    one = [np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])] * 3
    fit = fit_reference_energies(one, np.array([-4209.0, -4210.0, -4211.0]), species)
    assert fit @ np.array([6, 2, 1]) == pytest.approx(-4210.0)
    with pytest.raises(ValueError, match="species"):
        fit_reference_energies([np.array([7])], np.array([1.0]), species)
