"""Training and inference at the reference setting: throughput, peak memory, memory use, accelerator use.

The setting is :mod:`benchmarks.setting` (medium preset, window_size 128,
9 channels, fp32) on synthetic data. How each figure is measured:

* **training throughput**: the real :func:`tgatunet.train.run.train`
  (Lightning, validation, checkpoints) for ``epochs`` epochs; ``samples_per_second``
  and ``epochs_per_minute`` are :class:`~tgatunet.train.callbacks.ThroughputMonitor`'s:
  training batches only, batch to batch (data loading included, validation
  not), over all epochs (the first step's warm-up included).
* **memory use % and accelerator utilisation in training**:
  :class:`~tgatunet.train.monitor.ResourceMonitor`'s samples during that run
  (every 10 steps and at the end): the peak of the training device's memory in
  use (the GPU's on CUDA, the machine's RAM on CPU, every process counted) and
  the mean GPU utilisation (NVML).
* **peak training memory**: :func:`benchmarks.memory.measure_training`:
  :func:`~tgatunet.profiling.peak_memory_bytes` around a Lightning fit of
  ``steps`` steps built from nothing (module, AdamW, trainer, loader): parameters,
  gradients, optimiser state, batches and activations all count.
* **inference throughput**: the trained run loaded by
  :func:`~tgatunet.evaluate.trained_run.load_run`; its model's ``predict_windows`` over
  every window of the run's data in batches of the setting's batch size (outputs
  back on the CPU, as ``tgatunet complete`` does); the median time of
  ``repeats`` passes after a warm-up pass (:func:`~tgatunet.profiling.median_seconds`).
* **peak inference memory**: ``peak_memory_bytes`` of loading the run and
  running one batch through ``predict_windows``: parameters plus one batch's
  activations and outputs.
* **memory use % and accelerator utilisation in inference**: one
  :meth:`ResourceMonitor.sample` right after the timed passes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from tgatunet.evaluate.trained_run import TrainedRun, load_run
from tgatunet.config import load_config
from tgatunet.data.prepared import WindowIndex, prepare_data
from tgatunet.hardware import GB
from tgatunet.profiling import median_seconds, peak_memory_bytes
from tgatunet.train.monitor import ResourceMonitor
from tgatunet.train.run import train
from tgatunet.infer.rundir import RunDir

from benchmarks.memory import measure_training
from benchmarks.setting import describe

NO_GPU = "no GPU"
NO_NVML = "GPU utilisation not readable (NVML): install nvidia-ml-py (pip install tgatunet[gpu])"


def training_throughput(config_path: Path, run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train ``config_path`` into ``run_dir``; the run's ``train`` and ``memory`` (monitor) metrics."""
    run = train(config_path, overwrite=True, run_dir=run_dir, progress_bar=False)
    metrics = run.read_metrics()
    return metrics["train"], metrics["memory"]


def peak_training_bytes(config_path: Path, device: torch.device, steps: int = 2) -> int:
    """Peak tensor bytes of a training run of ``steps`` steps built from nothing."""
    config = load_config(config_path)
    return int(measure_training(config, prepare_data(config), device, steps)["peak"])


def all_windows(trained: TrainedRun) -> tuple[torch.Tensor, torch.Tensor]:
    """``values, visible [W, T, C]`` of every window of the run's data, splits in order."""
    return trained.data.gather(WindowIndex.concat(list(trained.data.windows.values())))


def inference_throughput(
    trained: TrainedRun, values: torch.Tensor, visible: torch.Tensor, repeats: int, device: torch.device
) -> dict[str, Any]:
    """Windows/s and batches/s of ``predict_windows`` over ``values, visible [W, T, C]``, and a resource sample after."""
    batch = trained.config.training.batch_size
    seconds = median_seconds(
        lambda: trained.model.predict_windows(values, visible, batch), repeats=repeats, warmup=1, device=device
    )
    sample = ResourceMonitor().sample(device)
    batches = math.ceil(len(values) / batch)
    return {
        "windows_per_second": len(values) / seconds,
        "batches_per_second": batches / seconds,
        "seconds_per_pass": seconds,
        "windows": len(values),
        "batches": batches,
        "batch_size": batch,
        "repeats": repeats,
        "sample": sample,
    }


def peak_inference_bytes(run_dir: Path, values: torch.Tensor, visible: torch.Tensor, device: torch.device) -> int:
    """Peak tensor bytes of loading the trained run and running ``values, visible [B, T, C]`` as one batch."""

    def load_and_predict() -> None:
        load_run(RunDir(run_dir), device).model.predict_windows(values, visible, len(values))

    return peak_memory_bytes(load_and_predict, device)


def _device_memory_percent(figures: dict[str, Any], cuda: bool, peak: bool) -> float | None:
    if cuda:
        return figures.get("peak_cuda_memory_percent" if peak else "cuda_memory_percent")
    return figures.get("peak_system_memory_percent" if peak else "system_memory_percent")


TRAIN_UNITS = {
    "samples_per_second": "training windows/s",
    "epochs_per_minute": "epochs/min",
    "train_seconds": "s",
    "windows": "windows per split",
}
INFER_UNITS = {
    "windows_per_second": "windows/s",
    "batches_per_second": "batches/s",
    "seconds_per_pass": "s",
    **{f"latency_ms_{p}{c}": "ms" for p in ("p50", "p95") for c in ("", "_compiled")},
}
METHOD = {
    "train": "tgatunet.train.run.train on synthetic data at the setting; ThroughputMonitor: training batches only "
    "(batch to batch, data loading included, validation not), all epochs",
    "infer": "evaluate.trained_run.load_run + model.predict_windows over every window of the run's data in batches of "
    "batch_size, outputs copied to the CPU; profiling.median_seconds of the passes after a warm-up pass",
    "peak_memory_gb": "profiling.peak_memory_bytes (CPU: every tensor storage followed from creation to release; "
    "CUDA: the allocator's peak). train: a Lightning fit of 2 steps built from nothing "
    "(benchmarks.memory.measure_training: parameters, gradients, AdamW state, batches, activations); "
    "infer: evaluate.trained_run.load_run + predict_windows of one batch (parameters, activations, outputs)",
    "memory_use_percent": "train: peak of ResourceMonitor's samples during the training run (every 10 steps and at "
    "the end); infer: ResourceMonitor.sample right after the timed inference passes; host_*: the machine's RAM in "
    "use (psutil)",
    "accelerator_utilization_percent": "torch.cuda.utilization (NVML): train = mean of ResourceMonitor's samples "
    "during the training run; infer = one sample right after the timed inference passes; null with the reason "
    "where there is no GPU or NVML cannot be read",
}


def train_section(metrics: dict[str, Any], setting: dict[str, Any]) -> dict[str, Any]:
    keys = {"samples_per_second": "windows_per_second", "epochs_per_minute": "epochs_per_minute",
            "epochs": "epochs_timed", "train_seconds": "train_seconds", "windows": "windows",
            "parameters": "parameters", "device": "device"}  # fmt: skip
    figures = {ours: metrics[theirs] for ours, theirs in keys.items()}
    return {**figures, "setting": setting, "units": TRAIN_UNITS, "method": METHOD["train"]}


def use_sections(monitor: dict[str, Any], sample: dict[str, Any], cuda: bool) -> dict[str, dict]:
    """The sections ``memory_use_percent`` and ``accelerator_utilization_percent``."""

    def reason(value: float | None) -> str | None:
        return None if value is not None else (NO_NVML if cuda else NO_GPU)

    train_util, infer_util = monitor.get("mean_gpu_utilization_percent"), sample.get("gpu_utilization_percent")
    return {
        "memory_use_percent": {
            "train": _device_memory_percent(monitor, cuda, peak=True),
            "infer": _device_memory_percent(sample, cuda, peak=False),
            "host_train": monitor.get("peak_system_memory_percent"),
            "host_infer": sample.get("system_memory_percent"),
            "of": "GPU memory in use (torch.cuda.mem_get_info, every process)" if cuda
            else "host RAM in use (psutil.virtual_memory, every process on the machine)",
            "units": {k: "%" for k in ("train", "infer", "host_train", "host_infer")},
            "method": METHOD["memory_use_percent"],
        },
        "accelerator_utilization_percent": {
            "train": train_util,
            "train_reason": reason(train_util),
            "infer": infer_util,
            "infer_reason": reason(infer_util),
            "units": {"train": "%", "infer": "%"},
            "method": METHOD["accelerator_utilization_percent"],
        },
    }


def measure_runtime(config_path: Path, run_dir: Path, infer_repeats: int, device: torch.device) -> dict[str, dict]:
    """Every figure of the module docstring; returns the sections ``train``, ``infer``, ``peak_memory_gb``,
    ``memory_use_percent`` and ``accelerator_utilization_percent``."""
    setting = describe()
    train_metrics, monitor = training_throughput(config_path, run_dir)
    peak_train = peak_training_bytes(config_path, device)
    trained = load_run(RunDir(run_dir), device)
    values, visible = all_windows(trained)
    infer = inference_throughput(trained, values, visible, infer_repeats, device)
    sample = infer.pop("sample")
    size = trained.config.training.batch_size
    peak_infer = peak_inference_bytes(run_dir, values[:size], visible[:size], device)
    return {
        "train": train_section(train_metrics, setting),
        "infer": {**infer, "device": str(device), "setting": setting, "units": INFER_UNITS, "method": METHOD["infer"]},
        "peak_memory_gb": {
            "train": peak_train / GB,
            "infer": peak_infer / GB,
            "device": str(device),
            "setting": setting,
            "units": {"train": "GB (2**30 bytes)", "infer": "GB (2**30 bytes)"},
            "method": METHOD["peak_memory_gb"],
        },
        **use_sections(monitor, sample, device.type == "cuda"),
    }
