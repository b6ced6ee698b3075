"""Completion scored on the test recordings, for three kinds of missingness, against baselines.

Every test recording (a block segment of the test split) gets values hidden, by one of three patterns, with a fixed
seed:

* ``need``: a whole channel set that another source needs, in every recording of a source that has those channels (the
  completion the run exists for);
* ``gaps``: in each observed channel, contiguous drop-outs of 1 to ``eval_gap_max`` x ``window_size`` steps, one per
  ``window_size`` rows;
* ``points``: single observed values, each with probability ``eval_point_prob``.

The model completes each recording as ``tgatunet complete`` would (covering windows, overlapping predictions averaged
per row) and each baseline (:mod:`tgatunet.evaluate.baselines`, and SAITS through the same windows) fills the same
recording; all are scored on exactly the hidden values, in normalised units (z-scores of the training split).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from tgatunet.evaluate.baselines import FILLS, LaggedRidge
from tgatunet.infer.stream import Stream, WindowModel
from tgatunet.data.normalize import ChannelStats
from tgatunet.data.prepared import PreparedData

PATTERNS = ("need", "gaps", "points")


@dataclass
class Recording:
    """One test recording with values hidden: ``values``, ``observed``, ``hidden`` ``[n, C]`` (normalised)."""

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


def hide(data: PreparedData, pattern: str, gap_max: float, point_prob: float, seed: int) -> list[Recording]:
    """The test recordings with ``pattern``'s values hidden (recordings where nothing would stay visible left out)."""
    rng = np.random.default_rng(seed)
    segments = data.split_segments("test")
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


def through_windows(model: WindowModel, recordings: list[Recording]) -> list[np.ndarray]:
    """Each recording completed by ``model``'s windows (hidden values as NaN), as ``tgatunet complete`` does it."""
    C = len(model.channels)
    stream = Stream(replace(model, stats=ChannelStats(np.zeros(C), np.ones(C))), fillable=np.ones(C, dtype=bool))
    lengths = [len(r.values) for r in recordings]
    values = np.concatenate([np.where(r.visible, r.values, np.nan) for r in recordings])
    blocks = np.repeat(np.arange(len(recordings)).astype(str).astype(object), lengths)
    parts = stream.feed(values, blocks, 0) + stream.finish()
    return np.split(np.concatenate([p.completed for p in parts]), np.cumsum(lengths)[:-1])


def scores(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = prediction - truth
    ok = len(truth) > 1 and np.ptp(prediction) > 0 and np.ptp(truth) > 0  # Pearson r is undefined for a constant
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean())),
            "pearson": float(np.corrcoef(prediction, truth)[0, 1]) if ok else 0.0}


def score_method(filled: list[np.ndarray], recordings: list[Recording], channels: list[str]) -> dict[str, Any]:
    """Scores of one method over every hidden value, per channel and their mean over channels."""
    per_channel = {}
    for c, name in enumerate(channels):
        truth = np.concatenate([r.values[r.hidden[:, c], c] for r in recordings])
        if len(truth):
            guess = np.concatenate([f[r.hidden[:, c], c] for f, r in zip(filled, recordings)])
            per_channel[name] = scores(guess, truth)
    mean = {k: float(np.mean([v[k] for v in per_channel.values()])) for k in ("mae", "rmse", "pearson")}
    return {**mean, "per_channel": per_channel}


def evaluate_patterns(data: PreparedData, model: WindowModel, ridge: LaggedRidge, config, window_methods: dict[str, WindowModel]) -> dict[str, Any]:

    """``{pattern: {method: scores}}`` plus what was hidden and how long each method took."""
    e = config.evaluation
    result: dict[str, Any] = {"hidden_values": {}, "seconds": {}}
    for pattern in PATTERNS:
        recordings = hide(data, pattern, e.eval_gap_max, e.eval_point_prob, e.eval_seed)
        if not recordings:
            continue
        methods: dict[str, Callable[[], list[np.ndarray]]] = {"model": lambda: through_windows(model, recordings)}
        for name, fill in FILLS.items():
            if pattern != "need" or name == "mean_fill":  # interpolation has nothing to go on across a whole channel
                methods[name] = lambda fill=fill: [fill(r.values, r.visible) for r in recordings]
        methods["ridge"] = lambda: [ridge(r.values, r.visible) for r in recordings]
        for name, imputer in window_methods.items():
            methods[name] = lambda imputer=imputer: through_windows(imputer, recordings)
        result[pattern] = {}
        for name, fill in methods.items():
            start = time.perf_counter()
            result[pattern][name] = score_method(fill(), recordings, data.channels)
            result["seconds"][name] = result["seconds"].get(name, 0.0) + time.perf_counter() - start
        result["hidden_values"][pattern] = int(sum(r.hidden.sum() for r in recordings))
    return result
