"""``tgatunet bench scale``: memory and speed of training from the out-of-core store.

How each figure is measured:

* **Data.** Synthetic datasets from :mod:`tgatunet.data.synth` (3 Parquet
  sources, ``channels`` modalities, recordings of ``block_length`` rows) at 1x,
  2x, 4x and 8x ``base_blocks`` recordings per source, each converted into a
  store by :func:`~tgatunet.data.store.build_store`. One size is on disk at a time.
* **Peak RSS of an epoch.** One training epoch (the real ``train()``: Lightning,
  validation, checkpoints, run directory) in a fresh Python process per
  measurement (:mod:`tgatunet.bench.epoch_worker`), whose peak resident set
  size (:func:`~tgatunet.profiling.peak_rss_bytes`, the kernel's high-water
  mark) is the figure. From the store at every size; from memory (no
  ``data_store``) at 1x and 8x, to show what the store saves. Windows do not
  overlap, so an epoch reads every row of the training blocks once.
  ``scale.rss_growth_8x_vs_1x`` = store peak at 8x / store peak at 1x.
* **Throughput.** Training windows per second (ThroughputMonitor: training
  batches, data loading included, validation excluded) of the same 1x epochs,
  from the store and from memory, same model, batch and data, store and
  memory alternating ``repeats`` times.
  ``scale.store_vs_memory_throughput`` = median over the pairs of store / memory.
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

import yaml

from tgatunet.bench.results import write_section
from tgatunet.config import load_config
from tgatunet.data.store import build_store
from tgatunet.data.synth import SynthSpec, write_synthetic

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
    """Write a synthetic dataset and its store; returns (in-memory config, store config)."""
    spec = SynthSpec(
        sources=3,
        channels=channels,
        missing_per_source=channels // 8,
        blocks_per_source=blocks,
        block_length=block_length,
        file_format="parquet",
    )
    base = yaml.safe_load(write_synthetic(spec, folder).read_text())
    # Windows that do not overlap: each row is read once per epoch, windows per row stay few.
    base.update(MODEL, window_size=WINDOW, step_size=WINDOW)
    memory, store = folder / "memory.yaml", folder / "store.yaml"
    memory.write_text(yaml.safe_dump(base))
    store.write_text(yaml.safe_dump({**base, "data_store": "store"}))
    build_store(load_config(store), folder / "store")
    return memory, store


def _epoch(config: Path, run_dir: Path) -> dict[str, Any]:
    """One training epoch in a fresh process: its peak RSS and throughput."""
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


def _mib(n: float) -> float:
    return round(n / 2**20, 1)


def run_scale_benchmark(
    out_dir: Path, base_blocks: int = 4, channels: int = 32, block_length: int = 2000, repeats: int = 3
) -> dict[str, Any]:
    """Measure peak RSS per size and store/memory throughput; writes the ``scale`` section of ``OUT/results.json``.

    At 1x, store and in-memory epochs alternate ``repeats`` times: each pair gives a throughput
    ratio, and the 1x peak RSS is the median over the repeats.
    """
    started = time.perf_counter()
    store_rss, memory_rss, sizes, windows = {}, {}, {}, {}
    store_runs, memory_runs = [], []
    with tempfile.TemporaryDirectory(prefix="tgatunet-scale-") as work:
        for factor in FACTORS:
            key, folder = f"{factor}x", Path(work) / f"{factor}x"
            memory_config, store_config = _dataset(folder, base_blocks * factor, channels, block_length)
            sizes[key] = _mib(sum(p.stat().st_size for p in (folder / "store").rglob("*.npy")))
            lazy, eager = [], []
            for _ in range(repeats if factor == 1 else 1):
                lazy.append(_epoch(store_config, folder / "run"))
                if factor in (FACTORS[0], FACTORS[-1]):
                    eager.append(_epoch(memory_config, folder / "run"))
            store_rss[key] = _mib(statistics.median(r["peak_rss_bytes"] for r in lazy))
            if eager:
                memory_rss[key] = _mib(statistics.median(r["peak_rss_bytes"] for r in eager))
            if factor == 1:
                store_runs, memory_runs = lazy, eager
            windows[key] = lazy[0]["train_windows"]
            log.info("%s: store %.1f MiB, peak RSS from store %.1f MiB", key, sizes[key], store_rss[key])
            shutil.rmtree(folder)

    ratios = [a["windows_per_second"] / b["windows_per_second"] for a, b in zip(store_runs, memory_runs)]
    throughput = {
        "store": [r["windows_per_second"] for r in store_runs],
        "memory": [r["windows_per_second"] for r in memory_runs],
    }

    values = {
        "rss_growth_8x_vs_1x": round(store_rss["8x"] / store_rss["1x"], 3),
        "store_vs_memory_throughput": round(statistics.median(ratios), 3),
        "rss_growth_in_memory_8x_vs_1x": round(memory_rss["8x"] / memory_rss["1x"], 3),
        "peak_rss_mib_from_store": store_rss,
        "peak_rss_mib_in_memory": memory_rss,
        "store_mib": sizes,
        "train_windows": windows,
        "windows_per_second": throughput,
        "throughput_ratios": [round(r, 3) for r in ratios],
        "targets": TARGETS,
        "setup": {
            "base_blocks_per_source": base_blocks,
            "sources": 3,
            "channels": channels,
            "block_length": block_length,
            "window_size": WINDOW,
            "step_size": WINDOW,
            "repeats": repeats,
            **MODEL,
        },
        "method": (
            "one training epoch per fresh process (python -m tgatunet.bench.epoch_worker); peak RSS = the "
            "process's VmHWM; throughput = training windows/s (ThroughputMonitor) at 1x, store vs in-memory "
            "alternated, median of the per-pair ratios"
        ),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_section(out_dir, "scale", values)
    return values
