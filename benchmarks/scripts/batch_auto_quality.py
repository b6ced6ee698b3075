#!/usr/bin/env python
"""Does ``batch_size: auto`` keep the quality of batch 16 on the bundled data? Completion MAE and accuracy over seeds.

Both variants are ``configs/basicmotions.yaml`` as ``make run`` trains it
(``epochs: auto``, so the budget is counted in windows seen, ``max_windows``),
once with ``batch_size: 16`` and once with ``batch_size: auto`` (the searched
batch, the learning rate scaled by sqrt(batch / 16) with warm-up). Each is
trained and then scored by ``tgatunet evaluate --seeds N``, which retrains it
with the next seeds on the same split; the figures are the mean and standard
deviation over the seeds of the ``need`` completion MAE (the model's) and the
window accuracy, and the ratio of ``auto`` to batch 16.

Usage::

    python benchmarks/scripts/batch_auto_quality.py [--seeds 3] [--out /tmp/batch_auto_quality]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the repository root: the benchmarks package

from benchmarks.runs import tgatunet, train_run  # noqa: E402

CONFIG = ROOT / "configs" / "basicmotions.yaml"


def train_and_score(batch: int | str, seeds: int, out: Path) -> dict:
    """The ``seeds`` section of ``metrics.json`` and the chosen batch, for one ``batch_size``."""
    config = out / f"batch_{batch}.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load(CONFIG.read_text()), "batch_size": batch}))
    run_dir = out / f"run_batch_{batch}"
    train_run(config, run_dir)
    tgatunet("evaluate", "--run", str(run_dir), "--seeds", str(seeds))
    metrics = json.loads((run_dir / "metrics.json").read_text())  # now with the seeds section
    return {"seeds": metrics["seeds"], "batch": metrics["train"]["batch_size"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/batch_auto_quality"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    figures = {}
    for batch in (16, "auto"):
        result = train_and_score(batch, args.seeds, args.out)
        mae = result["seeds"]["completion"]["need"]["model"]["mae"]
        accuracy = result["seeds"]["classification"]["accuracy"]
        figures[batch] = (mae["mean"], accuracy["mean"])
        print(f"batch_size {batch!s:>4} (trained with {result['batch']}): need MAE {mae['mean']:.4f} ± {mae['std']:.4f}"
              f"  accuracy {accuracy['mean']:.4f} ± {accuracy['std']:.4f}  over seeds {result['seeds']['seeds']}",
              flush=True)
    (mae16, acc16), (mae_auto, acc_auto) = figures[16], figures["auto"]
    print(f"\nauto / batch 16: need MAE {mae_auto / mae16:.3f}x, accuracy {acc_auto / acc16:.3f}x")


if __name__ == "__main__":
    main()
