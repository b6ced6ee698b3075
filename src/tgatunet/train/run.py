"""Training a run end to end: data, Lightning trainer, checkpoints, logs, resume."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from tgatunet.config import Config, load_config
from tgatunet.data.resident import DeviceWindows
from tgatunet.data.training_inputs import TrainingInputs
from tgatunet.errors import ConfigError, TrainingInterrupted
from tgatunet.hardware import training_device
from tgatunet.infer.rundir import RunDir
from tgatunet.plots import plot_loss_curves
from tgatunet.train.batch_search import BatchChoice
from tgatunet.train.callbacks import ProgressBar, ThroughputMonitor
from tgatunet.train.checkpoint_io import AtomicCheckpointIO
from tgatunet.train.csv_log import ContinuedCSVLogger
from tgatunet.train.leakage_guard import LeakageGuard
from tgatunet.train.loaders import make_loader
from tgatunet.train.memory_optimizer import MemoryOptimizer, MemoryPlan
from tgatunet.train.module import TGATUNetModule
from tgatunet.train.monitor import ResourceMonitor
from tgatunet.train.need_update import NeedUpdate
from tgatunet.train.plan import TrainingPlan, build_module, measure_batch, measure_memory, precision_ran, resolve_plan
from tgatunet.train.prepare import Data, check_checkpoint, check_trainable, load_data, prepare_run_dir, protected_paths, window_counts
from tgatunet.train.stopping import training_ending
from tgatunet.train.calibration import calibrate

log = logging.getLogger(__name__)


def plan_for_config(config: Config) -> tuple[MemoryPlan, BatchChoice | None]:
    """What training would choose for ``config`` on this machine (``tgatunet hardware --config``): the batch of
    ``batch_size: auto`` and the memory optimizer's micro-batch, measured on the training device as training would."""
    data = load_data(config)
    device = training_device(config.performance.accelerator)
    choice = measure_batch(config, data, device) if config.training.batch_size == "auto" else None
    config = config.with_keys(batch_size=choice.batch_size, lr=choice.lr) if choice else config
    return measure_memory(config, data, device, precision_ran(config.performance.precision, device.kind)), choice


def quiet_trainer(config: Config, callbacks: Sequence[pl.Callback] = (), **limits: Any) -> pl.Trainer:
    """A one-device Trainer that writes nothing (no logs, checkpoints, bars): for measurements.

    ``limits`` are Trainer stopping arguments (``max_epochs``, ``max_steps``, ``limit_val_batches``).
    """
    return pl.Trainer(accelerator="gpu" if config.performance.accelerator == "cuda" else config.performance.accelerator, devices=1,
                      precision=config.performance.precision, callbacks=list(callbacks), logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **limits)



# With epochs: auto, validation checks are at least this many training windows apart (every epoch of a larger dataset).
VALIDATION_WINDOWS = 3200


def training_budget(config: Config, data: Data) -> dict[str, Any]:
    """Trainer limits: ``epochs`` epochs with a validation check each; or (``auto``) up to ``max_windows``
    windows with a check every epoch or every few, so a small dataset sees as many windows per check as a large one."""
    t = config.training
    if t.epochs != "auto":
        return {"max_epochs": t.epochs, "check_val_every_n_epoch": 1}
    every = math.ceil(VALIDATION_WINDOWS / max(1, data.epoch_windows))
    return {"max_epochs": -1, "max_steps": max(1, t.max_windows // t.batch_size), "check_val_every_n_epoch": every}


def _make_trainer(config: Config, plan: TrainingPlan, run: RunDir, callbacks: list[pl.Callback], progress_bar: bool, resumed_step: int | None,
                  budget: dict[str, Any]) -> pl.Trainer:
    perf = config.performance
    try:
        return pl.Trainer(
            **budget, accelerator=plan.accelerator, devices=plan.processes, num_nodes=perf.num_nodes, strategy=plan.strategy,
            precision=perf.precision, deterministic="warn", callbacks=callbacks,
            logger=[
                TensorBoardLogger(run.root, name="logs", version="tensorboard", default_hp_metric=False),
                # Every row written at once: an interrupted run keeps the log of its finished epochs.
                ContinuedCSVLogger(run.root, name="logs", version="csv", after_step=resumed_step, flush_logs_every_n_steps=1),
            ],
            plugins=[AtomicCheckpointIO()], default_root_dir=run.root, log_every_n_steps=10, num_sanity_val_steps=0,
            use_distributed_sampler=False,  # make_loader shards every loader itself (fresh offsets need it)
            enable_progress_bar=progress_bar,
            enable_model_summary=False,  # our summary prints the parameter count; Lightning's FLOPs column reads 0
        )
    except (MisconfigurationException, ValueError) as err:
        raise ConfigError(f"accelerator '{perf.accelerator}', devices {plan.processes!r}, num_nodes {perf.num_nodes}, "
                          f"strategy '{plan.strategy}': Lightning cannot train with these: {err}") from None


@dataclass
class _Callbacks:
    """The callbacks of one training whose figures go to ``metrics.json``, all made before the Trainer."""

    plan: TrainingPlan
    best: ModelCheckpoint
    stop: EarlyStopping
    throughput: ThroughputMonitor
    resources: ResourceMonitor
    guard: LeakageGuard | None  # only the first process records it
    need_update: NeedUpdate | None
    memory: MemoryOptimizer | None

    @classmethod
    def make(cls, config: Config, run: RunDir, data: Data, plan: TrainingPlan, writer: bool) -> _Callbacks:
        best = ModelCheckpoint(dirpath=run.checkpoints, filename="best", monitor="val/mae", mode="min", enable_version_counter=False)
        # Selected and stopped by the completion error on the validation windows, the task that is scored.
        t = config.training
        stop = EarlyStopping(monitor="val/mae", mode="min", patience=t.patience)
        update = NeedUpdate(TrainingInputs(data), t.need_update_every, t.need_update_start, t.batch_size) if t.dynamic_need_update else None
        return cls(plan, best, stop, ThroughputMonitor(), ResourceMonitor(target=config.performance.memory_target),
                   LeakageGuard(data) if writer else None, update, MemoryOptimizer(plan.memory) if plan.memory else None)

    def trainer_callbacks(self, run: RunDir, extra: Sequence[pl.Callback], progress_bar: bool) -> list:
        """Ours, then the caller's (which see each epoch's inputs as training will), then the bar."""
        # A second checkpoint without a monitor: Lightning's save_last only writes when "best" improved,
        # but resuming needs the end of every epoch.
        latest = ModelCheckpoint(dirpath=run.checkpoints, filename="last", save_top_k=1, enable_version_counter=False)
        ours = [self.best, latest, self.stop, self.throughput, self.resources, self.guard, self.need_update, self.memory]
        return [c for c in ours if c is not None] + [*extra, *([ProgressBar()] if progress_bar else [])]

    def write_metrics(self, run: RunDir, trainer: pl.Trainer, module: TGATUNetModule, config: Config, data: Data) -> None:
        best = self.best.best_model_score
        run.update_metrics("train", {
            **self.throughput.summary(), "epochs_completed": trainer.current_epoch,
            "best_val_mae": float(best) if best is not None else None,  # what selects best.ckpt and stops training
            "final_val_loss": _metric(trainer, "val/loss"), **self.ending(trainer, config), "steps": trainer.global_step,
            "windows": window_counts(data), "parameters": sum(p.numel() for p in module.model.parameters()),
            "device": str(trainer.strategy.root_device),
            "precision": self.plan.precision,  # what ran: Lightning runs 16-mixed as bf16-mixed on a CPU
            "batch_size": config.training.batch_size, "micro_batch_size": module.micro_batches.size or config.training.batch_size,
            **({"need_update": self.need_update.summary()} if self.need_update is not None else {}),
            **({"batch_search": self.plan.batch_search} if self.plan.batch_search is not None else {}),
            "processes": trainer.world_size, "threads_per_process": torch.get_num_threads(),
            **({"process_choice": self.plan.process_choice} if self.plan.process_choice is not None else {}),
        })
        run.update_metrics("leakage_guard", self.guard.summary())
        optimizer = self.memory.summary(module) if self.memory else {"enabled": False}
        run.update_metrics("memory", {**self.resources.summary(), "optimizer": optimizer})

    def ending(self, trainer: pl.Trainer, config: Config) -> dict[str, Any]:
        """What ended the training and, when the budget ended it too early, the key to raise (metrics.json)."""
        t = config.training
        return training_ending(self.stop.stopped_epoch > 0, int(self.stop.wait_count), t.patience, t.epochs == "auto",
                               trainer.global_step * t.batch_size)


def train(config: Config | str | Path, resume: bool = False, overwrite: bool = False, run_dir: str | Path | None = None,
          callbacks: Sequence[pl.Callback] = (), progress_bar: bool = True, allow_changed_data: bool = False) -> RunDir:
    """Train the model of ``config`` (a :class:`Config` or a YAML file); returns the run directory.

    Args:
        resume: continue the run from its ``last.ckpt``.
        overwrite: delete an earlier run in the run directory first (only a tgatunet run directory is cleared).
        run_dir: overrides the config's ``run_dir`` (default ``runs/<config file name>``, or ``runs/run``).
        callbacks: extra Lightning callbacks.
        allow_changed_data: resume although source files changed since the run started (their old
            normalisation and splits are kept).
    """
    config_file = None if isinstance(config, Config) else Path(config)
    config = load_config(config_file) if config_file else config
    run = RunDir(Path(run_dir) if run_dir else config.resolved_run_dir(config_file.stem if config_file else "run"))
    writer = rank_zero_only.rank == 0  # Lightning's rank of this process, from the launcher's environment
    if writer:
        run.check_folder()
    with run.lock() if writer else contextlib.nullcontext():
        return _train_locked(config, run, resume, overwrite, callbacks, progress_bar, allow_changed_data, config_file)


def _train_locked(config, run, resume, overwrite, callbacks, progress_bar, allow_changed_data, config_file) -> RunDir:
    # Under DDP every process runs this function; only global rank 0 checks and writes the run directory.
    writer = rank_zero_only.rank == 0
    config, data = prepare_run_dir(run, config, resume, overwrite, writer, protected_paths(config, config_file), allow_changed_data)
    plan = resolve_plan(config, data, run, writer)
    config = plan.training_config(config)
    if plan.threads_per_process is not None:
        torch.set_num_threads(plan.threads_per_process)
    ours = _Callbacks.make(config, run, data, plan, writer)
    resumed_step = _checkpoint_step(run.last_checkpoint) if resume and run.last_checkpoint.is_file() else None
    callbacks = ours.trainer_callbacks(run, callbacks, progress_bar)
    trainer = _make_trainer(config, plan, run, callbacks, progress_bar, resumed_step, training_budget(config, data))
    check_trainable(data, trainer.world_size)
    pl.seed_everything(config.training.seed, workers=True, verbose=False)
    resident = DeviceWindows(data, torch.device(plan.device)) if plan.resident else None
    module = build_module(config, data, plan.device_kind, micro_batches=plan.micro_batches(), resident=resident)
    shard = (trainer.world_size, trainer.global_rank) if trainer.world_size > 1 else None
    cuda, inputs = plan.device_kind == "cuda", ours.need_update.inputs if ours.need_update else None
    try:
        trainer.fit(module, train_dataloaders=make_loader(data, "train", config, True, shard, inputs, resident is not None, cuda),
                    val_dataloaders=make_loader(data, "val", config, shuffle=False, shard=shard, cuda=cuda),
                    ckpt_path=str(run.last_checkpoint) if resume else None)
    except SystemExit:  # Lightning's answer to Ctrl+C, after its own clean-up
        if not trainer.interrupted:
            raise
        where = f"'{run.last_checkpoint}'" if run.last_checkpoint.is_file() else "no checkpoint yet: start it again"
        raise TrainingInterrupted(f"training interrupted at epoch {trainer.current_epoch}; the last checkpoint is {where}. Continue with: "
                                  f"tgatunet train --config {config_file or 'CONFIG'} --run-dir {run.root} --resume "
                                  "(in Python resume=True).") from None
    finally:
        if writer:  # what this training wrote, for --overwrite to delete later (also after a crash)
            run.note_written(run.checkpoints, run.logs)
    if plan.precision != config.performance.precision:
        log.warning("precision %s is not available on %s: trained with %s (recorded in metrics.json).",
                    config.performance.precision, trainer.strategy.root_device, plan.precision)
    if trainer.is_global_zero:
        ours.write_metrics(run, trainer, module, config, data)
        run.update_metrics("calibration", calibrate(run, data, config, torch.device(plan.device)))
        plot_loss_curves(run.logs / "csv" / "metrics.csv", run.plots / "loss_curves.png")
        run.note_written(run.plots / "loss_curves.png")
    return run


def _metric(trainer: pl.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


def _checkpoint_step(path: Path) -> int:
    return int(check_checkpoint(path).get("global_step", 0))
