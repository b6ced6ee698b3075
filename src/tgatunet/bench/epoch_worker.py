"""One training run in a process of its own, reporting its throughput and peak memory.

``python -m tgatunet.bench.epoch_worker CONFIG RUN_DIR`` trains ``CONFIG``
(the real :func:`tgatunet.train.run.train`: Lightning, run directory,
checkpoints) and prints one JSON line: the training throughput that
:class:`~tgatunet.train.callbacks.ThroughputMonitor` measured and this
process's peak resident memory. A benchmark starts one such process per
measurement, so that what one measurement allocated cannot inflate the next.
"""

from __future__ import annotations

import json
import sys

from tgatunet.profiling import peak_rss_bytes
from tgatunet.train.run import train


def main(config: str, run_dir: str) -> dict:
    run = train(config, run_dir=run_dir, overwrite=True, progress_bar=False)
    metrics = run.read_metrics()["train"]
    return {
        "peak_rss_bytes": peak_rss_bytes(),
        "windows_per_second": metrics["windows_per_second"],
        "train_windows": metrics["windows"]["train"],
        "epochs": metrics["epochs_completed"],
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3])))
