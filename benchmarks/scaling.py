"""How the training cost grows with the work: ``window_size``, batch size and dataset size.

Every measurement runs at the reference setting (:mod:`benchmarks.setting`: medium preset,
9 channels, fp32) with one size changed; the rest stays at the setting (window_size 128, batch
16). One **training step** is the real one, ``TGATUNetModule.training_step`` run by Lightning
(:mod:`benchmarks.training`).

* ``window_size`` and ``batch_size``: the cost of one training step on batches of the training
  split, read by the training DataLoader. **Time**: the median step of a fit (``repeats`` timed
  steps after one warm-up step, :class:`~tgatunet.train.callbacks.StepTimer`). **Peak memory**:
  :func:`benchmarks.training.peak_training_bytes` of a one-step fit of the same module:
  gradients, optimiser state, batch, activations and temporaries, not the parameters.
* ``dataset_size`` (training windows): the cost of one training epoch over the training
  DataLoader. **Time**: the median of ``epoch_repeats`` epochs of one fit after a warm-up epoch
  (:class:`benchmarks.training.EpochTimer`; one module for every size, the channels and classes
  being the same). **Peak memory**: the peak tensor memory of a one-epoch fit plus the bytes of
  the dataset's in-memory arrays (``PreparedData.values`` and ``observed``), which training holds
  all along.

The **exponent** is the least-squares slope of log(cost) against log(size) (:func:`fit_exponent`):
cost grows as size**exponent, 1 being linear.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from tgatunet.config import Config, load_config
from tgatunet.data.prepared import PreparedData, prepare_data
from tgatunet.errors import RunError
from tgatunet.profiling import peak_memory_bytes

from benchmarks.setting import SOURCES, WINDOW_SIZE, setting_keys, write_setting_data
from benchmarks.training import EpochTimer, fit, new_module, peak_training_bytes, step_timings

log = logging.getLogger(__name__)

AXES = ("window_size", "batch_size", "dataset_size")
BATCH = setting_keys()["batch_size"]
SIZE_UNITS = {"window_size": "time steps", "batch_size": "windows", "dataset_size": "training windows"}


@dataclass(frozen=True)
class ScalingSizes:
    """The sizes measured on each axis, and how often each is repeated."""

    window_sizes: Sequence[int]
    batch_sizes: Sequence[int]
    dataset_windows: Sequence[int]
    repeats: int = 3
    epoch_repeats: int = 1


def fit_exponent(sizes: Sequence[float], costs: Sequence[float]) -> tuple[float, float]:
    """``(exponent, log_factor)`` of the least-squares line log(cost) = exponent * log(size) + log_factor."""
    if len(sizes) < 2 or len(set(sizes)) < 2:
        raise ValueError("fitting an exponent needs at least two different sizes")
    exponent, log_factor = np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(costs, float)), 1)
    return float(exponent), float(log_factor)


def _accelerator(device: torch.device) -> str:
    return "cuda" if device.type == "cuda" else "cpu"


def full_batch_seconds(config: Config, data: PreparedData, steps: int, module, batch_size: int) -> float:
    """Median seconds of the timed steps whose batch was whole (an epoch's last batch may be short)."""
    timings = step_timings(config, data, steps, skip=1, module=module)
    whole = [sum(s.values()) for s, size in zip(timings["per_step"], timings["batch_sizes"]) if size == batch_size]
    return statistics.median(whole or [timings["step_seconds"]])


def _step_point(config: Config, data: PreparedData, batch_size: int, repeats: int) -> dict[str, float]:
    """Seconds and peak bytes of one training step of ``batch_size`` windows of ``data`` under ``config``."""
    if len(data.windows["train"]) < 2 * batch_size:
        raise RunError(
            f"scaling benchmark: {len(data.windows['train'])} training windows at window_size "
            f"{config.data.window_size}, fewer than two batches of {batch_size}: generate more blocks"
        )
    module = new_module(config, data)
    seconds = full_batch_seconds(config, data, repeats, module, batch_size)
    return {"seconds": seconds, "peak_bytes": peak_training_bytes(config, data, 1, module)}


def _blocks_for(train_windows: int, block_length: int, window_size: int, step_size: int) -> int:
    """Recordings per source that give about ``train_windows`` training windows (70% of the blocks train)."""
    per_block = (block_length - window_size) // step_size + 1
    return max(3, math.ceil(train_windows / (0.7 * SOURCES * per_block)))


def window_axis(folder: Path, sizes: ScalingSizes, device: torch.device) -> list[dict[str, float]]:
    """Step cost against window_size, at the setting's batch size."""
    longest = max(sizes.window_sizes)
    # Three batches' worth at the longest window, twice over: the split draws whole blocks.
    blocks = _blocks_for(6 * BATCH, 2 * longest, longest, longest // 2)
    base = load_config(write_setting_data(folder / "windows", blocks, 2 * longest, accelerator=_accelerator(device)))
    points = []
    for T in sorted(sizes.window_sizes):
        config = base.with_keys(window_size=T, step_size=T // 2)
        points.append({"size": T, **_step_point(config, prepare_data(config), BATCH, sizes.repeats)})
        log.info("scaling: window_size %d: %.1f ms per step", T, 1e3 * points[-1]["seconds"])
    return points


def batch_axis(folder: Path, sizes: ScalingSizes, device: torch.device) -> list[dict[str, float]]:
    """Step cost against batch size, at the setting's window_size."""
    step = setting_keys()["step_size"]
    blocks = _blocks_for(3 * max(sizes.batch_sizes), 4 * WINDOW_SIZE, WINDOW_SIZE, step)
    path = write_setting_data(folder / "batches", blocks, 4 * WINDOW_SIZE, accelerator=_accelerator(device))
    config = load_config(path)
    data = prepare_data(config)  # the batch size does not change the prepared windows
    points = []
    for B in sorted(sizes.batch_sizes):
        points.append({"size": B, **_step_point(config.with_keys(batch_size=B), data, B, sizes.repeats)})
        log.info("scaling: batch %d: %.1f ms per step", B, 1e3 * points[-1]["seconds"])
    return points


def _datasets(folder: Path, sizes: ScalingSizes, device: torch.device) -> list[tuple[Config, PreparedData]]:
    """One synthetic dataset per size of the dataset axis, with distinct training window counts."""
    step = setting_keys()["step_size"]
    datasets = []
    for target in sorted(sizes.dataset_windows):
        blocks = _blocks_for(target, 4 * WINDOW_SIZE, WINDOW_SIZE, step)
        path = write_setting_data(folder / f"windows_{target}", blocks, 4 * WINDOW_SIZE, accelerator=_accelerator(device))
        config = load_config(path)
        datasets.append((config, prepare_data(config)))
    counts = [len(data.windows["train"]) for _, data in datasets]
    if len(set(counts)) < len(counts):
        raise ValueError(
            f"dataset sizes {list(sizes.dataset_windows)} give {counts} training windows: some coincide; "
            "choose sizes further apart"
        )
    return datasets


def dataset_axis(folder: Path, sizes: ScalingSizes, device: torch.device) -> list[dict[str, float]]:
    """Epoch cost against the number of training windows."""
    datasets = _datasets(folder, sizes, device)
    module = new_module(*datasets[0])  # same channels and classes at every size
    points = []
    for config, data in datasets:
        timer = EpochTimer()
        fit(config, data, epochs=1 + sizes.epoch_repeats, callbacks=[timer], module=module)
        seconds = statistics.median(timer.seconds[1:])  # the first epoch warms up
        data_bytes = data.values.nbytes + data.observed.nbytes
        peak = peak_memory_bytes(lambda: fit(config, data, epochs=1, module=module), device)
        points.append(
            {
                "size": len(data.windows["train"]),
                "seconds": seconds,
                "peak_bytes": peak + data_bytes,
                "epoch_peak_bytes": peak,
                "data_bytes": data_bytes,
            }
        )
        log.info("scaling: %d training windows: %.2f s per epoch", points[-1]["size"], seconds)
    return points


COSTS = {
    "window_size": f"one training step (batch {BATCH})",
    "batch_size": f"one training step (window_size {WINDOW_SIZE})",
    "dataset_size": f"one training epoch (batch {BATCH}, window_size {WINDOW_SIZE})",
}
MEMORY = {
    "window_size": "peak tensor memory of the step",
    "batch_size": "peak tensor memory of the step",
    "dataset_size": "peak tensor memory of the epoch + the dataset's in-memory (host) arrays",
}


def summarise(axis: str, points: list[dict[str, float]]) -> dict[str, Any]:
    """An axis's points with the fitted time and memory exponents."""
    sizes = [p["size"] for p in points]
    time_exponent, _ = fit_exponent(sizes, [p["seconds"] for p in points])
    memory_exponent, _ = fit_exponent(sizes, [p["peak_bytes"] for p in points])
    return {
        "time_exponent": time_exponent,
        "memory_exponent": memory_exponent,
        "cost": COSTS[axis],
        "memory": MEMORY[axis],
        "points": points,
        "units": {
            "size": SIZE_UNITS[axis],
            "seconds": "s",
            "peak_bytes": "bytes",
            "epoch_peak_bytes": "bytes",
            "data_bytes": "bytes",
            "time_exponent": "dimensionless: seconds ~ size**time_exponent",
            "memory_exponent": "dimensionless: peak_bytes ~ size**memory_exponent",
        },
    }


def plot_axis(axis: str, summary: dict[str, Any], path: Path) -> Path:
    """Time and peak memory against size, log-log, each with its fitted line and exponent."""
    points = summary["points"]
    sizes = np.array([p["size"] for p in points], float)
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    panels = [
        (axes[0], [p["seconds"] for p in points], f"time of {summary['cost']}", "seconds"),
        (axes[1], [p["peak_bytes"] / 2**20 for p in points], summary["memory"], "MiB"),
    ]
    for ax, costs, what, unit in panels:
        exponent, log_factor = fit_exponent(sizes, costs)
        ax.plot(sizes, costs, "o", label="measured")
        ax.plot(sizes, np.exp(log_factor) * sizes**exponent, "--", label=f"least-squares fit: size^{exponent:.2f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # only the measured sizes are labelled
        ax.set_xticks(sizes, [str(int(s)) for s in sizes])
        ax.set_xlabel(f"{axis} ({SIZE_UNITS[axis]})")
        ax.set_ylabel(unit)
        ax.set_title(f"{what}\nexponent {exponent:.2f}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"scaling with {axis} (log-log)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


METHOD = (
    "Reference setting (medium preset, 9 channels, fp32) with one size changed. Step axes (window_size, "
    "batch_size): the real TGATUNetModule training step run by Lightning (quiet_trainer.fit) on the training "
    "DataLoader; time = StepTimer's median of the timed steps with a whole batch, after one warm-up step; memory = "
    "profiling.peak_memory_bytes of a one-step fit of the same module (gradients, optimiser state, batch, "
    "activations, temporaries; not the parameters). dataset_size: epochs of one fit over the training DataLoader; "
    "time = median epoch after a warm-up epoch; memory = peak tensor memory of a one-epoch fit + bytes of the "
    "in-memory dataset arrays. Exponent: least-squares slope of log(cost) against log(size)."
)
MEASURE = {"window_size": window_axis, "batch_size": batch_axis, "dataset_size": dataset_axis}


def measure_scaling(out_dir: Path, work_dir: Path, sizes: ScalingSizes, device: torch.device) -> dict[str, Any]:
    """Measure every axis, draw ``out_dir/scaling_<axis>.png``; returns the ``scaling`` section."""
    section: dict[str, Any] = {}
    for axis in AXES:
        summary = summarise(axis, MEASURE[axis](work_dir, sizes, device))
        summary["plot"] = str(plot_axis(axis, summary, Path(out_dir) / f"scaling_{axis}.png"))
        section[axis] = summary
    section["method"] = METHOD
    section["device"] = str(device)
    return section
