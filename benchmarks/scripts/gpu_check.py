#!/usr/bin/env python
"""The GPU figures of the performance guide in one run: training windows/s and GPU busy share, then the study.

At the reference setting (medium preset, window 128, 9 synthetic channels, no
gradient checkpointing) two whole ``tgatunet train`` runs, each in its own
process on the first GPU:

* ``eager``: batch 16, fp32, no compile (the guide's preset as written);
* ``filled``: ``batch_size: auto``, ``precision: bf16-mixed``, ``compile: true``
  (CUDA graphs; training windows resident on the GPU when they fit).

The figures are ``train.windows_per_second``, the chosen ``train.batch_size``
and ``memory.mean_gpu_utilization_percent`` (NVML: ``pip install
"tgatunet[gpu]"``) from each run's ``metrics.json``. Then ``python
performance_test.py --quick`` re-measures the guide's four rows on the GPU.
Everything goes to ``OUT/gpu_check.json`` (``$OUT`` or ``--out``), the study to
``OUT/study/``. On a machine without CUDA it says so and stops.

Usage::

    python benchmarks/scripts/gpu_check.py [--epochs 10] [--out DIR] [--no-study]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the repository root: the benchmarks package

from benchmarks.runs import train_run, write_variant  # noqa: E402
from benchmarks.setting import write_setting_data  # noqa: E402

VARIANTS = {
    "eager": {"batch_size": 16, "precision": "32", "compile": False},
    "filled": {"batch_size": "auto", "precision": "bf16-mixed", "compile": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check")))
    parser.add_argument("--no-study", action="store_true", help="skip the guide's rows (performance_test.py)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: the GPU figures need one (CPU figures: performance_test.py, fill_cpu.py)")
    args.out.mkdir(parents=True, exist_ok=True)

    base = write_setting_data(args.out / "data", blocks_per_source=64, block_length=4096, epochs=args.epochs,
                              patience=args.epochs, use_gradient_checkpoint=False, accelerator="gpu", devices=1)
    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "variants": {}}
    for name, overrides in VARIANTS.items():
        metrics = train_run(write_variant(base, name, overrides), args.out / f"run_{name}")
        figures = {"train": metrics["train"], "memory": metrics["memory"]}
        results["variants"][name] = {"config": overrides, **figures}
        busy = figures["memory"].get("mean_gpu_utilization_percent")
        print(f"{name:7s} {figures['train']['windows_per_second']:10.0f} windows/s  batch {figures['train']['batch_size']}"
              f"  GPU busy {busy if busy is not None else 'not monitored (pip install tgatunet[gpu])'}%", flush=True)
    if not args.no_study:
        subprocess.run([sys.executable, str(ROOT / "performance_test.py"), "--quick", "--out", str(args.out / "study")],
                       check=True, stdout=subprocess.DEVNULL)
        results["study_report"] = str(args.out / "study" / "report.md")
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    print(f"written: {args.out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
