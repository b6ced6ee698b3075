#!/usr/bin/env python
"""Training throughput of ``devices: auto`` and ``batch_size: auto`` against their fixed forms, on this CPU.

The reference setting (medium preset, window 128, 9 synthetic channels, float32)
without gradient checkpointing, as issue 16 states it. Each variant is a whole
``tgatunet train`` in its own process, so thread settings cannot leak between
them; the variants run in alternation for ``--rounds`` rounds, so a drift of the
machine's speed hits all of them alike. The figure is each variant's median
``train.windows_per_second`` from its ``metrics.json`` and its ratio to the first
variant (one thread, ``devices: 1``, batch 16).

Usage::

    python benchmarks/scripts/fill_cpu.py [--rounds 3] [--epochs 6] [--out /tmp/fill_cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the benchmarks package

from benchmarks.runs import train_run, write_variant  # noqa: E402
from benchmarks.setting import write_setting_data  # noqa: E402

# name: (config keys, environment); "one thread" is the baseline.
VARIANTS = {
    "one thread, batch 16": ({"devices": 1, "batch_size": 16}, {"OMP_NUM_THREADS": "1"}),
    "all threads, batch 16": ({"devices": 1, "batch_size": 16}, {}),
    "devices auto, batch 16": ({"devices": "auto", "batch_size": 16}, {}),
    "devices auto, batch auto": ({"devices": "auto", "batch_size": "auto"}, {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("/tmp/fill_cpu"))
    args = parser.parse_args()

    base = write_setting_data(args.out / "data", blocks_per_source=16, block_length=1024, epochs=args.epochs,
                              patience=args.epochs, use_gradient_checkpoint=False)
    speeds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    chosen: dict[str, dict] = {}
    for round_ in range(args.rounds):
        for i, (name, (overrides, env)) in enumerate(VARIANTS.items()):
            train = train_run(write_variant(base, f"variant_{i}", overrides), args.out / f"run_{i}", env)["train"]
            speeds[name].append(train["windows_per_second"])
            chosen[name] = {k: train[k] for k in ("batch_size", "processes", "threads_per_process")}
            print(f"round {round_ + 1}/{args.rounds}  {name:26s} {train['windows_per_second']:8.0f} windows/s  {chosen[name]}")
    first = statistics.median(next(iter(speeds.values())))
    print(f"\nmedians over {args.rounds} rounds, {args.epochs} epochs each (ratio to the first row):")
    for name, values in speeds.items():
        median = statistics.median(values)
        print(f"  {name:26s} {median:8.0f} windows/s  {median / first:5.2f}x  {chosen[name]}")


if __name__ == "__main__":
    main()
