#!/usr/bin/env python
"""GPU check of the scale-out features: 1-GPU throughput and utilisation, from memory and from the store.

Trains one synthetic dataset (3 sources, 9 channels, 600,000 rows) on GPU 0 in
five ways, each followed by a one-process ``evaluate`` of its checkpoint:

* ``memory``: in-memory data, fp32;
* ``store``: the same windows read lazily from a ``tgatunet data prepare`` store;
* ``memory_bf16``: in-memory data, ``precision: bf16-mixed``;
* ``ddp_1gpu``: ``strategy: ddp`` on one device (the NCCL path), one epoch;
* ``fsdp_1gpu``: ``strategy: fsdp`` on one device (sharded checkpoint written
  as one file, gradient clipping by the sharded module), one epoch.

Throughput is ThroughputMonitor's training windows/s; GPU utilisation and
memory are sampled every 0.1 s through NVML and averaged over the training
epochs after the first (the warm-up). Results go to ``$OUT/gpu_scale_check.json``
(or ``./gpu_scale_check.json``).

Usage::

    python benchmarks/scripts/gpu_scale_check.py

It needs a CUDA GPU and ``nvidia-ml-py`` (``pip install tgatunet[gpu]``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import traceback
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml

from tgatunet.evaluate.evaluate import evaluate_run
from tgatunet.config import load_config
from tgatunet.data.store import build_store
from tgatunet.data.synth import SynthSpec, write_synthetic
from tgatunet.train.run import train

VARIANTS = {
    "memory": {},
    "store": {"data_store": "store"},
    "memory_bf16": {"precision": "bf16-mixed"},
    "ddp_1gpu": {"strategy": "ddp", "epochs": 1},
    "fsdp_1gpu": {"strategy": "fsdp", "epochs": 1},
}


class EpochSpans(pl.Callback):
    """Wall-clock start and end of every training epoch."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.spans.append((self._start, time.time()))


class GpuSampler(threading.Thread):
    """Samples (time, utilisation %, memory used MiB) of GPU 0 every 0.1 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int, float]] = []

    def run(self) -> None:
        import pynvml  # optional (tgatunet[gpu]): only this check reads the GPU through NVML

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        while True:
            used = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            self.samples.append((time.time(), pynvml.nvmlDeviceGetUtilizationRates(handle).gpu, used))
            time.sleep(0.1)

    def during(self, spans: list[tuple[float, float]]) -> list[tuple[float, int, float]]:
        return [s for s in self.samples if any(a <= s[0] <= b for a, b in spans)]


def check(variant: str, config_path: Path, sampler: GpuSampler) -> dict:
    spans = EpochSpans()
    run = train(config_path, callbacks=[spans], progress_bar=False, overwrite=True)
    metrics = run.read_metrics()["train"]
    samples = sampler.during(spans.spans[1:] or spans.spans)
    evaluation = evaluate_run(run.root)
    return {
        "windows_per_second": metrics["windows_per_second"],
        "epoch_seconds": [round(b - a, 2) for a, b in spans.spans],
        "gpu_util_mean_pct": round(sum(s[1] for s in samples) / len(samples), 1) if samples else None,
        "gpu_mem_used_max_mib": round(max(s[2] for s in samples)) if samples else None,
        "best_val_mae": metrics["best_val_mae"],
        "windows": metrics["windows"],
        "device": metrics["device"],
        "test_accuracy": evaluation["classification"]["accuracy"],
        "completion_mae": {k: evaluation["completion"][k]["mae"] for k in ("model", "ridge", "mean_fill")},
    }


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_scale_check: no CUDA GPU here")
    out = Path(os.environ.get("OUT", "."))
    work = Path(tempfile.mkdtemp(prefix="gpu-scale-check-"))
    spec = SynthSpec(sources=3, channels=9, missing_per_source=2, blocks_per_source=100, block_length=2000, file_format="parquet")
    config_path = write_synthetic(spec, work)
    build_store(load_config(config_path), work / "store")
    base = yaml.safe_load(config_path.read_text())
    base.update(accelerator="gpu", devices=1, epochs=3, batch_size=64, patience=10)
    sampler = GpuSampler()
    sampler.start()
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for variant, change in VARIANTS.items():
        path = work / f"{variant}.yaml"
        path.write_text(yaml.safe_dump({**base, **change, "run_dir": str(work / "runs" / variant)}))
        try:
            results[variant] = check(variant, path, sampler)
        except Exception:  # one variant failing must not hide the others' figures
            results[variant] = {"error": traceback.format_exc()[-3000:]}
        print(variant, json.dumps(results[variant])[:600], flush=True)
    (out / "gpu_scale_check.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
