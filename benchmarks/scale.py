"""``python performance_test.py scale``: memory and speed of training from the out-of-core store.

How each figure is measured:

* **Data.** Synthetic datasets from :mod:`tgatunet.data.synth` (3 Parquet
  sources, ``channels`` modalities, recordings of ``block_length`` rows) with
  1x, 2x, 4x and 8x ``base_blocks`` recordings per source, each converted into
  a store by :func:`~tgatunet.data.store.build_store`. One size is on disk at a
  time. Windows do not overlap, so an epoch reads every row of the training
  blocks once.
* **Peak RSS of an epoch.** One training epoch (the real ``train()``: Lightning,
  validation, checkpoints, run directory) in a fresh Python process per
  measurement (:mod:`benchmarks.epoch_worker`): the process's resident
  memory before training plus the most it grew while training
  (:func:`~tgatunet.profiling.peak_rss_bytes`, the kernel's high-water mark).
  From the store at every size; from memory (no ``data_store``) at 1x and 8x,
  to show what the store saves. ``scale.rss_growth_8x_vs_1x`` = store peak at
  8x / store peak at 1x.
* **Throughput.** At 1x, in one process, one module trains (the real step, one
  Lightning fit) on batches taken alternately from the store's loader and the
  in-memory loader (``train()``'s own loaders; the order flips every round, so
  both sources share whatever else the machine does meanwhile). Fetching a
  batch and the training step on it are timed apart (the ``data`` phase of
  :class:`~tgatunet.train.callbacks.StepTimer`, and the rest of the step); the
  step times of both sources are pooled (the same computation). ``scale.store_vs_memory_throughput`` =
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
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from benchmarks.results import write_section
from benchmarks.training import fit
from tgatunet.config import Config, load_config
from tgatunet.data.prepared import prepare_data
from tgatunet.data.store import build_store
from tgatunet.data.store_windows import store_data
from tgatunet.data.synth import SynthSpec, write_synthetic
from tgatunet.train.callbacks import StepTimer
from tgatunet.train.loaders import make_loader

# The folder that holds the benchmarks package: the worker process imports it from there.
ROOT = Path(__file__).resolve().parents[1]

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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.epoch_worker", str(config), str(run_dir)],
        capture_output=True, text=True, check=False, env=env,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark epoch of {config} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])


def endless(loader: Iterable) -> Iterator:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


class Alternating:
    """``rounds`` rounds of one batch from each named loader, the order flipping every round (a b, b a, a b, ...).

    It has a length, so Lightning fetches each batch when its step starts (no prefetching): the
    ``data`` phase of a step is the fetching of its own batch. ``names`` records, in order, the
    loader each batch came from.
    """

    def __init__(self, loaders: dict[str, Iterable], rounds: int) -> None:
        self.loaders = loaders
        self.rounds = rounds
        self.names: list[str] = []

    def __len__(self) -> int:
        return self.rounds * len(self.loaders)

    def __iter__(self) -> Iterator:
        batches = {name: endless(loader) for name, loader in self.loaders.items()}
        order = list(self.loaders)
        for index in range(self.rounds):
            for name in order if index % 2 == 0 else order[::-1]:
                self.names.append(name)
                yield next(batches[name])


def _interleaved_throughput(store_config: Path, steps: int, warmup: int = 2) -> dict[str, Any]:
    """Training windows/s from the store and from memory, batches alternating (see the module docstring).

    Each step is timed in two parts, fetching the batch (StepTimer's ``data``) and the training
    step on it (the other phases). A step computes the same thing whichever loader gave the batch
    (same model, shapes and values), so the step times of both are pooled: on a busy machine
    their spread would otherwise swamp the difference, which is all in the fetching. Seconds per
    window of a source = median fetch seconds per window of that source + median step seconds per
    window.
    """
    config = load_config(store_config)
    lazy = store_data(config)
    eager = prepare_data(config, stats=lazy.stats, block_splits=lazy.block_splits)
    loaders = {"store": make_loader(lazy, "train", config, shuffle=True), "memory": make_loader(eager, "train", config, shuffle=True)}
    batches, timer = Alternating(loaders, warmup + steps), StepTimer(skip=0)
    fit(config, lazy, len(batches), [timer], loader=batches)
    fetch: dict[str, list[float]] = {name: [] for name in loaders}  # seconds per window
    compute: list[float] = []
    elapsed, windows = dict.fromkeys(loaders, 0.0), dict.fromkeys(loaders, 0)
    timed = list(zip(batches.names, timer.steps, timer.batch_sizes))[len(loaders) * warmup :]
    for name, phases, size in timed:
        fetch[name].append(phases["data"] / size)
        compute.append((phases["forward"] + phases["backward"] + phases["optimizer"]) / size)
        elapsed[name] += sum(phases.values())
        windows[name] += size
    per_window = {name: statistics.median(fetch[name]) + statistics.median(compute) for name in loaders}
    return {
        "ratio": per_window["memory"] / per_window["store"],
        "windows_per_second": {name: round(1.0 / t, 2) for name, t in per_window.items()},
        "fetch_ms_per_batch": {
            name: round(1e3 * statistics.median(t) * config.training.batch_size, 3) for name, t in fetch.items()
        },
        "step_ms_per_batch": round(1e3 * statistics.median(compute) * config.training.batch_size, 1),
        "direct_windows_per_second": {name: round(windows[name] / elapsed[name], 2) for name in loaders},
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
            "peak RSS: one training epoch per fresh process (python -m benchmarks.epoch_worker), resident "
            "memory before training + its high-water mark while training (VmHWM, reset at the start); "
            "throughput: one process, one Lightning fit of the real training step, batches alternating between "
            "the store and the in-memory loader; StepTimer's data phase is the fetch, the other phases the step; "
            "seconds per window = median fetch (per source) + median training step (pooled), ratio memory / store"
        ),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_section(out_dir, "scale", values)
    return values
