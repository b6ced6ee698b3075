"""Lightning callbacks of our own; each has one concern."""

from __future__ import annotations

import statistics
import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import RichProgressBar


class ThroughputMonitor(pl.Callback):
    """Measures training throughput: windows per second over training batches only (no validation), all ranks together."""

    def __init__(self) -> None:
        self.windows = 0
        self.seconds = 0.0
        self.epochs = 0
        self._mark = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # Batch to batch, so data loading counts and the validation loop (run before on_train_epoch_end) does not.
        now = time.perf_counter()
        self.seconds += now - self._mark
        self._mark = now
        # Every rank steps through a batch of the same size (the distributed sampler pads the
        # shards to equal length), so all ranks together processed world_size times this one's.
        self.windows += len(batch["index"]) * trainer.world_size
        pl_module.log("perf/windows_per_s", self.windows_per_second, prog_bar=True, on_step=True, on_epoch=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs += 1
        rate = 60.0 * self.epochs / self.seconds if self.seconds else 0.0
        pl_module.log("perf/epochs_per_min", rate, sync_dist=True)  # the mean over DDP ranks

    @property
    def windows_per_second(self) -> float:
        return self.windows / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, float]:
        per_minute = round(60.0 * self.epochs / self.seconds, 3) if self.seconds else 0.0
        return {"windows_per_second": round(self.windows_per_second, 2), "train_seconds": round(self.seconds, 2),
                "epochs_timed": self.epochs, "epochs_per_minute": per_minute}


class StepTimer(pl.Callback):
    """Times each phase of the real training step through Lightning's hooks (for ``tgatunet bench``).

    Phases of one step, in seconds: ``data`` (from the end of the previous step to the start of this one: fetching and
    moving the batch), ``forward`` (hiding, graph, forward pass and loss, up to the backward pass), ``backward``,
    ``optimizer`` (clipping, the optimiser step, logging). With micro-batches a step has several forward and backward
    phases; they add up. On CUDA every mark waits for the device (which slows the step a little: use it to measure,
    not to train). ``skip``: first steps left out (warm-up: allocator, kernel selection, compilation).
    """

    PHASES = ("data", "forward", "backward", "optimizer")

    def __init__(self, skip: int = 2) -> None:
        self.skip = skip
        self.steps: list[dict[str, float]] = []
        self.batch_sizes: list[int] = []
        self._mark: float | None = None
        self._current: dict[str, float] = {}

    def _lap(self, pl_module: pl.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        lap, self._mark = now - (self._mark if self._mark is not None else now), now
        return lap

    def _add(self, phase: str, pl_module: pl.LightningModule) -> None:
        self._current[phase] = self._current.get(phase, 0.0) + self._lap(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._current = {}
        self._add("data", pl_module)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._add("forward", pl_module)

    def on_after_backward(self, trainer, pl_module) -> None:
        self._add("backward", pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._add("optimizer", pl_module)
        if batch_idx >= self.skip:
            self.steps.append({phase: self._current.get(phase, 0.0) for phase in self.PHASES})
            self.batch_sizes.append(len(batch["index"]))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._mark = None  # validation between epochs is not data loading: start counting here
        self._lap(pl_module)

    def summary(self) -> dict[str, Any]:
        """Median seconds per phase, their sum (the step), each phase's share of it, windows per second."""
        if not self.steps:
            return {"steps": 0}
        median = {phase: statistics.median(s[phase] for s in self.steps) for phase in self.PHASES}
        step = sum(median.values())  # the typical step, phase by phase: its shares add up to 1
        return {"steps": len(self.steps), "step_seconds": step, "phase_seconds": median,
                "share": {phase: value / step if step else 0.0 for phase, value in median.items()},
                "windows_per_second": statistics.median(self.batch_sizes) / step if step else 0.0}


class ProgressBar(RichProgressBar):
    """Lightning's rich bar, labelled with the step budget when training has no epoch count (``epochs: auto``).

    Lightning writes ``Epoch e/max_epochs - 1``, which reads ``Epoch 12/-2`` for an unbounded run.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch} (step {trainer.global_step}/{trainer.max_steps})"
        return f"{description:{len(self.validation_description)}}"
