"""``tgatunet bench scale``: memory and speed of training from the out-of-core store.

How each figure is measured:

* **Data.** Synthetic datasets from :mod:`tgatunet.data.synth` (3 Parquet
  sources, ``channels`` modalities, recordings of ``block_length`` rows) with
  1x, 2x, 4x and 8x ``base_blocks`` recordings per source, each converted into
  a store by :func:`~tgatunet.data.store.build_store`. One size is on disk at a
  time. Windows do not overlap, so an epoch reads every row of the training
  blocks once.
* **Peak RSS of an epoch.** One training epoch (the real ``train()``: Lightning,
  validation, checkpoints, run directory) in a fresh Python process per
  measurement (:mod:`tgatunet.bench.epoch_worker`): the process's resident
  memory before training plus the most it grew while training
  (:func:`~tgatunet.profiling.peak_rss_bytes`, the kernel's high-water mark).
  From the store at every size; from memory (no ``data_store``) at 1x and 8x,
  to show what the store saves. ``scale.rss_growth_8x_vs_1x`` = store peak at
  8x / store peak at 1x.
* **Throughput.** At 1x, in one process, one model and AdamW optimiser train
  on batches taken alternately from the store's loader and the in-memory
  loader (``train()``'s own loaders; the order flips every round, so both
  sources share whatever else the machine does meanwhile). Fetching a batch
  and the training step on it are timed apart; the step times of both sources
  are pooled (the same computation). ``scale.store_vs_memory_throughput`` =
  (median fetch + median step seconds per window, in memory) / (the same from
  the store). The plain windows/s of each source over the whole run is
  recorded beside it (``direct_windows_per_second_1x``); on a shared machine
  it carries the noise of everything else running.
  The store's files are in the page cache (just written): the figure is the
  cost of reading through the store, not of a disk. For scale, the loaders
  alone (no model) are timed too: what reading costs before a training step
  hides it (on a GPU, where steps are short, ``num_workers`` hides it).
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml

from tgatunet.bench.results import write_section
from tgatunet.bench.step import TrainStep, endless
from tgatunet.config import Config, load_config
from tgatunet.data.prepared import prepare_data
from tgatunet.data.store import build_store
from tgatunet.data.store_windows import store_data
from tgatunet.data.synth import SynthSpec, write_synthetic
from tgatunet.train.run import build_module, make_loader

log = logging.getLogger(__name__)

FACTORS = (1, 2, 4, 8)
WINDOW = 64
TARGETS = {"rss_growth_8x_vs_1x": "<= 1.25", "store_vs_memory_throughput": ">= 0.8"}

# One model and batch for every measurement: small, so an 8x epoch stays short on a CPU.
MODEL = {
    "batch_size": 32,
    "hidden_channels": 32,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "transformer_layers": 1,
    "attention_heads": 2,
    "epochs": 1,
    "accelerator": "cpu",
    "num_workers": 0,
}


def _dataset(folder: Path, blocks: int, channels: int, block_length: int) -> tuple[Path, Path]:
    """Write a synthetic dataset and its store; returns the configs (in memory, from the store)."""
    spec = SynthSpec(
        sources=3,
        channels=channels,
        missing_per_source=channels // 8,
        blocks_per_source=blocks,
        block_length=block_length,
        file_format="parquet",
    )
    base = yaml.safe_load(write_synthetic(spec, folder).read_text())
    base.update(MODEL, window_size=WINDOW, step_size=WINDOW)
    memory, store = folder / "memory.yaml", folder / "store.yaml"
    memory.write_text(yaml.safe_dump(base))
    store.write_text(yaml.safe_dump({**base, "data_store": "store"}))
    build_store(load_config(store), folder / "store")
    return memory, store


def _epoch(config: Path, run_dir: Path) -> dict[str, Any]:
    """One training epoch in a fresh process: its resident memory before training and at its peak."""
    done = subprocess.run(
        [sys.executable, "-m", "tgatunet.bench.epoch_worker", str(config), str(run_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark epoch of {config} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])


def _interleaved_throughput(store_config: Path, steps: int, warmup: int = 2) -> dict[str, Any]:
    """Training windows/s from the store and from memory, batches alternating (see the module docstring).

    Each step is timed in two parts, fetching the batch and the training step on it. A step
    computes the same thing whichever loader gave the batch (same model, shapes and values), so
    the step times of both are pooled: on a busy machine their spread would otherwise swamp the
    difference, which is all in the fetching. Seconds per window of a source = median fetch
    seconds per window of that source + median step seconds per window.
    """
    config = load_config(store_config)
    lazy = store_data(config)
    eager = prepare_data(config, stats=lazy.stats, block_splits=lazy.block_splits)
    pl.seed_everything(config.training.seed, verbose=False)
    step = TrainStep(build_module(config, lazy))
    batches = {
        "store": endless(make_loader(lazy, "train", config, shuffle=True)),
        "memory": endless(make_loader(eager, "train", config, shuffle=True)),
    }
    fetch: dict[str, list[float]] = {name: [] for name in batches}  # seconds per window
    compute: list[float] = []
    elapsed, windows = dict.fromkeys(batches, 0.0), dict.fromkeys(batches, 0)
    for index in range(warmup + steps):
        for name in list(batches) if index % 2 == 0 else list(reversed(batches)):
            start = time.perf_counter()
            batch = next(batches[name])
            fetched = time.perf_counter()
            step.set_batch(batch)
            step()
            done = time.perf_counter()
            if index >= warmup:
                size = len(batch["values"])
                fetch[name].append((fetched - start) / size)
                compute.append((done - fetched) / size)
                elapsed[name] += done - start
                windows[name] += size
    per_window = {name: statistics.median(fetch[name]) + statistics.median(compute) for name in batches}
    return {
        "ratio": per_window["memory"] / per_window["store"],
        "windows_per_second": {name: round(1.0 / t, 2) for name, t in per_window.items()},
        "fetch_ms_per_batch": {
            name: round(1e3 * statistics.median(t) * config.training.batch_size, 3) for name, t in fetch.items()
        },
        "step_ms_per_batch": round(1e3 * statistics.median(compute) * config.training.batch_size, 1),
        "direct_windows_per_second": {name: round(windows[name] / elapsed[name], 2) for name in batches},
        "loading_windows_per_second": _loading_throughput(config, {"store": lazy, "memory": eager}),
    }


def _loading_throughput(config: Config, data: dict[str, Any], epochs: int = 3) -> dict[str, float]:
    """Windows/s of the training loaders alone (no model): what reading costs, without the step that hides it.

    Whole epochs, the sources alternating, median over ``epochs``.
    """
    rates: dict[str, list[float]] = {name: [] for name in data}
    for _ in range(epochs):
        for name, source in data.items():
            start, count = time.perf_counter(), 0
            for batch in make_loader(source, "train", config, shuffle=True):
                count += len(batch["values"])
            rates[name].append(count / (time.perf_counter() - start))
    return {name: round(statistics.median(r), 1) for name, r in rates.items()}


def _mib(n: float) -> float:
    return round(n / 2**20, 1)


def run_scale_benchmark(
    out_dir: Path, base_blocks: int = 4, channels: int = 32, block_length: int = 2000, steps: int = 20
) -> dict[str, Any]:
    """Measure peak RSS per size and store/memory throughput; writes the ``scale`` section of ``OUT/results.json``."""
    started = time.perf_counter()
    store_rss, memory_rss, sizes, windows = {}, {}, {}, {}
    throughput: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tgatunet-scale-") as work:
        for factor in FACTORS:
            key, folder = f"{factor}x", Path(work) / f"{factor}x"
            memory_config, store_config = _dataset(folder, base_blocks * factor, channels, block_length)
            sizes[key] = _mib(sum(p.stat().st_size for p in (folder / "store").rglob("*.npy")))
            lazy = _epoch(store_config, folder / "run")
            store_rss[key], windows[key] = _mib(lazy["peak_rss_bytes"]), lazy["train_windows"]
            if factor in (FACTORS[0], FACTORS[-1]):
                memory_rss[key] = _mib(_epoch(memory_config, folder / "run")["peak_rss_bytes"])
            if factor == FACTORS[0]:
                throughput = _interleaved_throughput(store_config, steps)
            log.info("%s: store %.1f MiB, peak RSS from store %.1f MiB", key, sizes[key], store_rss[key])
            shutil.rmtree(folder)

    values = {
        "rss_growth_8x_vs_1x": round(store_rss["8x"] / store_rss["1x"], 3),
        "store_vs_memory_throughput": round(throughput["ratio"], 3),
        "rss_growth_in_memory_8x_vs_1x": round(memory_rss["8x"] / memory_rss["1x"], 3),
        "peak_rss_mib_from_store": store_rss,
        "peak_rss_mib_in_memory": memory_rss,
        "store_mib": sizes,
        "train_windows": windows,
        "windows_per_second_1x": throughput["windows_per_second"],
        "fetch_ms_per_batch_1x": throughput["fetch_ms_per_batch"],
        "step_ms_per_batch_1x": throughput["step_ms_per_batch"],
        "direct_windows_per_second_1x": throughput["direct_windows_per_second"],
        "loading_only_windows_per_second_1x": throughput["loading_windows_per_second"],
        "targets": TARGETS,
        "setup": {
            "base_blocks_per_source": base_blocks,
            "sources": 3,
            "channels": channels,
            "block_length": block_length,
            "window_size": WINDOW,
            "step_size": WINDOW,
            "throughput_steps": steps,
            **MODEL,
        },
        "method": (
            "peak RSS: one training epoch per fresh process (python -m tgatunet.bench.epoch_worker), resident "
            "memory before training + its high-water mark while training (VmHWM, reset at the start); "
            "throughput: one process, batches alternating between the store and the in-memory loader; seconds "
            "per window = median fetch (per source) + median training step (pooled), ratio memory / store"
        ),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_section(out_dir, "scale", values)
    return values
