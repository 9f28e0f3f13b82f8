"""One training run: data -> model -> optimiser loop -> checkpoint with a model card.

Resumable (state saved at every validation), EMA, early stopping, wall-clock budget,
DDP under torchrun (rank 0 logs and writes). No globals: everything comes from the
TrainConfig.
"""

import copy
import json
import logging
import math
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data.distributed import DistributedSampler
from torch_geometric.loader import DataLoader

from hegnn import build_model, keys, save
from hegnn.rules import input_rule
from hegnn_serve.training import distributed
from hegnn_serve.training.config import OptimSection, TrainConfig, stored_config
from hegnn_serve.training.evaluate import evaluate
from hegnn_serve.training.metrics import dynamics_loss, potential_loss, primary_metric
from hegnn_serve.training.plots import plot_curves
from hegnn_serve.training.prepare import Prepared, prepare

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"
# Fields that may change between an interrupted run and its resumption: the stop
# rules and the folders (a moved run, another checkpoint destination), which leave
# the trajectory up to the stop unchanged.
RESUMABLE_CHANGES = {
    ("run_dir",),
    ("checkpoint_dir",),
    ("optim", "max_epochs"),
    ("optim", "max_minutes"),
    ("optim", "min_lr"),
    ("optim", "early_stop_patience"),
}
# A fork (``Trainer.fork``) may also take another name and any optim setting but the
# optimiser itself (its saved moments are the source's).
FORKABLE_CHANGES = (
    RESUMABLE_CHANGES
    | {("name",)}
    | {("optim", k) for k in OptimSection.model_fields if k != "optimizer"}
)


class Interrupted(Exception):
    """SIGTERM arrived; the run saves its state and stops."""


class ForkSourceMissing(FileNotFoundError):
    """A fork's source folder has no saved run state (and the fork has none yet)."""


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(f"signal {signum}")


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    o = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    # foreach: one multi-tensor kernel per update stage instead of one per parameter
    # (torch picks it only on CUDA); a 4 x 64 HEGNN's Adam step: 1.4-2.6x less CPU.
    if o.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=o.lr, weight_decay=o.weight_decay, foreach=True
        )
    return torch.optim.Adam(
        params,
        lr=o.lr,
        weight_decay=o.weight_decay,
        amsgrad=o.optimizer == "amsgrad",
        foreach=True,
    )


def schedule_progress(config: TrainConfig, epoch: int, elapsed_s: float) -> float:
    """Fraction of the run's horizon done: epochs of max_epochs, or the wall-clock
    budget's share when max_minutes ends the run first (whichever is further)."""
    o = config.optim
    progress = epoch / o.max_epochs
    if o.max_minutes:
        progress = max(progress, elapsed_s / (60 * o.max_minutes))
    return min(progress, 1.0)


def learning_rate(
    config: TrainConfig,
    epoch: int,
    plateau_factor: float,
    elapsed_s: float = 0.0,
    stage: int = 1,
) -> float:
    """Base lr × warm-up ramp × (cosine decay or accumulated plateau factor).

    Cosine: lr · ½(1 + cos π p), p = ``schedule_progress``, so a budgeted run anneals
    to zero as its minutes run out instead of stopping at a high lr. Stage two with
    ``stage_two_lr`` set: that lr, constant.
    """
    o = config.optim
    if stage == 2 and o.stage_two_lr is not None:
        return o.stage_two_lr
    lr = o.lr * plateau_factor
    if o.warmup_epochs and epoch < o.warmup_epochs:
        lr *= (epoch + 1) / o.warmup_epochs
    if o.scheduler == "cosine":
        p = schedule_progress(config, epoch, elapsed_s)
        lr *= 0.5 * (1 + math.cos(math.pi * p))
    return lr


def _config_changes(old: dict[str, Any], new: dict[str, Any]) -> set[tuple[str, ...]]:
    changes = set()
    for section in set(old) | set(new):
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            changes |= {(section, k) for k in set(a) | set(b) if a.get(k) != b.get(k)}
        elif a != b:
            changes.add((section,))
    return changes


def _saved_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A run state's config in today's form (defaults of fields added since filled
    in, other tasks' data fields of old states dropped); as saved if it no longer
    validates, so that the comparison reports the difference."""
    try:
        return stored_config(saved).model_dump(mode="json")
    except ValueError:
        return saved


class Trainer:
    """Owns the model, optimiser, EMA and loop state of one run."""

    def __init__(self, config: TrainConfig, command: str = "") -> None:
        self.config = config
        self.commands = [command]  # every command of a resumed run, in order
        self.ctx = distributed.setup(config.device)
        self.dtype = getattr(torch, config.dtype)
        self.run_dir = config.run_dir / config.name
        torch.manual_seed(config.seed)  # same initial weights on every rank
        self.prepared: Prepared = prepare(config)
        self.task = self.prepared.model_config.task
        model = build_model(self.prepared.model_config)
        if self.prepared.delta_t is not None:
            model.delta_t.fill_(self.prepared.delta_t)
        if self.prepared.statistics:
            model.set_statistics(**self.prepared.statistics)
        self.model = model.to(self.ctx.device, self.dtype)
        self.ddp = (
            DistributedDataParallel(self.model, find_unused_parameters=True)
            if self.ctx.world_size > 1
            else self.model
        )
        decay = config.optim.ema_decay
        self.ema = (
            AveragedModel(  # weights only: buffers hold fixed statistics
                self.model,
                multi_avg_fn=get_ema_multi_avg_fn(decay),
                use_buffers=False,
            )
            if decay
            else None
        )
        self.optimizer = make_optimizer(self.model, config)
        self.epoch = 0
        self.elapsed = 0.0
        self.plateau_factor = 1.0
        self.best = math.inf
        self.best_epoch = -1
        self.since_best = 0
        self.stop_reason = ""
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stage = 1
        self.forked_from: dict[str, Any] | None = None

    # --- data --------------------------------------------------------------------
    def train_loader(self) -> tuple[DataLoader, DistributedSampler]:
        train = self.prepared.splits["train"]
        sampler = DistributedSampler(
            train,
            num_replicas=self.ctx.world_size,
            rank=self.ctx.rank,
            shuffle=True,
            seed=self.config.seed,
        )
        per_rank = max(1, self.config.optim.batch_size // self.ctx.world_size)
        return DataLoader(train, batch_size=per_rank, sampler=sampler), sampler

    # --- state -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "epoch": self.epoch,
            "elapsed": self.elapsed,
            "plateau_factor": self.plateau_factor,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "since_best": self.since_best,
            "best_state": self.best_state,
            "stage": self.stage,
            "commands": self.commands,
            "forked_from": self.forked_from,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": torch.get_rng_state(),
        }

    def save_state(self) -> None:
        if not self.ctx.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / (STATE_FILE + ".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(self.run_dir / STATE_FILE)

    def try_resume(self) -> bool:
        path = self.run_dir / STATE_FILE
        if not path.is_file():
            return False
        self.load_state(path, RESUMABLE_CHANGES)
        self.drop_log_after(self.epoch)
        logger.info("resumed %s at epoch %d", self.config.name, self.epoch)
        return True

    def fork(self, source: Path) -> None:
        """Continue another run's saved state under this config's optim settings.

        Weights, optimiser moments, EMA, the plateau factor reached and the best
        model so far come from ``source`` (a run folder), as NequIP's
        ``initialize_from_state``: a paused run finishes under another schedule (a
        shorter plateau patience, say) without losing its own trajectory, which
        stays in ``source``. The metrics log is copied up to the forked epoch, so
        the curve is continuous; the card records the fork. Once this run has a
        saved state of its own, it resumes from that instead.
        """
        if self.try_resume():
            return
        path = source / STATE_FILE
        if not path.is_file():
            raise ForkSourceMissing(f"--fork-from: no saved run state {path}")
        if source.resolve() == self.run_dir.resolve():
            raise ValueError(f"--fork-from: {source} is this run's own folder")
        self.load_state(path, FORKABLE_CHANGES)
        self.forked_from = {"run": str(source), "epoch": self.epoch}
        for group in self.optimizer.param_groups:  # loaded with the source's
            group["weight_decay"] = self.config.optim.weight_decay
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            log = source / METRICS_FILE
            if log.is_file():
                shutil.copyfile(log, self.run_dir / METRICS_FILE)
            self.drop_log_after(self.epoch)
        self.save_state()
        logger.info(
            "forked %s from %s at epoch %d", self.config.name, source, self.epoch
        )

    def load_state(self, path: Path, allowed: set[tuple[str, ...]]) -> None:
        """Load a saved run state whose config differs from this one only in
        ``allowed`` fields (anything else names the differences and raises)."""
        state = torch.load(path, map_location=self.ctx.device, weights_only=True)
        changes = _config_changes(
            _saved_config(state["config"]), self.config.model_dump(mode="json")
        )
        if changes - allowed:
            raise ValueError(
                f"{path}: the saved run used another config "
                f"({sorted(changes - allowed)}); use a new name or delete the run "
                "directory"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"].cpu())
        for key in (
            "epoch",
            "elapsed",
            "plateau_factor",
            "best",
            "best_epoch",
            "since_best",
            "best_state",
        ):
            setattr(self, key, state[key])
        self.stage = state.get("stage", 1)  # states saved before stage two existed
        self.forked_from = state.get("forked_from")
        self.commands = [*state.get("commands", []), *self.commands]

    def drop_log_after(self, epoch: int) -> None:
        """Forget logged epochs past the saved state (run after it, then lost):
        they are trained again, so the log keeps one record per epoch."""
        log = self.run_dir / METRICS_FILE
        if not self.ctx.is_main or not log.is_file():
            return
        lines = log.read_text().splitlines(keepends=True)
        kept = [line for line in lines if json.loads(line)["epoch"] <= epoch]
        if len(kept) < len(lines):
            log.write_text("".join(kept))

    # --- loop --------------------------------------------------------------------
    def loss(self, batch) -> torch.Tensor:
        out = self.ddp(batch)
        if self.task == keys.TASK_DYNAMICS:
            return dynamics_loss(out, batch)
        o = self.config.optim
        weights = (o.energy_weight, o.force_weight)
        if self.stage == 2:
            weights = (o.stage_two_energy_weight, o.stage_two_force_weight)
        return potential_loss(out, batch, *weights)

    def update_stage(self) -> None:
        """Enter stage two once the run has done ``stage_two_start`` of its horizon.

        The loss weights change there, so the best model is sought afresh.
        """
        o = self.config.optim
        if self.stage == 2 or o.stage_two_start is None:
            return
        if schedule_progress(self.config, self.epoch, self.elapsed) >= (
            o.stage_two_start
        ):
            self.stage = 2
            self.best, self.best_epoch, self.since_best = math.inf, -1, 0
            logger.info("%s: stage two from epoch %d", self.config.name, self.epoch)

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema else self.model

    def train_epoch(self, loader: DataLoader) -> float:
        self.ddp.train()
        self.update_stage()
        lr = learning_rate(
            self.config, self.epoch, self.plateau_factor, self.elapsed, self.stage
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total, count = 0.0, 0
        for batch in loader:
            batch = batch.to(self.ctx.device)
            total += self.step(batch) * batch.num_graphs
            count += batch.num_graphs
        return total / max(count, 1)

    def step(self, batch) -> float:
        """One optimisation step on ``batch`` (on the device); returns its loss."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"epoch {self.epoch}: loss is {float(loss)}; lower optim.lr or "
                "set optim.grad_clip"
            )
        loss.backward()
        if self.config.optim.grad_clip:
            nn.utils.clip_grad_norm_(
                self.model.parameters(), self.config.optim.grad_clip
            )
        self.optimizer.step()
        if self.ema:
            self.ema.update_parameters(self.model)
        return float(loss.detach())

    def validate(self) -> dict[str, float]:
        return evaluate(
            self.eval_model(),
            self.prepared.splits["val"],
            self.config.optim.batch_size,
            self.ctx.device,
        )

    def after_validation(self, metrics: dict[str, float]) -> bool:
        """Track the best model, plateau schedule and early stopping; True = stop."""
        o = self.config.optim
        value = metrics[primary_metric(self.task)]
        if value < self.best:
            self.best, self.best_epoch, self.since_best = value, self.epoch, 0
            self.best_state = copy.deepcopy(self.eval_model().state_dict())
            return False
        self.since_best += 1
        if o.scheduler == "plateau" and self.since_best % o.plateau_patience == 0:
            self.plateau_factor *= o.plateau_factor
        return self.stop_rule_met()

    def stop_rule_met(self) -> bool:
        """min_lr or early_stop_patience reached; sets ``stop_reason``. Checked
        after each validation and on resumption, so rerunning a stopped run's
        command only writes its checkpoint again."""
        o = self.config.optim
        if o.min_lr and o.lr * self.plateau_factor < o.min_lr:
            self.stop_reason = f"lr below min_lr {o.min_lr:g}"
        elif o.early_stop_patience and self.since_best >= o.early_stop_patience:
            self.stop_reason = "early stop"
        return bool(self.stop_reason)

    def log(self, record: dict[str, Any]) -> None:
        if not self.ctx.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")

    def fit(self) -> None:
        o = self.config.optim
        loader, sampler = self.train_loader()
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
        start = time.perf_counter() - self.elapsed
        progress = _progress(self.ctx.is_main)
        task_id = progress.add_task(
            self.config.name, total=o.max_epochs, completed=self.epoch, info=""
        )
        try:
            with progress:
                while self.epoch < o.max_epochs and not self.stop_rule_met():
                    sampler.set_epoch(self.epoch)
                    train_loss = self.train_epoch(loader)
                    self.epoch += 1
                    self.elapsed = distributed.from_main(
                        time.perf_counter() - start, self.ctx.device
                    )
                    record = {
                        "epoch": self.epoch,
                        "train_loss": train_loss,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "elapsed_s": round(self.elapsed, 2),
                        "stage": self.stage,
                    }
                    out_of_time = bool(
                        o.max_minutes and self.elapsed > 60 * o.max_minutes
                    )
                    stop = False
                    if (
                        self.epoch % o.eval_every == 0
                        or out_of_time
                        or (self.epoch == o.max_epochs)
                    ):
                        val = self.validate()
                        record.update({f"val_{k}": v for k, v in val.items()})
                        stop = self.after_validation(val)
                        self.save_state()
                    self.log(record)
                    progress.update(
                        task_id,
                        completed=self.epoch,
                        info=f"loss {train_loss:.4g} best {self.best:.4g}",
                    )
                    if stop or out_of_time:
                        if not stop:
                            self.stop_reason = "time budget"
                        logger.info(
                            "stopping at epoch %d (%s)", self.epoch, self.stop_reason
                        )
                        break
                else:  # the loop's condition ended it
                    self.stop_reason = self.stop_reason or "max_epochs"
        except (KeyboardInterrupt, Interrupted):
            logger.warning(
                "interrupted at epoch %d; state saved in %s (rerun the "
                "same command to resume)",
                self.epoch,
                self.run_dir,
            )
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)

    def finish(self) -> dict[str, Any] | None:
        """Test the best model and write the checkpoint (rank 0). Returns the card."""
        if not self.ctx.is_main:
            return None
        model = copy.deepcopy(self.eval_model())
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        metrics: dict[str, Any] = {"best_epoch": self.best_epoch, "epochs": self.epoch}
        for split in ("val", "test", "test_rotated"):
            if split in self.prepared.splits:
                metrics[split] = evaluate(
                    model,
                    self.prepared.splits[split],
                    self.config.optim.batch_size,
                    self.ctx.device,
                )
        curve = plot_curves(
            self.run_dir / METRICS_FILE,
            self.run_dir / "curve.png",
            primary_metric(self.task),
        )
        p = self.prepared
        card = {
            "description": f"{self.config.name}: {self.config.task} ({_arch(p)})",
            "dataset": self.config.task,
            "data": {
                **p.data_card,
                "split_sizes": {k: len(v) for k, v in p.splits.items()},
            },
            "units": p.units,
            "normalisation": p.statistics,
            "graph": input_rule(p.model_config).describe(),
            "metrics": metrics,
            "training": {
                "command": self.commands[-1],
                "commands": self.commands,
                "stopped_by": self.stop_reason,
                "forked_from": self.forked_from,
                "config": self.config.model_dump(mode="json"),
                "device": str(self.ctx.device)
                if self.ctx.device.type == "cpu"
                else torch.cuda.get_device_name(self.ctx.device),
                "world_size": self.ctx.world_size,
                "torch_threads": torch.get_num_threads(),
                "wall_time_s": round(self.elapsed, 1),
                "loss_curve": str(curve) if curve else None,
            },
        }
        out = self.config.checkpoint_dir / self.config.name
        return save(model, out, card).model_dump(mode="json")


def _arch(prepared: Prepared) -> str:
    lmax = prepared.model_config.lmax
    return "EGNN" if lmax is None else f"HEGNN L={lmax}"


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not (enabled and sys.stderr.isatty()),
    )


def run_training(
    config: TrainConfig,
    command: str = "",
    resume: bool = True,
    fork_from: Path | None = None,
) -> dict[str, Any] | None:
    """Train (resuming a saved run of the same name, or forking ``fork_from``'s
    saved state) and write the checkpoint."""
    trainer = Trainer(config, command)
    try:
        if fork_from is not None:
            trainer.fork(fork_from)
        elif resume:
            trainer.try_resume()
        trainer.fit()
        return trainer.finish()
    finally:
        distributed.teardown()
