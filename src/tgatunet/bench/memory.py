"""Benchmark of the memory optimizer: ``tgatunet bench memory --out DIR``.

On synthetic data made here (two sources, six channels, one needing three of
them), one training step of ``batch_size`` windows runs under Lightning:

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
with :meth:`BatchedWindowDataset.__getitems__`'s one gather per array (median of repeats).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import default_collate

from tgatunet.bench.results import write_section
from tgatunet.config import Config, config_from_dict
from tgatunet.data.prepared import BatchedWindowDataset, PreparedData, prepare_data
from tgatunet.hardware import GB
from tgatunet.predict import pick_device
from tgatunet.profiling import median_seconds, peak_memory_bytes, peak_rss_bytes
from tgatunet.train.memory_optimizer import MemoryOptimizer
from tgatunet.train.run import build_module, make_loader, quiet_trainer

log = logging.getLogger(__name__)

CHANNELS = ["a", "b", "c", "d", "e", "f"]
# The guide's medium sizes with a wider temporal graph (time_k 8): activations that need a budget.
DEFAULT_MODEL = {"hidden_channels": 64, "encoder_layers": 2, "decoder_layers": 2, "attention_heads": 2, "time_k": 8}


def synthetic_sources(folder: Path, windows: int, window_size: int, seed: int = 0) -> dict[str, Path]:
    """Write two Parquet sources with about ``windows`` training windows between them.

    ``full`` has the six channels, ``partial`` the first three and needs the rest; three
    classes, each a different rhythm; blocks of 8 windows' length.
    """
    rng = np.random.default_rng(seed)
    block_rows = 8 * window_size
    per_block = (block_rows - window_size) // (window_size // 2) + 1  # windows overlap by half
    blocks = max(10, int(np.ceil(windows / per_block / 0.75)))  # about 80% of the blocks train
    paths = {}
    t = np.arange(block_rows)
    for name, have in [("full", CHANNELS), ("partial", CHANNELS[:3])]:
        frames = []
        for b in range(blocks // 2 + 1):
            label = b % 3
            base = np.sin((0.05 + 0.07 * label) * t + rng.uniform(0, 6))
            columns = {ch: base * (1 + 0.2 * j) + 0.3 * rng.standard_normal(block_rows) for j, ch in enumerate(have)}
            frames.append(pd.DataFrame({"block": f"{name}{b}", "label": f"class{label}", **columns}))
        paths[name] = folder / f"{name}.parquet"
        pd.concat(frames, ignore_index=True).to_parquet(paths[name])
    return paths


def _config(paths: dict[str, Path], base: dict[str, Any], **keys: Any) -> Config:
    raw = {
        "common_modalities": CHANNELS[:3],
        "sources": [
            {"name": "full", "path": str(paths["full"]), "have": CHANNELS[3:]},
            {"name": "partial", "path": str(paths["partial"]), "need": CHANNELS[3:]},
        ],
        "block_col": "block",
        "label_col": "label",
        "val_fraction": 0.1,
        "test_fraction": 0.1,
        **base,
        **keys,
    }
    return config_from_dict(raw, origin="bench memory")


def measure_training(config: Config, data: PreparedData, device: torch.device, steps: int) -> dict[str, Any]:
    """Peak memory and time of ``steps`` training steps built from nothing (see the module docstring)."""
    outcome: dict[str, Any] = {}

    def fit() -> None:
        pl.seed_everything(config.seed, verbose=False)
        module = build_module(config, data)
        memory = MemoryOptimizer(config, BatchedWindowDataset(data, "train")) if config.use_memory_optimizer else None
        trainer = quiet_trainer(
            config, [memory] if memory else [], accelerator=device.type, max_steps=steps, limit_val_batches=0
        )
        trainer.fit(module, train_dataloaders=make_loader(data, "train", config, shuffle=True))
        outcome["micro_batches"] = module.micro_batches.summary()
        outcome["plan"] = memory.plan.summary() if memory else None

    start = time.perf_counter()
    rss = peak_rss_bytes(lambda: outcome.update(peak=peak_memory_bytes(fit, device)))
    outcome["seconds"] = time.perf_counter() - start
    outcome["rss_growth_gb"] = round(rss / GB, 4) if rss is not None else None
    return outcome


def data_path_timing(data: PreparedData, batch_size: int, repeats: int = 20) -> dict[str, Any]:
    """Milliseconds to fetch one training batch: per window + default collate vs one gather."""
    dataset = BatchedWindowDataset(data, "train")
    indices = np.random.default_rng(0).permutation(len(dataset))[:batch_size].tolist()
    per_item = median_seconds(lambda: default_collate([dataset[i] for i in indices]), repeats=repeats, warmup=2)
    batched = median_seconds(lambda: dataset.__getitems__(indices), repeats=repeats, warmup=2)
    return {
        "batch_size": len(indices),
        "per_window_ms": round(per_item * 1e3, 4),
        "batched_ms": round(batched * 1e3, 4),
        "speedup": round(per_item / batched, 2),
        "how": "median of 20 fetches of the same random batch from the training windows: "
        "WindowDataset.__getitem__ per window + torch default_collate, vs BatchedWindowDataset.__getitems__ "
        "(one numpy take per array)",
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
    device = device or pick_device()
    base = {
        "window_size": window_size,
        "step_size": window_size // 2,
        "batch_size": batch_size,
        "memory_target": target,
        **(model or DEFAULT_MODEL),
    }
    with tempfile.TemporaryDirectory() as folder:
        paths = synthetic_sources(Path(folder), windows=batch_size * steps, window_size=window_size)
        data = prepare_data(_config(paths, base))
        log.info("bench memory: %d training windows of %d steps on %s", len(data.windows["train"]), window_size, device)

        off = measure_training(_config(paths, base, use_memory_optimizer=False), data, device, steps)
        log.info("optimizer off: peak %.3f GB in %.0f s", off["peak"] / GB, off["seconds"])
        rows = []
        for budget in budgets_gb:
            on = measure_training(
                _config(paths, base, use_memory_optimizer=True, memory_budget_gb=budget), data, device, steps
            )
            rows.append(
                {
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
            )
            size = on["plan"]["micro_batch_size"]
            log.info("budget %g GB: micro-batches of %d, peak %.3f GB", budget, size, on["peak"] / GB)
        timing = data_path_timing(data, batch_size=64)

    # The saving is quoted where the optimizer had to act: budgets whose target the whole batch exceeds.
    needed = [r for r in rows if off["peak"] > r["target_fraction"] * r["budget_gb"] * GB]
    headline = min(needed, key=lambda r: r["saving_vs_off"]) if needed else None
    results = {
        "budgets": rows,
        "saving_vs_off": headline["saving_vs_off"] if headline else None,
        "saving_vs_off_compares": (
            f"1 - peak with the optimizer / peak without it: one training step of the same {batch_size} windows "
            f"(same data, same seed, same effective batch: the windows per optimisation step) "
            f"with use_memory_optimizer false (all {batch_size} windows at once) and with it true under the "
            f"{headline['budget_gb']} GB budget (micro-batches of {headline['chosen_batch_size']} windows, "
            "gradients accumulated). Of the budgets whose target the whole batch exceeds, this is the one with "
            "the smallest saving; every budget's saving is in budgets[].saving_vs_off."
            if headline
            else "no budget needed the optimizer: the whole batch fits every target; raise batch_size"
        ),
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
            "channels": len(CHANNELS),
            "steps": steps,
            **base,
        },
        "how": "Peak tensor memory: tgatunet.profiling.peak_memory_bytes around a whole Lightning fit of "
        f"{steps} step(s) built from nothing (module, AdamW, trainer, data loader, the optimizer's probes), on "
        f"{device}. rss_growth_gb: most resident memory above the start of the run (Linux /proc high-water "
        "mark; includes memory the allocator keeps cached). seconds: wall time of that measured run, tracker "
        "included. GB = 2**30 bytes.",
    }
    write_section(out, "memory", results)
    return results
