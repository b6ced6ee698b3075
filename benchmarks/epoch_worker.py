"""One training run in a process of its own, reporting its peak resident memory.

``python -m benchmarks.epoch_worker CONFIG RUN_DIR`` trains ``CONFIG``
(the real :func:`tgatunet.train.run.train`: Lightning, run directory,
checkpoints) and prints one JSON line: the process's resident memory before
training (imports done) and its peak while training
(:func:`tgatunet.profiling.peak_rss_bytes`). A benchmark starts one such
process per measurement, so that what one measurement allocated cannot
inflate the next.
"""

from __future__ import annotations

import json
import sys

import psutil

from tgatunet.profiling import peak_rss_bytes
from tgatunet.train.run import train


def main(config: str, run_dir: str) -> dict:
    before = psutil.Process().memory_info().rss
    runs = []
    increase = peak_rss_bytes(lambda: runs.append(train(config, run_dir=run_dir, overwrite=True, progress_bar=False)))
    if increase is None:
        raise SystemExit("peak resident memory is read from /proc/self (Linux only)")
    metrics = runs[0].read_metrics()["train"]
    return {
        "rss_before_bytes": before,
        "peak_rss_bytes": before + increase,
        "windows_per_second": metrics["windows_per_second"],
        "train_windows": metrics["windows"]["train"],
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(main(*sys.argv[1:3])) + "\n")  # the parent reads this one line
