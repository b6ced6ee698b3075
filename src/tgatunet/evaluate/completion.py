"""Completion scored on the test recordings, for three kinds of missingness, against baselines; and its intervals.

The test recordings get values hidden by the patterns of :mod:`tgatunet.data.hiding` (``need``, ``gaps``,
``points``). The model completes each recording as ``tgatunet complete`` would (covering windows, overlapping
predictions averaged per row) and each baseline (:mod:`tgatunet.evaluate.baselines`, and SAITS through the same
windows) fills the same recording; all are scored on exactly the hidden values, in normalised units (z-scores of the
training split).

The model's intervals (:mod:`tgatunet.infer.intervals`, at ``interval_coverage``) are scored on the same values:
coverage, mean width and interval score, beside a reference interval at the same coverage: the ridge baseline's
completion plus or minus the quantile of its absolute errors on the validation recordings hidden the same way (per
pattern and channel, split-conformal). Figures are means over channels, as the MAE is.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from tgatunet.data.hiding import PATTERNS, Recording, hide, scores
from tgatunet.data.prepared import PreparedData
from tgatunet.evaluate.baselines import FILLS, LaggedRidge
from tgatunet.infer.intervals import interval_bounds, interval_figures
from tgatunet.infer.stream import Finished, WindowModel, through_windows

FIGURES = ("coverage", "width", "interval_score")


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


def hidden_values(recordings: list[Recording]) -> list[np.ndarray]:
    """The recordings as a model is given them: NaN where a value is not visible."""
    return [np.where(r.visible, r.values, np.nan) for r in recordings]


def score_intervals(bounds: list[tuple[np.ndarray, np.ndarray]], recordings: list[Recording], channels: list[str],
                    coverage: float) -> dict[str, Any]:
    """Coverage, width and interval score of ``(lower, upper) [n, C]`` per recording over every hidden value, per
    channel and their mean over channels."""
    per_channel = {}
    for c, name in enumerate(channels):
        at = [r.hidden[:, c] for r in recordings]
        if any(a.any() for a in at):
            cat = lambda arrays: np.concatenate([x[a, c] for x, a in zip(arrays, at)])  # noqa: E731
            per_channel[name] = interval_figures(cat([r.values for r in recordings]), cat([b[0] for b in bounds]),
                                                 cat([b[1] for b in bounds]), coverage)
    return {**{k: float(np.mean([v[k] for v in per_channel.values()])) for k in FIGURES}, "per_channel": per_channel}


def conformal_half_widths(errors: list[np.ndarray], coverage: float) -> np.ndarray:
    """``[C]``: per channel, the ``ceil((n + 1) coverage)``-th smallest of its ``n`` absolute errors (``errors``: per
    channel); a channel with none takes the quantile of all channels' errors."""
    def quantile(e: np.ndarray) -> float:
        return float(np.quantile(e, min(1.0, math.ceil((len(e) + 1) * coverage) / len(e)), method="inverted_cdf"))
    pooled = np.concatenate(errors)
    return np.array([quantile(e if len(e) else pooled) for e in errors])


def reference_bounds(data: PreparedData, ridge: LaggedRidge, pattern: str, completed: list[np.ndarray],
                     config) -> list[tuple[np.ndarray, np.ndarray]]:
    """The reference interval around each test recording's ridge completion (``completed``): ± the ridge's validation
    errors' conformal quantile per channel."""
    e = config.evaluation
    val = hide(data, pattern, e.eval_gap_max, e.eval_point_prob, e.eval_seed, split="val")
    if not val:
        return []
    fills = [ridge(r.values, r.visible) for r in val]
    errors = [np.concatenate([np.abs(f - r.values)[r.hidden[:, c], c] for f, r in zip(fills, val)]) for c in range(len(data.channels))]
    half = conformal_half_widths(errors, e.interval_coverage)
    return [(f - half, f + half) for f in completed]


def model_bounds(finished: list[Finished], model: WindowModel, coverage: float) -> list[tuple[np.ndarray, np.ndarray]]:
    factors = model.intervals.factors(coverage)
    return [interval_bounds(f.completed, f.filled, f.spread, f.kind, factors) for f in finished]


def evaluate_patterns(data: PreparedData, model: WindowModel, ridge: LaggedRidge, config, window_methods: dict[str, WindowModel]) -> dict[str, Any]:
    """``{pattern: {method: scores}}``, the model's intervals against the reference (``intervals: {pattern: ...}``),
    what was hidden and how long each method took."""
    e = config.evaluation
    result: dict[str, Any] = {"hidden_values": {}, "seconds": {}}
    for pattern in PATTERNS:
        recordings = hide(data, pattern, e.eval_gap_max, e.eval_point_prob, e.eval_seed)
        if not recordings:
            continue
        finished: list[Finished] = []  # the model's completions, with what its intervals need

        def run_model() -> list[np.ndarray]:
            finished[:] = through_windows(model, hidden_values(recordings), spread=model.intervals is not None)
            return [f.completed for f in finished]

        methods: dict[str, Callable[[], list[np.ndarray]]] = {"model": run_model}
        for name, fill in FILLS.items():
            if pattern != "need" or name == "mean_fill":  # interpolation has nothing to go on across a whole channel
                methods[name] = lambda fill=fill: [fill(r.values, r.visible) for r in recordings]
        methods["ridge"] = lambda: [ridge(r.values, r.visible) for r in recordings]
        for name, imputer in window_methods.items():
            methods[name] = lambda imputer=imputer: [f.completed for f in through_windows(imputer, hidden_values(recordings))]
        result[pattern], completed = {}, {}
        for name, fill in methods.items():
            start = time.perf_counter()
            completed[name] = fill()
            result[pattern][name] = score_method(completed[name], recordings, data.channels)
            result["seconds"][name] = result["seconds"].get(name, 0.0) + time.perf_counter() - start
        result["hidden_values"][pattern] = int(sum(r.hidden.sum() for r in recordings))
        reference = reference_bounds(data, ridge, pattern, completed["ridge"], config) if model.intervals is not None else []
        if reference:
            result.setdefault("intervals", {})[pattern] = interval_comparison(model_bounds(finished, model, e.interval_coverage), reference,
                                                               recordings, data.channels, e.interval_coverage)
    return result


def interval_comparison(model: list, reference: list, recordings: list[Recording], channels: list[str], coverage: float) -> dict[str, Any]:
    """The model's and the reference's interval figures, and the model's interval score as a share of the reference's."""
    ours, theirs = score_intervals(model, recordings, channels, coverage), score_intervals(reference, recordings, channels, coverage)
    ratio = ours["interval_score"] / theirs["interval_score"] if theirs["interval_score"] > 0 else float("nan")
    return {"nominal": coverage, "model": ours, "reference": theirs, "score_ratio": ratio}
