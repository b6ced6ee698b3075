"""The real training step, run by Lightning: what every benchmark times, counts or profiles.

No benchmark keeps a copy of the step. A measurement is a short ``trainer.fit`` of a
:class:`~tgatunet.train.module.TGATUNetModule` on the config's own training loader, through
:func:`tgatunet.train.run.quiet_trainer` (no logs, checkpoints, progress bars or validation), so
the hiding, the graph, the forward pass and losses, the backward pass, clipping and the
optimiser step are exactly what ``tgatunet train`` runs. What is measured comes from outside:

* :class:`~tgatunet.train.callbacks.StepTimer` times the phases of each step through Lightning's
  hooks (data, forward, backward, optimizer);
* :class:`EpochTimer` times whole training epochs;
* a context around the fit counts FLOPs (``FlopCounterMode``), profiles operators
  (``torch.profiler``, stepped per batch by :class:`ProfilerSteps`) or follows peak memory
  (:func:`tgatunet.profiling.peak_memory_bytes`).

Each fit builds a new Trainer and with it a new optimiser, so a module may be fitted again and
again; the first step of every fit creates the optimiser's state, and timers leave it out.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from tgatunet.config import Config
from tgatunet.hardware import training_device
from tgatunet.profiling import peak_memory_bytes
from tgatunet.train.callbacks import StepTimer
from tgatunet.train.loaders import make_loader
from tgatunet.train.module import TGATUNetModule
from tgatunet.train.run import Data, build_module, quiet_trainer

QUIET = (".*no `val_dataloader`.*", ".*does not have many workers.*", ".*isinstance\\(treespec, LeafSpec\\).*")


def device_of(config: Config) -> torch.device:
    """Where Lightning trains ``config`` (its ``accelerator``)."""
    return training_device(config.performance.accelerator).torch_device


def new_module(config: Config, data: Data) -> TGATUNetModule:
    """The module training would build, from the config's seed, on the training device."""
    torch.manual_seed(config.training.seed)
    return build_module(config, data).to(device_of(config))


def fit(
    config: Config,
    data: Data,
    steps: int | None = None,
    callbacks: Sequence[pl.Callback] = (),
    module: TGATUNetModule | None = None,
    loader: Iterable | None = None,
    epochs: int | None = None,
) -> TGATUNetModule:
    """Train ``module`` (default: :func:`new_module`) for ``steps`` steps, or ``epochs`` epochs; returns it.

    ``loader``: the batches (default: the config's shuffled training DataLoader, as training reads it).
    """
    module = module if module is not None else new_module(config, data)
    loader = loader if loader is not None else make_loader(data, "train", config, shuffle=True)
    limits: dict[str, Any] = {"max_steps": steps} if steps is not None else {"max_epochs": epochs}
    with warnings.catch_warnings():
        # Lightning's advice is for training runs: these fits skip validation and load in-process on purpose.
        for message in QUIET:
            warnings.filterwarnings("ignore", message=message)
        quiet_trainer(config, callbacks, limit_val_batches=0, **limits).fit(module, train_dataloaders=loader)
    return module


def step_timings(
    config: Config, data: Data, steps: int, skip: int = 1, module: TGATUNetModule | None = None, loader=None
) -> dict[str, Any]:
    """:meth:`StepTimer.summary` of ``steps`` timed steps after ``skip`` warm-up steps of one fit."""
    timer = StepTimer(skip=skip)
    fit(config, data, steps + skip, [timer], module, loader)
    summary = timer.summary()
    summary["per_step"] = timer.steps
    summary["batch_sizes"] = timer.batch_sizes
    return summary


def step_seconds(config: Config, data: Data, steps: int, module: TGATUNetModule | None = None) -> float:
    """Median seconds of one training step (``steps`` timed after one warm-up step)."""
    return step_timings(config, data, steps, skip=1, module=module)["step_seconds"]


def peak_training_bytes(config: Config, data: Data, steps: int = 1, module: TGATUNetModule | None = None) -> int:
    """Peak tensor bytes of a fit of ``steps`` steps of a module built before it.

    Counted: gradients, the optimiser's state, batches, activations kept for the backward pass and
    temporaries; not the parameters, which exist before the fit.
    """
    module = module if module is not None else new_module(config, data)
    return peak_memory_bytes(lambda: fit(config, data, steps, module=module), device_of(config))


class EpochTimer(pl.Callback):
    """Wall seconds of every training epoch, start to end (validation is off in these fits)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def _now(self, pl_module: pl.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._now(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds.append(self._now(pl_module) - self._start)


class ProfilerSteps(pl.Callback):
    """Tells a ``torch.profiler.profile`` with a schedule where each training step ends."""

    def __init__(self, profiler: torch.profiler.profile) -> None:
        self.profiler = profiler

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.profiler.step()


def profile_steps(config: Config, data: Data, steps: int, module: TGATUNetModule | None = None, **options: Any):
    """``torch.profiler`` events of ``steps`` training steps of a fit, after two unprofiled warm-up steps.

    ``options``: further ``torch.profiler.profile`` arguments (e.g. ``record_shapes=True``).
    Returns the finished profiler (``key_averages()`` for the table).
    """
    schedule = torch.profiler.schedule(wait=1, warmup=1, active=steps, repeat=1)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device_of(config).type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, schedule=schedule, **options) as profiler:
        fit(config, data, steps + 2, [ProfilerSteps(profiler)], module)
    return profiler
