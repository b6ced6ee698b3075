#!/usr/bin/env python
"""``tgatunet predict`` on a recording as its devices wrote it (channels at 64, 32 and 4 Hz, one time column) against
the same recording brought onto one 32 Hz grid by hand: time, and memory as the recording grows.

A run is trained briefly on ``tgatunet data synth --rates 64,32,4`` data (9 channels, the rates given to the channels
in turn; the model's grid is 32 Hz, window 128 steps at the reference setting); its quality does not matter here, only
the work ``predict`` does. Each recording (``--hours``) is written twice, in Parquet row groups of 100,000 rows:

* three rates: a ``time`` column and one row per 64 Hz sample; the 32 Hz and 4 Hz channels hold a value only at their
  own sample times (empty between them); ``predict --time-col time`` resamples it onto the grid, completes it and
  writes every row back at its own time;
* one grid: every channel at 32 Hz on every row (the 4 Hz channels interpolated), no time column: rows are steps.

In both, channel ``ch00`` (64 Hz) is absent (completed) and 1% of the other samples are dropped (gaps filled). Each
``predict`` runs in its own process with one torch thread, alternating the two files ``--rounds`` times: the medians of
the wall time and the peak resident memory (``ru_maxrss``), their ratio (target: three rates at most 1.5x one grid),
and the peak memory of each length against the first (target: flat, 10 h within 1.3x of 1 h).

    python benchmarks/scripts/predict_rates.py --hours 1 10 --rounds 3 --out /tmp/predict_rates
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the benchmarks package

from benchmarks.runs import train_run  # noqa: E402
from benchmarks.scripts.predict_stream import run_predict  # noqa: E402
from benchmarks.setting import CHANNELS, SOURCES, setting_keys  # noqa: E402
from tgatunet.data.synth import SynthSpec, channel_names, write_synthetic  # noqa: E402

RATES = (64.0, 32.0, 4.0)
GRID = 32.0
ROW_GROUP = 100_000


def signal(t: np.ndarray, i: int, rng: np.random.Generator) -> np.ndarray:
    """Channel ``i`` at times ``t``: a few slow rhythms and noise; 1% of its samples dropped (NaN)."""
    values = np.sin(2 * np.pi * (0.3 + 0.1 * i) * t + i) + 0.3 * np.sin(2 * np.pi * 0.05 * t) + 0.1 * rng.standard_normal(t.size)
    values[rng.random(t.size) < 0.01] = np.nan
    return values


def write_recordings(folder: Path, hours: float, seed: int = 0) -> tuple[Path, Path]:
    """The same recording at three rates (``time`` column) and on one 32 Hz grid."""
    names = channel_names(CHANNELS)
    paths = folder / f"three_rates_{hours:g}h.parquet", folder / f"one_grid_{hours:g}h.parquet"
    if all(p.exists() for p in paths):
        return paths
    fast = int(hours * 3600 * RATES[0])
    every = [round(RATES[0] / RATES[i % len(RATES)]) for i in range(CHANNELS)]
    rates_schema = pa.schema([("time", pa.float64()), *((n, pa.float64()) for n in names)])
    grid_schema = pa.schema([(n, pa.float64()) for n in names])
    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(paths[0], rates_schema) as rates, pq.ParquetWriter(paths[1], grid_schema) as grid:
        for start in range(0, fast, ROW_GROUP * 2):  # an even number of rows: the 32 Hz grid takes every second one
            rows = np.arange(start, min(start + ROW_GROUP * 2, fast))
            t = rows / RATES[0]
            at_rates, on_grid = {"time": t}, {}
            for i, name in enumerate(names):
                values = signal(t, i, rng)
                own = rows % every[i] == 0
                at_rates[name] = np.where(own, values, np.nan) if i else np.full(t.size, np.nan)
                kept = rows[own] / RATES[0]
                samples = np.interp(t[::2], kept, values[own]) if every[i] > 2 else values[::2]
                on_grid[name] = samples if i else np.full(t[::2].size, np.nan)
            rates.write_table(pa.table(at_rates, schema=rates_schema))
            grid.write_table(pa.table(on_grid, schema=grid_schema))
    return paths


def train(folder: Path) -> Path:
    spec = SynthSpec(sources=SOURCES, channels=CHANNELS, missing_per_source=2, blocks_per_source=4, block_length=4096,
                     file_format="parquet", rates=RATES)
    config = write_synthetic(spec, folder / "data")
    raw = {**yaml.safe_load(config.read_text(encoding="utf-8")), **setting_keys(), "window_size": 128, "step_size": 64,
           "epochs": 1, "patience": 1}
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    run = folder / "run"
    if not (run / "metrics.json").exists():
        train_run(config, run)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/predict_rates"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run = train(args.out)
    peaks = {}
    for hours in args.hours:
        files = write_recordings(args.out, hours)
        seconds: dict[str, list[float]] = {"three rates": [], "one grid": []}
        rss: dict[str, list[float]] = {"three rates": [], "one grid": []}
        for _ in range(args.rounds):
            for label, path in zip(seconds, files):
                out = args.out / f"predicted_{path.stem}"
                out.mkdir(exist_ok=True)
                extra = ["--time-col", "time"] if label == "three rates" else []
                wall, peak, summary = run_predict(run, path, out, extra=extra)
                seconds[label].append(wall)
                rss[label].append(peak)
                print(f"  {path.name:28s} {wall:7.1f} s  peak RSS {peak:6.0f} MiB  | {summary}", flush=True)
        median = {k: (float(np.median(seconds[k])), float(np.median(rss[k]))) for k in seconds}
        peaks[hours] = median["three rates"][1]
        print(f"{hours:g} h: three rates {median['three rates'][0]:.1f} s, {median['three rates'][1]:.0f} MiB; one grid "
              f"{median['one grid'][0]:.1f} s, {median['one grid'][1]:.0f} MiB; time ratio "
              f"{median['three rates'][0] / median['one grid'][0]:.2f}x (target <= 1.5x; medians of {args.rounds})", flush=True)
    first = args.hours[0]
    for hours, peak in peaks.items():
        print(f"three rates, {hours:g} h: peak RSS {peak:.0f} MiB = {peak / peaks[first]:.2f}x the {first:g} h file's (target <= 1.3x)")


if __name__ == "__main__":
    main()
