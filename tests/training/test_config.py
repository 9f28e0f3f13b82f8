"""TrainConfig: the model section is hegnn's Architecture, the data section a union
on the training task; stored configs of older runs still validate."""

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from hegnn import Architecture, input_rule
from hegnn_serve.training.config import (
    LEGACY_DATA_DEFAULTS,
    MD17ForceData,
    MD17TrajData,
    NBodyData,
    TrainConfig,
    load_config,
    migrate_stored_config,
    stored_config,
)
from hegnn_serve.training.prepare import model_config
from hegnn_serve.training.train import _config_changes, _saved_config

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "nbody": ROOT / "configs/nbody-tiny.yaml",
    "md17-traj": ROOT / "configs/md17-traj-tiny.yaml",
    "md17-force": ROOT / "configs/md17-force-tiny.yaml",
}


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")))
def test_every_shipped_yaml_config_validates(path: Path) -> None:
    config = load_config(path)
    sections = {"nbody": NBodyData, "md17-traj": MD17TrajData}
    assert type(config.data) is sections.get(config.task, MD17ForceData)
    assert isinstance(config.model, Architecture)
    assert "task" not in config.model_dump()["data"]  # stored once, at the top


@pytest.mark.parametrize(
    ("task", "field", "owner"),
    [
        ("nbody", "delta", "md17-traj"),
        ("nbody", "unit", "md17-traj / md17-force"),
        ("md17-force", "frame_in", "nbody"),
        ("md17-traj", "seed", "md17-force"),
        ("md17-force", "margin", "md17-traj"),
    ],
)
def test_a_data_field_of_another_task_is_refused_by_name(task, field, owner) -> None:
    with pytest.raises(ValidationError) as err:
        load_config(TINY[task], [f"data.{field}=1"])
    assert f"{field}: a data field of task {owner}, not of task {task}" in str(
        err.value
    )


def test_unknown_fields_are_named() -> None:
    with pytest.raises(ValidationError, match=r"data\.nbody\.colour"):
        load_config(TINY["nbody"], ["data.colour=1"])
    with pytest.raises(ValidationError, match=r"model\.colour"):
        load_config(TINY["nbody"], ["model.colour=1"])
    with pytest.raises(ValidationError, match="data.task"):
        load_config(TINY["nbody"], ["data.task=md17-traj"])
    with pytest.raises(ValidationError, match="task"):
        load_config(TINY["nbody"], ["task=md17"])


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (["optim.min_lr=1e-4"], "stops a plateau schedule; scheduler is 'none'"),
        (["optim.scheduler=plateau", "optim.min_lr=0.01"], "not below lr 0.005"),
    ],
)
def test_min_lr_is_checked_against_the_schedule(overrides, problem) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        load_config(TINY["md17-force"], overrides)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (["data.test_path=held.xyz"], "give [train, val, 0] (got (30, 10, 10))"),
        (["data.test_unit=eV"], "test_unit: given without test_path"),
    ],
)
def test_a_test_file_replaces_the_test_split(overrides, problem) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        load_config(TINY["md17-force"], overrides)
    config = load_config(
        TINY["md17-force"], ["data.test_path=held.xyz", "data.sizes=[30, 10, 0]"]
    )
    assert config.data.test_path == Path("held.xyz")


def test_model_section_is_the_architecture() -> None:
    config = load_config(TINY["md17-traj"], ["model.envelope_p=5"])
    assert config.model.envelope_p == 5  # dropped by the old hand-copied section
    assert TrainConfig.model_fields["model"].annotation is Architecture


def test_each_task_names_its_input_rule() -> None:
    expected = {"nbody": "dynamics", "md17-traj": "dynamics", "md17-force": "potential"}
    for task, path in TINY.items():
        config = load_config(path)
        mc = model_config(config, species=(1, 6, 8), r_max=4.0)
        assert mc.features == type(config.data).features
        assert mc.task == expected[task] == input_rule(mc).task


def _legacy(task: str, **data) -> dict:
    """A training config as written before the data union (every data field)."""
    config = load_config(TINY[task]).model_dump(mode="json")
    config["data"] = {**LEGACY_DATA_DEFAULTS, **config["data"], **data}
    config["model"] = {  # the old model section had no rule parameters
        k: v
        for k, v in config["model"].items()
        if k not in ("bond_cutoff", "heavy_atoms_only", "envelope_p")
    }
    return config


@pytest.mark.parametrize("task", sorted(TINY))
def test_stored_configs_drop_other_tasks_defaults(task) -> None:
    legacy = _legacy(task)
    with pytest.raises(ValidationError, match="a data field of task"):
        TrainConfig.model_validate(legacy)
    assert stored_config(legacy) == load_config(TINY[task])
    # a resumed run of an old state sees no change
    new = load_config(TINY[task]).model_dump(mode="json")
    assert _config_changes(_saved_config(legacy), new) == set()


def test_stored_configs_keep_other_tasks_values_that_mattered() -> None:
    legacy = _legacy("nbody", delta=500)  # not a default: never written by a run
    assert migrate_stored_config(legacy)["data"]["delta"] == 500
    with pytest.raises(ValidationError, match="delta: a data field of task"):
        stored_config(legacy)


def test_training_compares_no_input_rule_names() -> None:
    """Rules are asked (hegnn/rules/), not named: no `== "species"` in training/."""
    names = "species|nbody|md17-traj|md17-force"
    compare = re.compile(rf"""[=!]=\s*["']({names})["']|["']({names})["']\s*[=!]=""")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "training").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if compare.search(line)
    ]
    assert not found
