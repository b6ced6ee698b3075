"""After training, how far the run's outputs can be trusted, measured on its validation recordings.

Kept in the run's ``calibration.json``, which ``predict``, ``complete`` and :func:`tgatunet.load` apply:

* the temperature of the class probabilities (:mod:`tgatunet.train.temperature`);
* the completion intervals' score quantiles (:mod:`tgatunet.infer.intervals`), from the validation recordings with
  values hidden by each pattern of :mod:`tgatunet.data.hiding`;
* a verdict on each completed channel, per pattern: the completion's MAE against the training mean's (a completion
  within 5% of it is ``no better than the mean``: its filled values are best treated as unknown), Pearson r, and the
  intervals' coverage and width at ``interval_coverage``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from tgatunet.config import Config
from tgatunet.data.hiding import PATTERNS, hide, scores
from tgatunet.data.prepared import PreparedData
from tgatunet.data.store_windows import validation_recordings
from tgatunet.files import atomic_write_text
from tgatunet.infer.intervals import KINDS, IntervalCalibration, interval_figures
from tgatunet.infer.rundir import RunDir
from tgatunet.infer.stream import WindowModel, through_windows
from tgatunet.infer.trained import load_trained
from tgatunet.train.prepare import Data
from tgatunet.train.temperature import temperature_on_validation

NO_BETTER = 0.95  # a completion whose MAE is above this share of the mean fill's is no better than the mean
# Independent draws of the gaps and points hiding over the validation recordings: validation sets are small, and each
# draw adds scores at other places (the need pattern hides whole channels: one draw is all there is).
DRAWS = 5


def calibrate(run: RunDir, data: Data, config: Config, device: torch.device) -> dict[str, Any]:
    """Calibrate the run's best checkpoint (on ``device``, knn graphs built, not cached) on the validation data; written
    to ``calibration.json`` and returned, less the interval table, for ``metrics.json``."""
    if not run.inference_checkpoints():  # stopped before its first checkpoint: nothing to calibrate
        return {"temperature": 1.0, "val_windows": 0}
    model = replace(load_trained(run, device, compile=False), temperature=1.0, graph_cache=None)
    result = temperature_on_validation(model, data, config, device)
    recordings = data if isinstance(data, PreparedData) else validation_recordings(data)
    intervals, report = calibrate_intervals(model.windowed(), recordings, config)
    if intervals is not None:
        result.update(intervals=intervals.to_dict(), channels=report)
    atomic_write_text(run.calibration_path, json.dumps(result, indent=1))
    run.note_written(run.calibration_path)
    return {k: v for k, v in result.items() if k != "intervals"}


def calibrate_intervals(model: WindowModel, data: PreparedData, config: Config) -> tuple[IntervalCalibration | None, list[dict[str, Any]]]:
    """The interval table and the per-channel verdicts from the validation recordings (None, []: nothing to hide)."""
    e = config.evaluation
    hidden: dict[str, tuple[np.ndarray, ...]] = {}  # pattern -> truth, completion, spread, kind, channel  [n] each
    for pattern in PATTERNS:
        recordings = [r for draw in range(1 if pattern == "need" else DRAWS)
                      for r in hide(data, pattern, e.eval_gap_max, e.eval_point_prob, e.eval_seed + draw, split="val")]
        if recordings:
            finished = through_windows(model, [np.where(r.visible, r.values, np.nan) for r in recordings], spread=True)
            cells = [(r.hidden & f.filled, r, f) for r, f in zip(recordings, finished)]
            hidden[pattern] = tuple(np.concatenate(x) for x in zip(*(
                (r.values[at], f.completed[at], f.spread[at], f.kind[at], np.nonzero(at)[1]) for at, r, f in cells)))
    if not hidden:
        return None, []
    # Each kind is calibrated on the pattern that makes it: a lone missing step where single values are missing all
    # over (not a drop-out of length one in an otherwise whole window, which is easier), a run where runs are missing.
    own = [tuple(x[arrays[3] == KINDS.index(p)] for x in arrays) for p, arrays in hidden.items()]
    truth, completion, spread, kind, channel = (np.concatenate(x) for x in zip(*own))
    if not len(truth):
        truth, completion, spread, kind, channel = (np.concatenate(x) for x in zip(*hidden.values()))
    intervals = IntervalCalibration.fit(np.abs(truth - completion) / spread, kind, channel, data.channels)
    factors = intervals.factors(e.interval_coverage)
    report = []
    for pattern, (truth, completion, spread, kind, channel) in hidden.items():
        half = factors[kind, channel] * spread
        report += channel_verdicts(pattern, truth, completion, half, channel, data.channels, e.interval_coverage)
    return intervals, report


def channel_verdicts(pattern: str, truth: np.ndarray, completion: np.ndarray, half: np.ndarray, channel: np.ndarray,
                     channels: list[str], coverage: float) -> list[dict[str, Any]]:
    """One row per channel with hidden values (``[n]`` arrays, normalised units, ``half``: the intervals' half-widths):
    the completion's scores, the mean fill's MAE, the intervals' figures and the verdict."""
    rows = []
    for c in np.unique(channel):
        at = channel == c
        fit = scores(completion[at], truth[at])
        mean_fill = float(np.abs(truth[at]).mean())  # the training mean is 0 in normalised units
        ratio = fit["mae"] / mean_fill if mean_fill > 0 else 1.0
        rows.append({"channel": channels[c], "pattern": pattern, "values": int(at.sum()), "mae": fit["mae"], "mean_fill_mae": mean_fill,
                     "mae_vs_mean": ratio, "pearson": fit["pearson"],
                     **interval_figures(truth[at], completion[at] - half[at], completion[at] + half[at], coverage),
                     "verdict": "no better than the mean" if ratio > NO_BETTER else "better than the mean"})
    return rows
