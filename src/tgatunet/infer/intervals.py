"""Completion intervals: a range around every filled value that holds the truth at a nominal rate on unseen people.

The network gives each reconstruction a spread ``s`` (its expected absolute error, learnt with a Laplace likelihood:
:func:`~tgatunet.train.objective.spread_loss`). Split-conformal calibration with that scale (locally weighted conformal
prediction, Lei et al., 2018) turns it into an interval with a coverage that is measured, not assumed: on the
validation recordings, with values hidden as evaluation hides them (:mod:`tgatunet.data.hiding`), the scores
``|truth - completion| / s`` are collected per channel and per kind of missing value (:data:`KINDS`). The interval at
coverage ``c`` is ``completion ± q s``, with ``q`` the ``ceil((n + 1) c)``-th smallest of the ``n`` scores (read from
a table of score quantiles at :data:`LEVELS`, at the first level at or above ``ceil((n + 1) c) / n``: never below
that score, so the guarantee holds; a coverage above ``n / (n + 1)`` has no finite interval). A channel
and kind with fewer than :data:`MIN_SCORES` scores takes the scores of its kind over all channels (the spread already
carries the channel's scale), or failing that all scores.

Because ``q`` is read from that table, any coverage can be asked for when the model is applied, without training
again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("points", "gaps", "need")  # a lone missing step; a run of them; the channel missing from the whole window
LEVELS = np.linspace(0.0, 1.0, 201)
MIN_SCORES = 50


def missing_kinds(visible: np.ndarray) -> np.ndarray:
    """``[W, T, C]`` int8 index in :data:`KINDS` of each cell of windows ``visible [W, T, C]`` if it is filled:
    ``need`` where the channel has no visible value in the window, ``points`` where the steps beside it (inside the
    window) are visible, ``gaps`` otherwise."""
    before = np.ones_like(visible)
    before[:, 1:] = visible[:, :-1]
    after = np.ones_like(visible)
    after[:, :-1] = visible[:, 1:]
    kinds = np.where(before & after, 0, 1).astype(np.int8)
    kinds[np.broadcast_to(~visible.any(axis=1, keepdims=True), visible.shape)] = 2
    return kinds


@dataclass(frozen=True)
class IntervalCalibration:
    """Quantiles of the calibration scores: ``quantiles [kinds, C, levels]`` at :data:`LEVELS`, from ``counts
    [kinds, C]`` scores each (those of the channel and kind, or of the pool it fell back to)."""

    channels: list[str]
    quantiles: np.ndarray
    counts: np.ndarray

    @classmethod
    def fit(cls, scores: np.ndarray, kinds: np.ndarray, channel: np.ndarray, channels: list[str]) -> IntervalCalibration:
        """From ``scores [n]`` (``|truth - completion| / spread``) with each score's ``kinds [n]`` and ``channel [n]``
        index."""
        if not len(scores):
            raise ValueError("no calibration score")
        K, C = len(KINDS), len(channels)
        quantiles, counts = np.zeros((K, C, len(LEVELS))), np.zeros((K, C), np.int64)
        pooled = {k: scores[kinds == k] for k in range(K)}
        for k in range(K):
            for c in range(C):
                own = scores[(kinds == k) & (channel == c)]
                use = next(s for s in (own, pooled[k], scores) if len(s) >= MIN_SCORES or s is scores)
                quantiles[k, c], counts[k, c] = np.quantile(use, LEVELS, method="inverted_cdf"), len(use)
        return cls(list(channels), quantiles, counts)

    def factors(self, coverage: float) -> np.ndarray:
        """``[kinds, C]``: the ``q`` of each kind and channel at ``coverage`` (finite-sample corrected; inf where
        ``coverage`` needs more scores than there are)."""
        need = np.ceil((self.counts + 1) * coverage) / self.counts  # [kinds, C] the level of the order statistic
        at = np.minimum(np.searchsorted(LEVELS, need - 1e-12), len(LEVELS) - 1)  # the first grid level at or above it
        out = np.take_along_axis(self.quantiles, at[..., None], axis=-1)[..., 0]
        return np.where(need > 1.0, np.inf, out)

    def highest_coverage(self) -> float:
        """The highest coverage with a finite interval for every kind and channel: ``n / (n + 1)`` of the fewest scores."""
        n = int(self.counts.min())
        return n / (n + 1)

    def to_dict(self) -> dict[str, Any]:
        return {"kinds": list(KINDS), "levels": LEVELS.tolist(), "channels": self.channels,
                "quantiles": np.round(self.quantiles, 6).tolist(), "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntervalCalibration:
        quantiles = np.asarray(d["quantiles"], dtype=np.float64)
        if d["kinds"] != list(KINDS) or not np.allclose(d["levels"], LEVELS) or quantiles.shape != (len(KINDS), len(d["channels"]), len(LEVELS)):
            raise ValueError("an interval table of another layout")
        return cls(list(d["channels"]), quantiles, np.asarray(d["counts"], dtype=np.int64))


def interval_bounds(completed: np.ndarray, filled: np.ndarray, spread: np.ndarray, kind: np.ndarray,
                    factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``lower, upper [n, C]`` around the filled cells of ``completed [n, C]`` (``filled``, ``spread``, ``kind``
    ``[n, C]`` as :class:`~tgatunet.infer.stream.Finished` has them; ``factors [kinds, C]``); NaN where not filled."""
    half = factors[np.maximum(kind, 0), np.arange(completed.shape[1])[None, :]] * spread
    half = np.where(filled, half, np.nan)
    return completed - half, completed + half


def interval_score(lower: np.ndarray, upper: np.ndarray, truth: np.ndarray, coverage: float) -> np.ndarray:
    """The interval (Winkler) score of each interval: its width, plus ``2 / (1 - coverage)`` times how far the truth
    lies outside it; lower is better, and only an interval that is both narrow and honest scores well."""
    alpha = 1.0 - coverage
    return (upper - lower) + (2.0 / alpha) * (np.maximum(lower - truth, 0.0) + np.maximum(truth - upper, 0.0))


def interval_figures(truth: np.ndarray, lower: np.ndarray, upper: np.ndarray, coverage: float) -> dict[str, float]:
    """Coverage (share of ``truth`` inside), mean width and mean interval score of intervals ``[n]``."""
    return {"coverage": float(np.mean((truth >= lower) & (truth <= upper))), "width": float(np.mean(upper - lower)),
            "interval_score": float(np.mean(interval_score(lower, upper, truth, coverage)))}
