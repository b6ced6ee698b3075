#!/usr/bin/env python
"""Applying a trained run, this checkout against another (the code before a change), interleaved.

Every figure comes from fresh processes, one per measurement, alternating between the two
checkouts (``PYTHONPATH`` picks the package), ``--rounds`` times; the medians and their
ratio (this / baseline) are printed and written to ``OUT/apply_ab.json``:

* ``load``: ``python -c "import tgatunet; tgatunet.load(RUN)"``, wall seconds, and whether it imported Lightning;
* ``array``: ``Run.complete`` of the run's test recordings cut into ``[W, T, C]`` windows (its window length, the
  gyroscope hidden), seconds inside the process (the median of 3 calls after one warm-up);
* ``wide``: ``tgatunet predict`` of a 480-row recording of 1,000 channels, with a run trained here on synthetic
  data of 1,000 channels (one epoch: its quality does not matter, only the work per channel);

RUN must be readable by both checkouts: a run trained by the baseline's code (a newer run's config may hold
keys an older checkout does not know).
* ``hour``: ``tgatunet predict`` of a one-hour 50 Hz recording (180,000 rows: the bundled accelerometer
  recordings repeated, the gyroscope to complete) with RUN, wall seconds.

Usage::

    git worktree add /tmp/base <commit> && \\
    python benchmarks/scripts/apply_ab.py --baseline-src /tmp/base/src [--run runs/basicmotions] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.runs import train_run  # noqa: E402
from tgatunet.data.synth import SynthSpec, write_synthetic  # noqa: E402

ARRAY = """
import sys, time, numpy as np, tgatunet
run = tgatunet.load(sys.argv[1]); windows = np.load(sys.argv[2]); channels = sys.argv[3].split(",")
run.complete(windows, channels=channels)
times = []
for _ in range(3):
    t = time.perf_counter(); run.complete(windows, channels=channels); times.append(time.perf_counter() - t)
print(sorted(times)[1])
"""
LOAD = "import sys, tgatunet; tgatunet.load(sys.argv[1]); print('lightning' in sys.modules)"


def timed(src: Path, args: list[str]) -> tuple[float, str]:
    """Wall seconds and stdout of ``python ARGS`` with the package of ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{args} failed under {src}:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stdout.strip()


def hour_recording(out: Path) -> Path:
    bundled = ROOT / "src/tgatunet/data/bundled/basic_motions/watch_acc.csv"
    frame = pd.read_csv(bundled)[["acc_x", "acc_y", "acc_z"]]
    path = out / "hour.csv"
    pd.concat([frame] * (180_000 // len(frame) + 1), ignore_index=True).iloc[:180_000].to_csv(path, index=False)
    return path


def test_windows(run: Path, out: Path) -> tuple[Path, str]:
    """The bundled accelerometer-only test recordings as ``[W, T, 3]`` windows of the run's length."""
    window = yaml.safe_load((run / "config.yaml").read_text())["window_size"]
    frame = pd.read_csv(ROOT / "src/tgatunet/data/bundled/basic_motions/watch_acc.csv")
    test = frame[frame["split"] == "test"][["acc_x", "acc_y", "acc_z"]].to_numpy()
    windows = test[: len(test) // window * window].reshape(-1, window, 3)
    np.save(out / "windows.npy", windows)
    return out / "windows.npy", "acc_x,acc_y,acc_z"


def wide_run(out: Path, baseline: Path) -> tuple[Path, Path]:
    """A one-epoch run of 1,000 synthetic channels and a 480-row recording of them; trained by the baseline's code,
    whose runs both checkouts read."""
    config = write_synthetic(SynthSpec(sources=2, channels=1000, missing_per_source=10, blocks_per_source=6,
                                       block_length=240, seed=0), out / "wide_data")
    raw = yaml.safe_load(config.read_text())
    raw.update({"epochs": 1, "window_size": 16, "step_size": 8, "hidden_channels": 16, "encoder_layers": 1, "decoder_layers": 1,
                "transformer_layers": 0, "attention_heads": 2, "batch_size": 8})
    config.write_text(yaml.safe_dump(raw))
    train_run(config, out / "wide_run", env={"PYTHONPATH": str(baseline)})
    source = raw["sources"][1]["path"]
    # One recording, without its block column: the code before this change fails on the block boundary
    # (its window flush with a block's end read rows it had already handed back).
    recording = pd.read_csv(config.parent / source).iloc[:480].drop(columns=[raw["block_col"]])
    path = out / "wide.csv"
    recording.to_csv(path, index=False)
    return out / "wide_run", path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, required=True, help="the src folder of the other checkout")
    parser.add_argument("--run", type=Path, default=ROOT / "runs/basicmotions", help="a run of configs/basicmotions.yaml")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("/tmp/apply_ab"))
    parser.add_argument("--only", nargs="*", default=["load", "array", "wide", "hour"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    checkouts = {"baseline": args.baseline_src.resolve(), "this": (ROOT / "src").resolve()}
    cases = {}
    if "load" in args.only:
        cases["load"] = lambda src: timed(src, ["-c", LOAD, str(args.run)])
    if "array" in args.only:
        windows, channels = test_windows(args.run, args.out)
        cases["array"] = lambda src: (float(timed(src, ["-c", ARRAY, str(args.run), str(windows), channels])[1]), "")
    if "wide" in args.only:
        wide, recording = wide_run(args.out, checkouts["baseline"])
        cases["wide"] = lambda src: timed(src, ["-m", "tgatunet", "predict", "--run", str(wide), "--input", str(recording),
                                                "--output", str(args.out / f"wide_{src.parent.name}")])
    if "hour" in args.only:
        hour = hour_recording(args.out)
        cases["hour"] = lambda src: timed(src, ["-m", "tgatunet", "predict", "--run", str(args.run), "--input", str(hour),
                                                "--output", str(args.out / f"hour_{src.parent.name}")])
    results = {}
    for name, case in cases.items():
        seconds = {side: [] for side in checkouts}
        notes = {}
        for _ in range(args.rounds):
            for side, src in checkouts.items():
                elapsed, note = case(src)
                seconds[side].append(elapsed)
                notes[side] = note
        medians = {side: statistics.median(v) for side, v in seconds.items()}
        results[name] = {"seconds": seconds, "median": medians, "ratio": medians["this"] / medians["baseline"],
                         "speedup": medians["baseline"] / medians["this"], "stdout": notes}
        print(f"{name:6s} baseline {medians['baseline']:8.3f} s  this {medians['this']:8.3f} s  "
              f"speed-up {medians['baseline'] / medians['this']:5.2f}x  {notes if name == 'load' else ''}", flush=True)
    (args.out / "apply_ab.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
