"""`hegnn train` and `hegnn eval` end to end on tiny data: learning, resume, DDP."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch_geometric.loader import DataLoader

from hegnn import HEGNNCalculator, load
from hegnn_serve.training.commands import evaluate_checkpoint
from hegnn_serve.training.config import load_config
from hegnn_serve.training.data.nbody import generate_nbody, nbody_protocol
from hegnn_serve.training.metrics import potential_loss
from hegnn_serve.training.train import Trainer, learning_rate, run_training

ROOT = Path(__file__).resolve().parents[2]
HEGNN = str(Path(sys.executable).parent / "hegnn")


@pytest.fixture(scope="module")
def nbody_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "nbody.npz"
    generate_nbody(path, nbody_protocol("egnn", 5, sizes=(40, 20, 20)), seed=1)
    return path


def tiny_config(tmp_path: Path, name: str, data: Path | None = None, *extra: str):
    base = {"nbody": "nbody-tiny", "force": "md17-force-tiny", "traj": "md17-traj-tiny"}
    overrides = [f"run_dir={tmp_path / 'runs'}", f"checkpoint_dir={tmp_path / 'ckpt'}"]
    if data:
        overrides.append(f"data.path={data}")
    return load_config(ROOT / "configs" / f"{base[name]}.yaml", [*overrides, *extra])


def read_log(config) -> list[dict]:
    lines = (config.run_dir / config.name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_nbody_training_learns_and_eval_reproduces_validation(tmp_path, nbody_file):
    config = tiny_config(tmp_path, "nbody", nbody_file, "optim.max_epochs=10")
    card = run_training(config, "test")
    log = read_log(config)
    assert log[-1]["train_loss"] < 0.5 * log[0]["train_loss"]
    best = min(r["val_mse"] for r in log if "val_mse" in r)
    path = config.checkpoint_dir / config.name
    model, loaded = load(path)
    assert loaded.metrics["val"]["mse"] == pytest.approx(best, rel=1e-6)
    again = evaluate_checkpoint(path, split="val")
    assert again["mse"] == pytest.approx(best, rel=1e-5)
    assert card["delta_t"] == pytest.approx(1.0)
    rotated, plain = card["metrics"]["test_rotated"], card["metrics"]["test"]
    assert rotated["mse"] == pytest.approx(plain["mse"], rel=1e-4)  # equivariant
    assert (config.run_dir / config.name / "curve.png").is_file()


def test_force_field_training_gives_a_working_calculator(tmp_path):
    config = tiny_config(tmp_path, "force")
    card = run_training(config, "test")
    assert card["training"]["stopped_by"] == "max_epochs"
    assert card["model"]["species"] == [1, 6, 8]
    assert set(card["normalisation"]) >= {"atomic_energies", "avg_num_neighbors"}
    from ase.io import read

    atoms = read(ROOT / "data/md17/rmd17_ethanol_random100.xyz", index=0)
    atoms.calc = HEGNNCalculator(config.checkpoint_dir / config.name, device="cpu")
    # E0 fitted on the training split puts the energy on the right scale (eV).
    assert abs(atoms.get_potential_energy() - (-97076.1 * 0.0433641)) < 5.0
    assert atoms.get_forces().shape == (9, 3)


def test_a_test_file_is_scored_as_the_test_split(tmp_path):
    """data.test_path: the card's test metrics are that file's unseen frames, and
    `hegnn eval` rebuilds the same split from the card."""
    held = ROOT / "data/md17/rmd17_ethanol_random100.xyz"  # 40 of its 100 train
    overrides = ("data.sizes=[30, 10, 0]", f"data.test_path={held}")
    config = tiny_config(tmp_path, "force", None, *overrides)
    card = run_training(config, "test")
    test = card["metrics"]["test"]
    assert test["n_values"] == 60 * 9 * 3  # forces of the 60 unseen frames
    assert card["data"]["test"]["frames_seen_in_training"] == 40
    assert card["data"]["split_sizes"]["test"] == 60
    again = evaluate_checkpoint(config.checkpoint_dir / config.name, split="test")
    assert again["n"] == 60
    # batches of 5 (training) and 100 (eval): float32 forces differ by a few ulps
    # (~1e-7 relative), far below 1e-5 of the MAE
    assert again["force_mae_mev_per_a"] == pytest.approx(
        test["force_mae_mev_per_a"], rel=1e-5
    )


def test_trajectory_training_on_real_md17_frames(tmp_path):
    config = tiny_config(tmp_path, "traj")
    card = run_training(config, "test")
    assert card["delta_t"] == 100.0 and card["model"]["features"] == "md17-traj"
    assert card["metrics"]["test"]["mse"] < 0.05  # Å², a 50 fs step of ethanol


def test_cosine_anneals_to_zero_over_whichever_horizon_ends_the_run_first(tmp_path):
    cosine = ("optim.scheduler=cosine", "optim.lr=0.01", "optim.max_minutes=30")
    budgeted = tiny_config(tmp_path, "force", None, *cosine, "optim.max_epochs=1000")
    assert learning_rate(budgeted, 0, 1.0, 0.0) == pytest.approx(0.01)
    # Half the minutes gone at epoch 10: the clock sets the phase, not the epochs.
    assert learning_rate(budgeted, 10, 1.0, 15 * 60) == pytest.approx(0.005)
    assert learning_rate(budgeted, 20, 1.0, 30 * 60) == pytest.approx(0.0, abs=1e-12)
    epochs = tiny_config(tmp_path, "force", None, *cosine, "optim.max_epochs=100")
    assert learning_rate(epochs, 50, 1.0, 60.0) == pytest.approx(0.005)
    plateau = tiny_config(tmp_path, "force", None, "optim.scheduler=plateau")
    assert learning_rate(plateau, 50, 0.5, 29 * 60) == pytest.approx(
        0.5 * plateau.optim.lr
    )


def test_plateau_stops_once_the_lr_falls_below_min_lr(tmp_path):
    plateau = (
        "optim.scheduler=plateau",
        "optim.lr=0.01",
        "optim.plateau_factor=0.5",
        "optim.plateau_patience=1",
        "optim.min_lr=0.003",
    )
    config = tiny_config(tmp_path, "force", None, *plateau)
    trainer = Trainer(config, "hegnn train first")
    val = [1.0, 2.0, 2.0]  # a gain, then two without: lr 0.01 -> 0.005 -> 0.0025
    stops = [trainer.after_validation({"force_mae_mev_per_a": v}) for v in val]
    assert stops == [False, False, True]
    assert config.optim.lr * trainer.plateau_factor == pytest.approx(0.0025)
    trainer.save_state()
    # Rerunning the command of a stopped run trains no further; the card says why
    # it stopped and lists both commands.
    again = Trainer(config, "hegnn train again")
    assert again.try_resume()
    again.fit()
    card = again.finish()
    assert again.epoch == 0 and card["metrics"]["best_epoch"] == 0
    assert card["training"]["stopped_by"] == "lr below min_lr 0.003"
    assert card["training"]["commands"] == ["hegnn train first", "hegnn train again"]


def test_stage_two_changes_loss_weights_and_lr_and_seeks_the_best_model_afresh(
    tmp_path,
):
    stage_two = (
        "optim.stage_two_start=0.5",  # of max_epochs = 4: epochs 3 and 4
        "optim.stage_two_lr=0.001",
        "optim.stage_two_energy_weight=1000",
        "optim.stage_two_force_weight=1",
    )
    config = tiny_config(tmp_path, "force", None, *stage_two)
    card = run_training(config, "test")
    log = read_log(config)
    assert [r["stage"] for r in log] == [1, 1, 2, 2]
    assert [r["lr"] for r in log] == [0.005, 0.005, 0.001, 0.001]
    # Validations at epochs 2 and 4; only the stage-two one may be chosen.
    assert card["metrics"]["best_epoch"] == 4

    trainer = Trainer(config)
    batch = next(iter(DataLoader(trainer.prepared.splits["train"], batch_size=5)))
    weights = {1: (1.0, 100.0), 2: (1000.0, 1.0)}  # the tiny config's, then stage two's
    for stage, (w_e, w_f) in weights.items():
        trainer.stage = stage
        expected = potential_loss(trainer.model(batch.clone()), batch, w_e, w_f)
        assert trainer.loss(batch.clone()).item() == pytest.approx(expected.item())


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, nbody_file):
    straight = tiny_config(tmp_path / "a", "nbody", nbody_file)
    run_training(straight, "test")
    first = tiny_config(tmp_path / "b", "nbody", nbody_file, "optim.max_epochs=4")
    run_training(first, "test")
    # Stop rules and the folders may change on resumption (here the run folder is
    # moved and the checkpoint goes elsewhere); they leave the trajectory alone.
    (tmp_path / "b").rename(tmp_path / "c")
    stop_rule = "optim.early_stop_patience=1000"
    resumed = tiny_config(tmp_path / "c", "nbody", nbody_file, stop_rule)
    # an epoch logged after the last saved state, then lost with the process
    log = resumed.run_dir / resumed.name / "metrics.jsonl"
    with log.open("a") as f:
        f.write(json.dumps({"epoch": 5, "train_loss": 1.0}) + "\n")
    assert Trainer(resumed).try_resume()
    run_training(resumed, "test")
    assert [r["epoch"] for r in read_log(resumed)] == list(range(1, 7))
    a = load_file(straight.checkpoint_dir / straight.name / "model.safetensors")
    b = load_file(resumed.checkpoint_dir / resumed.name / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_fork_continues_its_source_and_may_change_the_optim_settings(
    tmp_path, nbody_file
):
    straight = tiny_config(tmp_path / "a", "nbody", nbody_file)
    run_training(straight, "test")
    source = tiny_config(tmp_path / "b", "nbody", nbody_file, "optim.max_epochs=4")
    run_training(source, "parent command")
    source_dir = source.run_dir / source.name
    source_log = (source_dir / "metrics.jsonl").read_text()
    # Another name and nothing else changed: the fork is the uninterrupted run.
    same = tiny_config(tmp_path / "b", "nbody", nbody_file, "name=same")
    card = run_training(same, "fork command", fork_from=source_dir)
    assert card["training"]["forked_from"] == {"run": str(source_dir), "epoch": 4}
    assert card["training"]["commands"] == ["parent command", "fork command"]
    assert [r["epoch"] for r in read_log(same)] == list(range(1, 7))
    assert read_log(same)[:4] == read_log(source)
    assert (source_dir / "metrics.jsonl").read_text() == source_log  # untouched
    a = load_file(straight.checkpoint_dir / straight.name / "model.safetensors")
    b = load_file(same.checkpoint_dir / "same" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # Another schedule from the same state: the fork's epochs follow it.
    other = tiny_config(
        tmp_path / "b",
        "nbody",
        nbody_file,
        "name=cosine",
        "optim.max_epochs=12",
        "optim.scheduler=cosine",
        "optim.weight_decay=0.01",
    )
    run_training(other, "fork", fork_from=source_dir)
    lrs = [r["lr"] for r in read_log(other)]
    assert lrs[:4] == [1e-3] * 4
    assert lrs[4:] == pytest.approx(
        [learning_rate(other, e, 1.0) for e in range(4, 12)]
    )
    assert lrs[-1] < 0.1 * lrs[4]
    # Rerunning the fork's command resumes the fork (its own state), not the source,
    # even once the source is gone.
    assert Trainer(other).try_resume()
    resumed = Trainer(other)
    resumed.fork(tmp_path / "nowhere")
    assert resumed.epoch == 12 and resumed.forked_from["epoch"] == 4

    for change, field in (
        ("model.hidden_dim=8", "hidden_dim"),
        ("seed=1", "seed"),
        ("optim.optimizer=adamw", "optimizer"),
    ):
        bad = tiny_config(tmp_path / "b", "nbody", nbody_file, "name=bad", change)
        with pytest.raises(ValueError, match=field):
            Trainer(bad).fork(source_dir)
    fresh = tiny_config(tmp_path / "b", "nbody", nbody_file, "name=fresh")
    with pytest.raises(FileNotFoundError, match="state.pt"):
        Trainer(fresh).fork(tmp_path / "nowhere")


def test_a_killed_run_resumes_to_the_same_result(tmp_path, nbody_file):
    args = [
        HEGNN,
        "train",
        "--config",
        str(ROOT / "configs/nbody-tiny.yaml"),
        "--set",
        f"data.path={nbody_file}",
        "--set",
        "optim.max_epochs=12",
        "--threads",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("straight", "killed"):
        (tmp_path / name).mkdir()
    subprocess.run(
        [
            *args,
            "--set",
            f"run_dir={tmp_path}/straight/runs",
            "--set",
            f"checkpoint_dir={tmp_path}/straight/ckpt",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    killed = [
        *args,
        "--set",
        f"run_dir={tmp_path}/killed/runs",
        "--set",
        f"checkpoint_dir={tmp_path}/killed/ckpt",
    ]
    proc = subprocess.Popen(
        killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    state = tmp_path / "killed/runs/nbody-tiny/state.pt"
    deadline = time.time() + 60
    while not state.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert not (tmp_path / "killed/ckpt/nbody-tiny").exists()  # stopped early
    assert proc.returncode == 143  # 128 + SIGTERM, with a resume hint, no traceback
    stderr = proc.stderr.read().decode()
    assert "rerun the same command to resume" in stderr
    assert "Traceback" not in stderr and "╭" not in stderr
    subprocess.run(killed, check=True, env=env, capture_output=True)
    a = load_file(tmp_path / "straight/ckpt/nbody-tiny/model.safetensors")
    b = load_file(tmp_path / "killed/ckpt/nbody-tiny/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(
    shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
    reason="torchrun not installed",
)
def test_ddp_two_processes_match_one_process(tmp_path, nbody_file):
    common = [
        "--config",
        str(ROOT / "configs/nbody-tiny.yaml"),
        "--set",
        f"data.path={nbody_file}",
        "--set",
        "dtype=float64",
        "--set",
        "optim.max_epochs=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {}
    for world in (1, 2):
        out = tmp_path / f"w{world}"
        launcher = [
            str(Path(sys.executable).parent / "torchrun"),
            "--standalone",
            f"--nproc_per_node={world}",
            HEGNN,
        ]
        subprocess.run(
            [
                *launcher,
                "train",
                *common,
                "--set",
                f"run_dir={out}/runs",
                "--set",
                f"checkpoint_dir={out}/ckpt",
            ],
            check=True,
            env=env,
            capture_output=True,
            timeout=300,
        )
        results[world] = load_file(out / "ckpt/nbody-tiny/model.safetensors")
    for key, value in results[1].items():
        assert torch.allclose(value, results[2][key], atol=1e-10), key


def test_python_dash_m_training_is_the_hegnn_command(tmp_path, nbody_file):
    """`python -m training` (no console script, e.g. on a bare GPU image) trains too,
    and the card records the command as `hegnn ...` so it reproduces anywhere."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "train",
            "--config",
            str(ROOT / "configs/nbody-tiny.yaml"),
            "--set",
            f"data.path={nbody_file}",
            "--set",
            "optim.max_epochs=1",
            "--set",
            f"run_dir={tmp_path}/runs",
            "--set",
            f"checkpoint_dir={tmp_path}/ckpt",
        ],
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
    )
    (card_path,) = (tmp_path / "ckpt").glob("*/card.json")
    command = json.loads(card_path.read_text())["training"]["command"]
    assert command.startswith("hegnn train --config ")
    assert "optim.max_epochs=1" in command
