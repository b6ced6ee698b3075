"""Completion intervals on real recordings of people the model never saw: coverage, width, interval score.

For each dataset of the quality benchmark (``benchmarks/quality``): ``tgatunet train`` (the dataset's config, seed 7),
then ``tgatunet evaluate --seeds N`` (N - 1 retrainings with the next seeds, every run evaluated). Per seed and pattern,
``metrics.json`` holds the 90% intervals' empirical coverage on the test recordings, their mean width and interval
score, and the reference interval's (ridge ± the quantile of its validation errors); this script prints their means
over seeds against the targets: coverage 0.87-0.93 per pattern, interval score at most 0.9 x the reference's.

``--recalibrate`` re-runs the calibration (``calibration.json``) and evaluation of runs already trained, without
training again (e.g. after a change to how intervals are calibrated).

    OMP_NUM_THREADS=1 python benchmarks/scripts/intervals.py --dataset basicmotions --seeds 3 --out /tmp/intervals
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: the benchmarks package

from benchmarks.quality.datasets import DATASETS, prepare  # noqa: E402
from benchmarks.runs import tgatunet  # noqa: E402

PATTERNS = ("need", "gaps", "points")
COVERAGE = (0.87, 0.93)
SCORE_RATIO = 0.9


def run_roots(run: Path) -> list[Path]:
    return [run, *sorted(p.parent for p in (run / "seeds").glob("seed_*/metrics.json"))]


def recalibrate(root: Path) -> None:
    """Calibration and evaluation of a trained run again (the same process: no training)."""
    import torch

    from tgatunet.evaluate.evaluate import evaluate_run
    from tgatunet.infer.rundir import RunDir
    from tgatunet.train.calibration import calibrate
    from tgatunet.train.prepare import load_data

    run = RunDir(root)
    config = run.read_config()
    stats, splits, _ = run.read_data()
    run.update_metrics("calibration", calibrate(run, load_data(config, stats, splits), config, torch.device("cpu")))
    evaluate_run(root)


def figures(run: Path) -> dict:
    """Per pattern, over the seeds: coverage, width and interval score of the model and the reference, MAE."""
    per_seed = [json.loads((r / "metrics.json").read_text())["completion"] for r in run_roots(run)]
    out = {}
    for pattern in PATTERNS:
        seeds = [m for m in per_seed if pattern in m.get("intervals", {})]
        if not seeds:
            continue
        mean = lambda values: (float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)  # noqa: E731
        out[pattern] = {
            "seeds": len(seeds), "mae": mean([s[pattern]["model"]["mae"] for s in seeds]),
            **{f"{who}_{key}": mean([s["intervals"][pattern][who][key] for s in seeds])
               for who in ("model", "reference") for key in ("coverage", "width", "interval_score")},
            "score_ratio": mean([s["intervals"][pattern]["score_ratio"] for s in seeds]),
        }
        f = out[pattern]
        f["coverage_met"] = COVERAGE[0] <= f["model_coverage"][0] <= COVERAGE[1]
        f["score_met"] = f["score_ratio"][0] <= SCORE_RATIO
    return out


def table(results: dict) -> str:
    lines = ["| dataset | pattern | seeds | coverage | width | interval score | reference coverage | reference width | "
             "reference score | score / reference | MAE |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    cell = lambda v: f"{v[0]:.3f} ± {v[1]:.3f}"  # noqa: E731
    for name, patterns in results.items():
        for pattern, f in patterns.items():
            lines.append(f"| {name} | {pattern} | {f['seeds']} | {cell(f['model_coverage'])} ({'met' if f['coverage_met'] else 'not met'}) | "
                         f"{cell(f['model_width'])} | {cell(f['model_interval_score'])} | {cell(f['reference_coverage'])} | "
                         f"{cell(f['reference_width'])} | {cell(f['reference_interval_score'])} | {cell(f['score_ratio'])} "
                         f"({'met' if f['score_met'] else 'not met'}) | {cell(f['mae'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), action="append", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/intervals"))
    parser.add_argument("--wheel-dir", type=Path, default=Path(".whl"))
    parser.add_argument("--recalibrate", action="store_true", help="calibrate and evaluate the trained runs again")
    args = parser.parse_args()
    results = {}
    for name in args.dataset:
        run = args.out / "runs" / name
        start = time.perf_counter()
        if args.recalibrate:
            for root in run_roots(run):
                recalibrate(root)
        else:
            config = prepare(name, args.out / "data", args.wheel_dir)
            tgatunet("train", "--config", str(config), "--run-dir", str(run), "--overwrite")
            tgatunet("evaluate", "--run", str(run), "--seeds", str(args.seeds))
        results[name] = figures(run)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    text = table(results)
    print(text)
    suffix = "_".join(args.dataset)
    (args.out / f"intervals_{suffix}.md").write_text(text)
    (args.out / f"intervals_{suffix}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
