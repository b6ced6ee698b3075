"""Lightning callbacks of our own; each has one concern."""

from __future__ import annotations

import time

import lightning.pytorch as pl


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
        # Batch to batch, so data loading counts and the validation loop (run before
        # on_train_epoch_end) does not.
        now = time.perf_counter()
        self.seconds += now - self._mark
        self._mark = now
        # Every rank steps through a batch of the same size (the distributed sampler pads the
        # shards to equal length), so all ranks together processed world_size times this one's.
        self.windows += len(batch["values"]) * trainer.world_size
        pl_module.log("perf/windows_per_s", self.windows_per_second, prog_bar=True, on_step=True, on_epoch=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs += 1
        rate = 60.0 * self.epochs / self.seconds if self.seconds else 0.0
        pl_module.log("perf/epochs_per_min", rate, sync_dist=True)  # the mean over DDP ranks

    @property
    def windows_per_second(self) -> float:
        return self.windows / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, float]:
        return {
            "windows_per_second": round(self.windows_per_second, 2),
            "train_seconds": round(self.seconds, 2),
            "epochs_timed": self.epochs,
            "epochs_per_minute": round(60.0 * self.epochs / self.seconds, 3) if self.seconds else 0.0,
        }
