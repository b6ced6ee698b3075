"""Lightning's CSV log, continued across a resume instead of started afresh.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its folder is not empty, so the epochs before an interruption
would vanish from the log and the loss plot. Here the file is kept; on a resume, the rows logged after the checkpoint
the run continues from (the part of an epoch that was interrupted and is run again) are dropped, so every epoch is in
the log once.
"""

from __future__ import annotations

import csv
import os

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _ContinuedWriter(ExperimentWriter):
    def __init__(self, log_dir: str, after_step: int | None) -> None:
        self.after_step = after_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as handle:
            reader = csv.DictReader(handle)
            keys, rows = list(reader.fieldnames or []), list(reader)
        if self.after_step is not None:
            rows = [r for r in rows if r.get("step", "") == "" or int(float(r["step"])) <= self.after_step]
        with open(self.metrics_file_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = keys


class ContinuedCSVLogger(CSVLogger):
    """``CSVLogger`` that keeps its ``metrics.csv``; ``after_step``: on a resume, the checkpoint's global step."""

    def __init__(self, *args, after_step: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.after_step = after_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedWriter(self.log_dir, self.after_step)
        return self._experiment
