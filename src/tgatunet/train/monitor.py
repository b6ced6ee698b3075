"""Live monitoring of memory and accelerator use during training (a Lightning callback)."""

from __future__ import annotations

import logging
import os
import statistics
import sys

import lightning.pytorch as pl
import psutil
import torch

from tgatunet.hardware import GB

log = logging.getLogger(__name__)

BUSY_TARGET = 70.0  # percent of an epoch the accelerator should be busy, at least


class ResourceMonitor(pl.Callback):
    """Samples memory and GPU use every ``every_n_steps`` training steps.

    Figures (logged to every logger of the trainer under ``monitor/``):

    * ``rss_gb``: resident memory of this process;
    * ``system_memory_percent``: memory in use on the whole machine;
    * on CUDA: ``cuda_allocated_gb`` and ``cuda_reserved_gb`` (tensors, and what the caching allocator holds),
      ``cuda_peak_gb`` (most allocated since training started, exact: from the allocator's statistics),
      ``cuda_memory_percent`` (the device's memory in use, every process), and ``gpu_utilization_percent`` (NVML, when
      ``nvidia-ml-py`` is installed: ``pip install tgatunet[gpu]``).

    Memory (and GPU use) also show in the progress bar. A warning is logged the first time the machine's or the GPU's
    memory in use crosses ``target`` (the guide: stay below 80%). :meth:`summary` gives peaks and means for
    ``metrics.json``. ``every_n_steps`` defaults to the trainer's ``log_every_n_steps``.
    """

    def __init__(self, every_n_steps: int | None = None, target: float = 0.8) -> None:
        self.every_n_steps = every_n_steps
        self.target = target
        self.samples: list[dict[str, float]] = []
        self._batches = 0
        self._nvml = True
        self._warned = False
        self._epoch_busy: list[float] = []
        self._warned_idle = False
        self._process = psutil.Process(os.getpid())

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_steps is None:
            self.every_n_steps = trainer.log_every_n_steps
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def sample(self, device: torch.device) -> dict[str, float]:
        """Read the figures now."""
        figures = {"rss_gb": self._process.memory_info().rss / GB, "system_memory_percent": psutil.virtual_memory().percent}
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            figures.update(cuda_allocated_gb=torch.cuda.memory_allocated(device) / GB, cuda_reserved_gb=torch.cuda.memory_reserved(device) / GB,
                           cuda_peak_gb=torch.cuda.max_memory_allocated(device) / GB, cuda_memory_percent=100.0 * (total - free) / total)

            if self._nvml:
                try:
                    figures["gpu_utilization_percent"] = float(torch.cuda.utilization(device))
                except Exception as err:  # no nvidia-ml-py, or NVML's own error classes
                    self._nvml = False
                    log.info("GPU utilisation is not monitored (%s); install it with: pip install tgatunet[gpu]", err)
        return figures

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        self._batches += 1
        if (self._batches - 1) % self.every_n_steps:
            return
        figures = self.sample(pl_module.device)
        self.samples.append(figures)
        if "gpu_utilization_percent" in figures:
            self._epoch_busy.append(figures["gpu_utilization_percent"])
        for logger in trainer.loggers:
            logger.log_metrics({f"monitor/{k}": v for k, v in figures.items()}, step=trainer.global_step)
        bar = {"mem_gb": figures.get("cuda_reserved_gb", figures["rss_gb"])}
        if "gpu_utilization_percent" in figures:
            bar["gpu_%"] = figures["gpu_utilization_percent"]
        pl_module.log_dict(bar, prog_bar=True, logger=False, on_step=True, on_epoch=False)
        self._warn_above_target(figures)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        busy, self._epoch_busy = self._epoch_busy, []
        if busy and not self._warned_idle and statistics.fmean(busy) < BUSY_TARGET:
            self._warned_idle = True
            log.warning("the GPU was busy %.0f%% of this training epoch (the target is 70-90%%): it waits for the host. Raise "
                        "batch_size (or set batch_size: auto), or set compile: true (CUDA graphs for the training step).",
                        statistics.fmean(busy))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A last sample, so that the run's peaks include its final steps.
        self.samples.append(self.sample(pl_module.device))
        log.info("resources: %s", ", ".join(f"{k} {v}" for k, v in self.summary().items()))

    def _warn_above_target(self, figures: dict[str, float]) -> None:
        if self._warned:
            return
        for key in ("system_memory_percent", "cuda_memory_percent"):
            if figures.get(key, 0.0) > 100 * self.target:
                self._warned = True
                log.warning("%s is %.0f%%, above the %.0f%% target: lower batch_size or set use_memory_optimizer: true",
                            key.replace("_", " "), figures[key], 100 * self.target)

    def summary(self) -> dict[str, float | int | None]:
        """Peaks and means of the samples, plus the process's peak resident memory since it started."""
        if not self.samples:
            return {"samples": 0}

        def column(key: str) -> list[float]:
            return [s[key] for s in self.samples if key in s]

        system = column("system_memory_percent")
        out: dict[str, float | int | None] = {"samples": len(self.samples), "every_n_steps": self.every_n_steps,
                                              "peak_rss_gb": round(max(column("rss_gb")), 4), "process_max_rss_gb": _process_max_rss_gb(),
                                              "peak_system_memory_percent": round(max(system), 2),
                                              "mean_system_memory_percent": round(statistics.fmean(system), 2)}
        if column("cuda_peak_gb"):
            out["cuda_peak_allocated_gb"] = round(max(column("cuda_peak_gb")), 4)
            out["cuda_peak_reserved_gb"] = round(max(column("cuda_reserved_gb")), 4)
            out["peak_cuda_memory_percent"] = round(max(column("cuda_memory_percent")), 2)
        if column("gpu_utilization_percent"):
            out["mean_gpu_utilization_percent"] = round(statistics.fmean(column("gpu_utilization_percent")), 2)
        return out


def _process_max_rss_gb() -> float | None:
    """Peak resident memory of this process since it started (``getrusage``; None on Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / GB if sys.platform == "darwin" else peak * 1024 / GB, 4)  # bytes on macOS, KiB elsewhere
