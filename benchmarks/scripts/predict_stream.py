#!/usr/bin/env python
"""Time and peak memory of ``tgatunet predict`` on long Parquet recordings: does memory stay flat as files grow?

A run is trained briefly at the reference setting (medium preset, window 128,
9 synthetic channels); its quality does not matter here, only the work that
``predict`` does per row. Recordings of each ``--rows`` length (one recording
per file, 9 channels at 50 Hz, one channel absent so it is completed, 1% of the
cells dropped so gaps are filled too) are written in row groups of 100,000
rows. Each ``tgatunet predict`` runs in its own process with one torch thread;
the figures are its wall time and its peak resident memory (``ru_maxrss`` of
that process), the ratio of each file's peak to the first file's, and the
command's own seconds from its summary line.

``--interval-rounds N`` times ``predict --interval`` (each filled value with its interval) against plain ``predict``
instead, alternating the two N times per file: medians of the wall time and of the command's own seconds, and their
ratio.

Usage::

    python benchmarks/scripts/predict_stream.py [--rows 180000 2000000 20000000] [--out /tmp/predict_stream]
    python benchmarks/scripts/predict_stream.py --rows 180000 --interval-rounds 5
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the benchmarks package

from benchmarks.runs import train_run  # noqa: E402
from benchmarks.setting import CHANNELS, write_setting_data  # noqa: E402
from tgatunet.data.synth import channel_names  # noqa: E402

ROW_GROUP = 100_000
HZ = 50.0


def write_recording(path: Path, rows: int, seed: int = 0) -> None:
    """One recording of ``rows`` rows: channel 0 absent (to be completed), 1% of the other cells empty."""
    rng = np.random.default_rng(seed)
    names = channel_names(CHANNELS)
    schema = pa.schema([(name, pa.float64()) for name in names])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            t = np.arange(start, min(start + ROW_GROUP, rows)) / HZ
            columns = {}
            for i, name in enumerate(names):
                values = np.sin(2 * np.pi * (0.5 + 0.1 * i) * t + i) + 0.1 * rng.standard_normal(t.size)
                values[rng.random(t.size) < 0.01] = np.nan
                columns[name] = np.full(t.size, np.nan) if i == 0 else values
            writer.write_table(pa.table(columns, schema=schema))


def run_predict(run_dir: Path, recording: Path, out: Path, interval: bool = False, extra: list[str] = ()) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB, and the summary line of one ``tgatunet predict`` process (``extra``: more options)."""
    args = [sys.executable, "-m", "tgatunet", "predict", "--run", str(run_dir), "--input", str(recording),
            "--output", str(out), *(["--interval"] if interval else []), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # torch takes its intra-op thread count from it
    start = time.perf_counter()
    with open(out / f"{recording.stem}.log", "w") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    text = (out / f"{recording.stem}.log").read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"predict failed on {recording}:\n{text}")
    summary = next((line for line in text.splitlines() if re.search(r"\d+ rows", line)), "")
    return seconds, usage.ru_maxrss / 1024, summary.strip()


def compare_intervals(run_dir: Path, recording: Path, out: Path, rounds: int) -> None:
    """``predict`` and ``predict --interval`` alternately, ``rounds`` times each: median seconds and their ratio."""
    wall: dict[bool, list[float]] = {False: [], True: []}
    own: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for interval in (False, True):
            seconds, rss, summary = run_predict(run_dir, recording, out, interval)
            wall[interval].append(seconds)
            own[interval].append(float(re.search(r"in ([\d.]+) s", summary).group(1)))
            print(f"  {'--interval' if interval else 'plain     '}  {seconds:6.2f} s wall, {own[interval][-1]:6.2f} s applying, "
                  f"peak RSS {rss:5.0f} MiB", flush=True)
    median = {k: (float(np.median(wall[k])), float(np.median(own[k]))) for k in wall}
    print(f"{recording.name}: predict {median[False][0]:.2f} s ({median[False][1]:.2f} s applying), --interval "
          f"{median[True][0]:.2f} s ({median[True][1]:.2f} s applying): {median[True][0] / median[False][0]:.3f}x wall, "
          f"{median[True][1] / median[False][1]:.3f}x applying (medians of {rounds})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[180_000, 2_000_000, 20_000_000])
    parser.add_argument("--out", type=Path, default=Path("/tmp/predict_stream"))
    parser.add_argument("--interval-rounds", type=int, default=0, help="time predict --interval against predict instead")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    config = write_setting_data(args.out / "data", blocks_per_source=4, block_length=512, epochs=1, patience=1)
    run_dir = args.out / "run"
    train_run(config, run_dir)
    results = []
    for rows in args.rows:
        recording = args.out / f"recording_{rows}.parquet"
        if not recording.exists():
            write_recording(recording, rows)
        outputs = args.out / f"predicted_{rows}"
        outputs.mkdir(exist_ok=True)
        if args.interval_rounds:
            compare_intervals(run_dir, recording, outputs, args.interval_rounds)
            continue
        seconds, rss, summary = run_predict(run_dir, recording, outputs)
        results.append((rows, seconds, rss))
        print(f"{rows:>11,} rows  {seconds:7.1f} s wall  peak RSS {rss:7.0f} MiB  | {summary}", flush=True)
    if not results:
        return
    base_rss = results[0][2]
    print(f"\npeak RSS relative to the {results[0][0]:,}-row file (one process each, one torch thread):")
    for rows, seconds, rss in results:
        print(f"  {rows:>11,} rows  {rss / base_rss:5.2f}x  ({rows / seconds:,.0f} rows/s over the whole command)")


if __name__ == "__main__":
    main()
