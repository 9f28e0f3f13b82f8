"""Input rules: what each requires and refuses, and the graphs it builds."""

import re

import numpy as np
import pytest
import torch

from hegnn import (
    InputError,
    ModelConfig,
    StructureInput,
    input_rule,
    keys,
    make_graph_data,
)
from hegnn.rules import RULES
from hegnn.testing import random_structure

SPECIES = ModelConfig(task="potential", species=(1, 6, 8), r_max=4.0)
NBODY = ModelConfig(task="dynamics", features="nbody")
MD17_TRAJ = ModelConfig(task="dynamics", features="md17-traj", bond_cutoff=1.7)


def _structure(numbers, **fields) -> StructureInput:
    s = random_structure(len(numbers), seed=5)
    return StructureInput(positions=s.positions, numbers=np.asarray(numbers), **fields)


def test_every_rule_is_registered_under_its_name() -> None:
    assert set(RULES) == {"species", "nbody", "md17-traj"}
    for config in (SPECIES, NBODY, MD17_TRAJ):
        assert input_rule(config).name == config.features


@pytest.mark.parametrize(
    "config, structure, field, message",
    [
        (SPECIES, StructureInput(np.zeros((2, 3))), "numbers", "required"),
        (SPECIES, _structure([6, 9]), "numbers", "species [9] not known"),
        (SPECIES, _structure([6, 8], charges=np.ones(2)), "charges", "not used"),
        (NBODY, _structure([6, 8]), "velocities", "required"),
        (
            MD17_TRAJ,
            _structure([6, 1, 8], velocities=np.zeros((3, 3))),
            "numbers",
            "hydrogen at atoms [1]",
        ),
        (
            MD17_TRAJ,
            _structure([6, 8], velocities=np.zeros((2, 3)), pbc=np.ones(3, bool)),
            "pbc",
            "not used",
        ),
    ],
)
def test_rules_refuse_what_they_cannot_take(config, structure, field, message) -> None:
    with pytest.raises(InputError, match=re.escape(message)) as err:
        input_rule(config).check(structure)
    assert err.value.field == field


def test_hydrogens_are_allowed_when_the_card_says_all_atoms() -> None:
    config = MD17_TRAJ.model_copy(update={"heavy_atoms_only": False})
    rule = input_rule(config)
    rule.check(_structure([6, 1, 8], velocities=np.zeros((3, 3))))
    assert rule.atom_mask(np.array([6, 1, 8])).all()
    assert input_rule(MD17_TRAJ).atom_mask(np.array([6, 1, 8])).tolist() == [
        True,
        False,
        True,
    ]


def test_configs_the_rules_cannot_use_are_refused() -> None:
    with pytest.raises(ValueError, match="r_max"):
        ModelConfig(task="potential", species=(1,))
    with pytest.raises(ValueError, match="feeds a dynamics model"):
        ModelConfig(task="potential", features="nbody", species=(1,), r_max=3.0)


def test_graphs_keep_only_the_inputs_the_rule_uses() -> None:
    s = random_structure(6, seed=6, species=(6, 8))
    inputs = dict(numbers=s.numbers, velocities=s.velocities, charges=s.charges)
    species = make_graph_data(SPECIES, s.positions, **inputs)
    assert keys.VELOCITIES not in species and keys.CHARGES not in species
    assert keys.EDGE_SHIFTS in species
    nbody = make_graph_data(NBODY, s.positions, **inputs)
    assert keys.NUMBERS not in nbody
    assert nbody[keys.EDGE_INDEX].shape[1] == 6 * 5
    traj = make_graph_data(MD17_TRAJ, s.positions, **inputs)
    assert keys.CHARGES not in traj and keys.EDGE_HOP in traj


def test_the_graph_can_come_from_other_positions() -> None:
    s = random_structure(6, seed=7, species=(6, 8))
    frame0 = s.positions
    moved = s.positions + 0.3
    data = make_graph_data(
        MD17_TRAJ, moved, s.numbers, s.velocities, graph_positions=frame0
    )
    assert torch.equal(
        data[keys.EDGE_INDEX],
        make_graph_data(MD17_TRAJ, frame0, s.numbers, s.velocities)[keys.EDGE_INDEX],
    )
    assert torch.allclose(data[keys.POSITIONS], torch.as_tensor(moved))


def test_a_flat_periodic_cell_is_an_input_error_at_cell() -> None:
    s = random_structure(4, seed=8)
    with pytest.raises(InputError) as err:
        make_graph_data(
            SPECIES, s.positions, s.numbers, cell=np.zeros((3, 3)), pbc=True
        )
    assert err.value.field == "cell"


@pytest.mark.parametrize(
    "config", [SPECIES, NBODY, MD17_TRAJ], ids=lambda c: c.features
)
@pytest.mark.parametrize("n_atoms", [1, 2, 30])
def test_counted_edges_equal_the_built_graph(config, n_atoms) -> None:
    """count_edges (used to refuse a structure before its graph exists) agrees
    with the graph the rule builds, periodic images included."""
    rule = input_rule(config)
    s = random_structure(n_atoms, seed=3, species=(6, 8), density=0.12)
    cases = [(None, None)]
    if config is SPECIES:
        cell = np.diag([6.0, 7.0, 30.0])
        cases += [(cell, np.array([True, True, False])), (cell, np.array([True] * 3))]
    for cell, pbc in cases:
        built = rule.edges(s.positions, cell, pbc)[keys.EDGE_INDEX].shape[1]
        assert rule.count_edges(s.positions, cell, pbc) == built
