"""Recordings with values hidden by one of three kinds of missingness, to score and calibrate completions on.

Every recording (a block segment of a split) gets values hidden, by one of three patterns, with a fixed seed:

* ``need``: a whole channel set that another source needs, in every recording of a source that has those channels (the
  completion the run exists for);
* ``gaps``: in each observed channel, contiguous drop-outs of 1 to ``gap_max`` x ``window_size`` steps, one per
  ``window_size`` rows;
* ``points``: single observed values, each with probability ``point_prob``.

Evaluation hides them in the test recordings; the completion intervals are calibrated on the validation recordings
hidden the same way (:mod:`tgatunet.infer.intervals`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tgatunet.data.prepared import PreparedData

PATTERNS = ("need", "gaps", "points")


@dataclass
class Recording:
    """One recording with values hidden: ``values``, ``observed``, ``hidden`` ``[n, C]`` (normalised)."""

    source: int
    values: np.ndarray
    observed: np.ndarray
    hidden: np.ndarray

    @property
    def visible(self) -> np.ndarray:
        return self.observed & ~self.hidden


def need_sets(data: PreparedData) -> list[tuple[int, np.ndarray, list[str]]]:
    """``(having source, [C] hidden channels, sources that need them)`` for every set that can be scored."""
    found: dict[tuple[int, tuple[bool, ...]], list[str]] = {}
    for s_need, need in enumerate(data.source_need.numpy()):
        for s_have in range(len(data.source_names)):
            has = data.observed[data.row_offsets[s_have] : data.row_offsets[s_have + 1]].any(axis=0)
            if s_have != s_need and (need & has).any():
                found.setdefault((s_have, tuple((need & has).tolist())), []).append(data.source_names[s_need])
    return [(s, np.array(h), names) for (s, h), names in found.items()]


def hide(data: PreparedData, pattern: str, gap_max: float, point_prob: float, seed: int, split: str = "test") -> list[Recording]:
    """The recordings of ``split`` with ``pattern``'s values hidden (recordings where nothing would stay visible left
    out)."""
    rng = np.random.default_rng(seed)
    segments = data.split_segments(split)
    out = []
    if pattern == "need":
        for source, channels, _ in need_sets(data):
            out += [_recording(data, s, lo, hi, lambda obs, n: obs & channels[None, :]) for s, lo, hi in segments if s == source]
    else:
        for s, lo, hi in segments:
            if pattern == "gaps":
                out.append(_recording(data, s, lo, hi, lambda obs, n: obs & _gaps(n, obs.shape[1], data.window_size, gap_max, rng)))
            else:
                out.append(_recording(data, s, lo, hi, lambda obs, n: obs & (rng.random(obs.shape) < point_prob)))
    return [r for r in out if r.hidden.any() and r.visible.any()]


def _recording(data: PreparedData, source: int, lo: int, hi: int, hidden: Callable) -> Recording:
    observed = data.observed[lo:hi]
    return Recording(source, data.values[lo:hi], observed, hidden(observed, hi - lo))


def _gaps(n: int, channels: int, window: int, gap_max: float, rng: np.random.Generator) -> np.ndarray:
    """``[n, C]`` bool: per channel, one drop-out of 1 .. gap_max x window steps per ``window`` rows."""
    mask = np.zeros((n, channels), dtype=bool)
    longest = max(1, round(gap_max * window))
    for c in range(channels):
        for _ in range(max(1, n // window)):
            length = int(rng.integers(1, longest + 1))
            start = int(rng.integers(0, max(1, n - length + 1)))
            mask[start : start + length, c] = True
    return mask


def scores(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and Pearson r of ``prediction`` against ``truth`` (``[n]`` each)."""
    err = prediction - truth
    ok = len(truth) > 1 and np.ptp(prediction) > 0 and np.ptp(truth) > 0  # Pearson r is undefined for a constant
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean())),
            "pearson": float(np.corrcoef(prediction, truth)[0, 1]) if ok else 0.0}
