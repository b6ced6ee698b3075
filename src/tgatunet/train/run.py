"""Training a run end to end: data, Lightning trainer, checkpoints, logs, resume."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from tgatunet.config import Config, config_to_dict, load_config
from tgatunet.data.prepared import PreparedData, WindowDataset, prepare_data
from tgatunet.data.training_inputs import TrainingInputs, TrainingWindowDataset
from tgatunet.errors import RunError
from tgatunet.plots import plot_loss_curves
from tgatunet.rundir import RunDir
from tgatunet.train.callbacks import ThroughputMonitor
from tgatunet.train.checkpoint_io import AtomicCheckpointIO
from tgatunet.train.leakage_guard import LeakageGuard
from tgatunet.train.module import TGATUNetModule
from tgatunet.train.need_update import NeedUpdate

log = logging.getLogger(__name__)

# Keys that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"epochs", "patience", "num_workers", "accelerator", "run_dir"}


def data_info(data: PreparedData) -> dict[str, Any]:
    """What ``data.json`` records about the prepared data."""
    return {
        "channels": data.channels,
        "class_names": data.class_names,
        "source_names": data.source_names,
        "stats": data.stats.to_dict(),
        "block_splits": data.block_splits,
        "windows": {split: len(index) for split, index in data.windows.items()},
        "skipped_blocks": data.skipped_blocks,
    }


def make_loader(
    data: PreparedData, split: str, config: Config, shuffle: bool, inputs: TrainingInputs | None = None
) -> DataLoader:
    """Batches of ``split``; training windows read ``inputs`` (the need-update buffer) when given."""
    if inputs is not None and split != "train":
        raise ValueError(f"only the training split has an input buffer, not '{split}'")
    workers = config.num_workers
    return DataLoader(
        WindowDataset(data, split) if inputs is None else TrainingWindowDataset(data, inputs),
        batch_size=config.batch_size,
        shuffle=shuffle,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def build_module(config: Config, data: PreparedData) -> TGATUNetModule:
    return TGATUNetModule(
        config=config.model_dump(mode="json"),
        channels=data.channels,
        class_names=data.class_names,
        need_patterns=data.need_patterns().tolist(),
    )


def _check_resumable(saved: Config, given: Config) -> None:
    before, after = config_to_dict(saved), config_to_dict(given)
    changed = sorted(k for k in before if k not in RESUMABLE_CHANGES and before[k] != after.get(k))
    if changed:
        raise RunError(
            f"cannot resume: the config differs from the interrupted run in {changed}. "
            f"Only {sorted(RESUMABLE_CHANGES)} may change; start a new run (--overwrite or another run_dir) instead."
        )


def _prepare_run_dir(run: RunDir, config: Config, resume: bool, overwrite: bool) -> PreparedData:
    if resume:
        if not run.last_checkpoint.is_file():
            raise RunError(f"nothing to resume: '{run.last_checkpoint}' does not exist. Train without --resume.")
        _check_resumable(run.read_config(), config)
        stats, splits, _ = run.read_data()
        data = prepare_data(config, stats=stats, block_splits=splits)
        run.write_config(config)
        return data
    if run.root.exists() and any(run.root.iterdir()):
        if not overwrite:
            raise RunError(
                f"run directory '{run.root}' already holds a run. Continue it with --resume, "
                "start over with --overwrite, or set another run_dir."
            )
        shutil.rmtree(run.root)
    data = prepare_data(config)
    run.root.mkdir(parents=True, exist_ok=True)
    run.write_config(config)
    run.write_data(data_info(data))
    return data


def train(
    config_path: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    run_dir: str | Path | None = None,
    callbacks: Sequence[pl.Callback] = (),
    progress_bar: bool = True,
) -> RunDir:
    """Train the model of ``config_path``; returns the run directory.

    Args:
        resume: continue the run from its ``last.ckpt``.
        overwrite: delete an existing run in the run directory first.
        run_dir: overrides the config's ``run_dir``.
        callbacks: extra Lightning callbacks.
    """
    config_path = Path(config_path)
    config = load_config(config_path)
    run = RunDir(Path(run_dir) if run_dir else config.resolved_run_dir(config_path.stem))
    data = _prepare_run_dir(run, config, resume, overwrite)
    if len(data.windows["val"]) == 0:
        raise RunError("no validation window: raise val_fraction or mark blocks 'val' in split_col.")

    pl.seed_everything(config.seed, workers=True, verbose=False)
    module = build_module(config, data)
    throughput = ThroughputMonitor()
    guard = LeakageGuard(data)
    inputs, need_update = None, None
    if config.dynamic_need_update:
        inputs = TrainingInputs(data)
        need_update = NeedUpdate(inputs, config.need_update_every, config.need_update_start, config.batch_size)
    checkpoint = ModelCheckpoint(
        dirpath=run.checkpoints, filename="best", monitor="val/loss", mode="min", enable_version_counter=False
    )
    # A second checkpoint without a monitor: Lightning's save_last only writes when "best" improved,
    # but resuming needs the end of every epoch.
    latest = ModelCheckpoint(dirpath=run.checkpoints, filename="last", save_top_k=1, enable_version_counter=False)
    all_callbacks: list[pl.Callback] = [
        checkpoint,
        latest,
        EarlyStopping(monitor="val/loss", mode="min", patience=config.patience),
        throughput,
        guard,
        *([need_update] if need_update is not None else []),
        *callbacks,
    ]
    if progress_bar:
        all_callbacks.append(RichProgressBar())
    trainer = pl.Trainer(
        max_epochs=config.epochs,
        accelerator="gpu" if config.accelerator == "cuda" else config.accelerator,
        devices=1,
        precision=config.precision,
        gradient_clip_val=config.grad_clip,
        deterministic="warn",
        callbacks=all_callbacks,
        logger=[
            TensorBoardLogger(run.root, name="logs", version="tensorboard", default_hp_metric=False),
            CSVLogger(run.root, name="logs", version="csv"),
        ],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=run.root,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        enable_progress_bar=progress_bar,
        enable_model_summary=progress_bar,
    )
    trainer.fit(
        module,
        train_dataloaders=make_loader(data, "train", config, shuffle=True, inputs=inputs),
        val_dataloaders=make_loader(data, "val", config, shuffle=False),
        ckpt_path=str(run.last_checkpoint) if resume else None,
    )

    best = checkpoint.best_model_score
    run.update_metrics(
        "train",
        {
            **throughput.summary(),
            "epochs_completed": trainer.current_epoch,
            "best_val_loss": float(best) if best is not None else None,
            "windows": data_info(data)["windows"],
            "parameters": sum(p.numel() for p in module.model.parameters()),
            "device": str(module.device),
            "precision": config.precision,
            **({"need_update": need_update.summary()} if need_update is not None else {}),
        },
    )
    run.update_metrics("leakage_guard", guard.summary())
    plot_loss_curves(run.logs / "csv" / "metrics.csv", run.plots / "loss_curves.png")
    return run
