"""One source at half its rate: does completion hold when a recording set is given as its devices would write it?

For each dataset of the quality benchmark (``benchmarks/quality``), its source that needs channels is rewritten at
half its rate, as a slower device would record it: every channel anti-aliased and decimated by 2
(:func:`scipy.signal.resample_poly`, per recording), labels and splits of every second row, and a ``time_s`` column in
seconds. The config changes in three keys: that source's ``path`` and ``time_col: time_s``, and ``sample_rate_hz`` (the
original rate, so that the model's grid, and the recordings it is scored on, are the same as the same-rate run's).

Both configs are trained (seed 7) and evaluated over ``--seeds`` seeds (``tgatunet evaluate --seeds N``); this prints
the completion MAE of each pattern, mean ± std over seeds, and the ratio half-rate / same-rate (target for ``need``:
at most 1.05). Then ``tgatunet complete`` writes the half-rate source back, and the script checks that the completed
copy has the source's rows, in order, at its own timestamps, with every observed value unchanged.

    OMP_NUM_THREADS=1 python benchmarks/scripts/rates.py --dataset basicmotions --seeds 3 --out /tmp/rates
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the benchmarks package

from benchmarks.quality.datasets import DATASETS, prepare  # noqa: E402
from benchmarks.runs import tgatunet  # noqa: E402
from benchmarks.scripts.intervals import run_roots  # noqa: E402

PATTERNS = ("need", "gaps", "points")
RATES = {"basicmotions": 10.0, "watch": 50.0, "driveset": 1.0}  # each dataset's rate, Hz
TARGET = 1.05


def halve(config_path: Path) -> tuple[Path, str]:
    """The half-rate variant of a dataset's config, written beside it; and the name of the source halved."""
    config = yaml.safe_load(config_path.read_text())
    source = next(s for s in config["sources"] if s.get("need"))
    channels = [*config["common_modalities"], *source.get("have", [])]
    frame = pd.read_csv(config_path.parent / Path(source["path"]).name if not str(source["path"]).startswith("bundled:")
                        else _bundled(source["path"]))
    block = config["block_col"]
    rate = RATES[config_path.parent.name]
    parts = []
    for _, recording in frame.groupby(block, sort=False):
        half = recording.iloc[::2].drop(columns=["time_s"], errors="ignore").reset_index(drop=True)
        for channel in channels:
            half[channel] = resample_poly(recording[channel].to_numpy(np.float64), 1, 2, padtype="line")[: len(half)]
        half.insert(1, "time_s", np.arange(len(half)) * 2 / rate)
        parts.append(half)
    path = config_path.parent / f"{source['name']}_half_rate.csv"
    pd.concat(parts, ignore_index=True).to_csv(path, index=False, float_format="%.7g")
    source.update(path=path.name, time_col="time_s")
    config["sample_rate_hz"] = rate
    out = config_path.parent / "config_half_rate.yaml"
    out.write_text(f"# {config_path.parent.name} with source '{source['name']}' at half its rate\n" + yaml.safe_dump(config, sort_keys=False))
    return out, source["name"]


def _bundled(path: str) -> Path:
    from tgatunet.data.datasets import resolve_bundled

    return resolve_bundled(path)


def maes(run: Path) -> dict[str, tuple[float, float, int]]:
    """Per pattern: the completion MAE's mean and std over the run and its seeds, and how many seeds."""
    per_seed = [json.loads((r / "metrics.json").read_text())["completion"] for r in run_roots(run)]
    out = {}
    for pattern in PATTERNS:
        values = [m[pattern]["model"]["mae"] for m in per_seed if pattern in m]
        out[pattern] = (float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values))
    return out


def check_written_back(run: Path, config_path: Path, source: str) -> str:
    """The completed copy of the half-rate source against the file: rows, times, observed values."""
    tgatunet("complete", "--run", str(run), "--source", source, "--output", str(run / "completed_check"))
    config = yaml.safe_load(config_path.read_text())
    original = pd.read_csv(config_path.parent / next(s["path"] for s in config["sources"] if s["name"] == source))
    done = pd.read_csv(run / "completed_check" / f"{source}_completed.csv")
    channels = [c for c in original.columns if c in done.columns and pd.api.types.is_float_dtype(original[c])]
    same_rows = len(done) == len(original) and done["time_s"].equals(original["time_s"])
    observed = all(np.array_equal(done.loc[original[c].notna(), c], original.loc[original[c].notna(), c]) for c in channels)
    filled = {c[: -len("_imputed")]: int(done[c].sum()) for c in done.columns if c.endswith("_imputed") and done[c].any()}
    return (f"completed copy: {len(done)} rows (file: {len(original)}), same times in the same order: {same_rows}, "
            f"observed values unchanged: {observed}, filled: {filled}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), action="append", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/rates"))
    parser.add_argument("--wheel-dir", type=Path, default=Path(".whl"))
    args = parser.parse_args()
    lines = ["| dataset | source at half rate | pattern | seeds | same-rate MAE | half-rate MAE | half / same |", "|---|---|---|---|---|---|---|"]
    for name in args.dataset:
        start = time.perf_counter()
        config = prepare(name, args.out / "data", args.wheel_dir)
        halved, source = halve(config)
        results = {}
        for variant, path in (("same", config), ("half", halved)):
            run = args.out / "runs" / f"{name}_{variant}"
            if not (run / "seeds").is_dir():
                tgatunet("train", "--config", str(path), "--run-dir", str(run), "--overwrite")
                tgatunet("evaluate", "--run", str(run), "--seeds", str(args.seeds))
            results[variant] = maes(run)
        for pattern in PATTERNS:
            same, half = results["same"][pattern], results["half"][pattern]
            ratio = half[0] / same[0]
            verdict = f" ({'met' if ratio <= TARGET else 'not met'})" if pattern == "need" else ""
            lines.append(f"| {name} | {source} | {pattern} | {same[2]} | {same[0]:.3f} ± {same[1]:.3f} | {half[0]:.3f} ± {half[1]:.3f} | "
                         f"{ratio:.3f}{verdict} |")
        print(f"{name}: {check_written_back(args.out / 'runs' / f'{name}_half', halved, source)}; {time.perf_counter() - start:.0f} s",
              flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    (args.out / f"rates_{'_'.join(args.dataset)}.md").write_text(text)


if __name__ == "__main__":
    main()
