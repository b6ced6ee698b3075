"""The memory optimizer: ``python performance_test.py memory [--out DIR]``.

On the reference setting's synthetic data (:mod:`benchmarks.setting`: three
sources, nine channels, each but the first lacking two), with the guide's medium
sizes, a wider temporal graph (``time_k`` 8) and no gradient checkpointing, one
training step of ``batch_size`` windows runs under Lightning:

* **off**: ``use_memory_optimizer: false``: the whole batch goes through the model at once;
* **on**, for each budget (1, 2, 4 GB): ``use_memory_optimizer: true``, ``memory_budget_gb``
  set, ``memory_target: 0.8``: the optimizer measures, chooses its micro-batch size, and the
  step runs as micro-batches with gradient accumulation.

Every run starts from nothing (module, optimiser, trainer built inside the measurement), so
its peak counts everything training allocates: parameters, gradients, AdamW's moments,
batches, activations, and, with the optimizer, its own probes.
Peak tensor memory is :func:`tgatunet.profiling.peak_memory_bytes` around that whole run (CPU:
every tensor storage followed from creation to release; CUDA: the allocator's peak).
:func:`tgatunet.profiling.peak_rss_bytes` gives the process's resident memory growth
alongside, where the system reports it (it also counts the allocator's cached pages).

The data path figure compares fetching a batch window by window plus the default collate
with :meth:`WindowDataset.__getitems__`'s one gather per array (median of repeats), the
training DataLoader's way.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from tgatunet.config import Config, load_config
from tgatunet.data.prepared import PreparedData, WindowDataset, prepare_data
from tgatunet.hardware import GB, training_device
from tgatunet.profiling import median_seconds, peak_memory_bytes, peak_rss_bytes
from tgatunet.train.memory_optimizer import MemoryOptimizer
from tgatunet.train.micro_batch import MicroBatches
from tgatunet.train.plan import build_module, measure_memory

from benchmarks.results import write_section
from benchmarks.setting import SOURCES, write_setting_data
from benchmarks.training import fit

log = logging.getLogger(__name__)

# The guide's medium sizes with a wider temporal graph (time_k 8): activations that need a budget.
DEFAULT_MODEL = {"hidden_channels": 64, "encoder_layers": 2, "decoder_layers": 2, "attention_heads": 2, "time_k": 8}


def synthetic_config(folder: Path, windows: int, keys: dict[str, Any]) -> Config:
    """The reference setting's synthetic data (:func:`benchmarks.setting.write_setting_data`) with about
    ``windows`` training windows, recordings 8 windows long; its config with ``keys`` applied."""
    window_size = keys["window_size"]
    block_rows = 8 * window_size
    per_block = (block_rows - window_size) // (window_size // 2) + 1  # windows overlap by half
    blocks = max(4, math.ceil(windows / per_block / 0.75 / SOURCES))  # about 80% of the blocks train
    return load_config(write_setting_data(folder, blocks, block_rows, **keys))


def measure_training(config: Config, data: PreparedData, device: torch.device, steps: int) -> dict[str, Any]:
    """Peak memory and time of ``steps`` training steps built from nothing (see the module docstring)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        # As a training resolves it (tgatunet.train.plan): the memory plan measured first, the module built with its
        # micro-batches, the optimizer lowering them while memory crosses the target.
        target = training_device(config.performance.accelerator)
        plan = measure_memory(config, data, target, config.performance.precision) if config.performance.use_memory_optimizer else None
        micro = MicroBatches(plan.micro_batch_size, recover_out_of_memory=True) if plan else MicroBatches()
        torch.manual_seed(config.training.seed)
        module = build_module(config, data, target.kind, micro_batches=micro).to(target.torch_device)
        module = fit(config, data, steps, [MemoryOptimizer(plan)] if plan else [], module=module)
        outcome["micro_batches"] = module.micro_batches.summary()
        outcome["plan"] = plan.summary() if plan else None

    start = time.perf_counter()
    rss = peak_rss_bytes(lambda: outcome.update(peak=peak_memory_bytes(run, device)))
    outcome["seconds"] = time.perf_counter() - start
    outcome["rss_growth_gb"] = round(rss / GB, 4) if rss is not None else None
    return outcome


def data_path_timing(data: PreparedData, batch_size: int, repeats: int = 20) -> dict[str, Any]:
    """Milliseconds to fetch one training batch: per window + default collate vs one gather."""
    dataset = WindowDataset(data, "train")
    indices = np.random.default_rng(0).permutation(len(dataset))[:batch_size].tolist()
    per_item = median_seconds(lambda: default_collate([dataset[i] for i in indices]), repeats=repeats, warmup=2)
    batched = median_seconds(lambda: dataset.__getitems__(indices), repeats=repeats, warmup=2)
    return {
        "batch_size": len(indices),
        "per_window_ms": round(per_item * 1e3, 4),
        "batched_ms": round(batched * 1e3, 4),
        "speedup": round(per_item / batched, 2),
        "how": "median of 20 fetches of the same random batch from the training windows: "
        "WindowDataset.__getitem__ per window + torch default_collate, vs WindowDataset.__getitems__ "
        "(one numpy take per array)",
    }


def budget_row(budget: float, target: float, on: dict[str, Any], off: dict[str, Any]) -> dict[str, Any]:
    """One budget's figures: the micro-batch the optimizer chose, its peak, the saving against no optimizer."""
    return {
        "budget_gb": budget,
        "target_fraction": target,
        "chosen_batch_size": on["plan"]["micro_batch_size"],
        "peak_gb": round(on["peak"] / GB, 4),
        "within_target": on["peak"] <= target * budget * GB,
        "saving_vs_off": round(1 - on["peak"] / off["peak"], 4),
        "rss_growth_gb": on["rss_growth_gb"],
        "seconds": round(on["seconds"], 2),
        "plan": on["plan"],
        "micro_batches": on["micro_batches"],
    }


def saving_figures(rows: list[dict[str, Any]], off: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """The headline saving and what it compares: quoted where the optimizer had to act, i.e. under the
    budgets whose target the whole batch exceeds; of those, the smallest saving."""
    needed = [r for r in rows if off["peak"] > r["target_fraction"] * r["budget_gb"] * GB]
    headline = min(needed, key=lambda r: r["saving_vs_off"]) if needed else None
    if headline is None:
        return {
            "saving_vs_off": None,
            "saving_vs_off_compares": "no budget needed the optimizer: the whole batch fits every target; raise batch_size",
        }
    return {
        "saving_vs_off": headline["saving_vs_off"],
        "saving_vs_off_compares": (
            f"1 - peak with the optimizer / peak without it: one training step of the same {batch_size} windows "
            f"(same data, same seed, same effective batch: the windows per optimisation step) "
            f"with use_memory_optimizer false (all {batch_size} windows at once) and with it true under the "
            f"{headline['budget_gb']} GB budget (micro-batches of {headline['chosen_batch_size']} windows, "
            "gradients accumulated). Of the budgets whose target the whole batch exceeds, this is the one with "
            "the smallest saving; every budget's saving is in budgets[].saving_vs_off."
        ),
    }


def run_memory_benchmark(
    out: Path,
    budgets_gb: Sequence[float] = (1.0, 2.0, 4.0),
    batch_size: int = 2048,
    window_size: int = 128,
    model: dict[str, Any] | None = None,
    target: float = 0.8,
    steps: int = 1,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Run the benchmark and write the ``memory`` section of ``out/results.json``.

    ``device``: where to train; None picks CUDA when it is there, else the CPU.
    """
    device = device or training_device("auto").torch_device
    keys = {
        "accelerator": "cuda" if device.type == "cuda" else "cpu",
        "window_size": window_size,
        "step_size": window_size // 2,
        "batch_size": batch_size,
        "memory_target": target,
        "val_fraction": 0.1,
        "test_fraction": 0.1,
        "use_gradient_checkpoint": False,  # the optimizer alone: the preset's checkpointing is measured elsewhere
        **(model or DEFAULT_MODEL),
    }
    with tempfile.TemporaryDirectory() as folder:
        config = synthetic_config(Path(folder), batch_size * steps, keys)
        data = prepare_data(config)
        log.info("memory: %d training windows of %d steps on %s", len(data.windows["train"]), window_size, device)
        off = measure_training(config.with_keys(use_memory_optimizer=False), data, device, steps)
        rows = []
        for budget in budgets_gb:
            on_config = config.with_keys(use_memory_optimizer=True, memory_budget_gb=budget)
            rows.append(budget_row(budget, target, measure_training(on_config, data, device, steps), off))
            log.info("budget %g GB: micro-batches of %d, peak %.3f GB", budget, rows[-1]["chosen_batch_size"], rows[-1]["peak_gb"])
        timing = data_path_timing(data, batch_size=64)
    results = {
        "budgets": rows,
        **saving_figures(rows, off, batch_size),
        "off": {
            "batch_size": batch_size,
            "peak_gb": round(off["peak"] / GB, 4),
            "rss_growth_gb": off["rss_growth_gb"],
            "seconds": round(off["seconds"], 2),
        },
        "data_path": timing,
        "setup": {
            "device": str(device),
            "training_windows": len(data.windows["train"]),
            "channels": len(data.channels),
            "data": "benchmarks.setting (tgatunet.data.synth)",
            "steps": steps,
            **keys,
        },
        "how": HOW.format(steps=steps, device=device),
    }
    write_section(out, "memory", results)
    return results


HOW = (
    "Peak tensor memory: tgatunet.profiling.peak_memory_bytes around a whole Lightning fit of {steps} step(s) of the "
    "real training step, built from nothing (module, AdamW, trainer, data loader, the optimizer's probes), on "
    "{device}. rss_growth_gb: most resident memory above the start of the run (Linux /proc high-water mark; "
    "includes memory the allocator keeps cached). seconds: wall time of that measured run, tracker included. "
    "GB = 2**30 bytes."
)
