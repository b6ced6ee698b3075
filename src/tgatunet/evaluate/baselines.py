"""The baselines a completion is scored against, on a recording ``[n, C]`` with values hidden.

Each takes the recording's values (normalised) and what is visible, and fills every position; evaluation scores them
where values were hidden, as it scores the model. ``mean_fill``: each channel's training mean (0 in normalised units).
``linear``: interpolation in time between the visible values of the channel (the nearest one beyond the first and last).
``locf``: the last visible value carried forward (the first one backwards at the start). ``ridge``: a linear regression
from the other channels at lags ``-lags .. +lags``, fitted on the training recordings (:class:`LaggedRidge`).
"""

from __future__ import annotations

import numpy as np


def mean_fill(values: np.ndarray, visible: np.ndarray) -> np.ndarray:
    return np.zeros_like(values, dtype=np.float64)


def linear_fill(values: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """``[n, C]``: each channel interpolated in time from its visible values (0 where it has none)."""
    out = np.zeros(values.shape, dtype=np.float64)
    t = np.arange(len(values))
    for c in range(values.shape[1]):
        seen = visible[:, c]
        if seen.any():
            out[:, c] = np.interp(t, t[seen], values[seen, c])
    return out


def locf_fill(values: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """``[n, C]``: the last visible value of each channel carried forward; before the first, the first."""
    out = np.zeros(values.shape, dtype=np.float64)
    for c in range(values.shape[1]):
        seen = np.flatnonzero(visible[:, c])
        if len(seen):
            last = np.maximum.accumulate(np.where(visible[:, c], np.arange(len(values)), -1))
            out[:, c] = values[np.where(last >= 0, last, seen[0]), c]
    return out


def lagged(features: np.ndarray, lags: int) -> np.ndarray:
    """``[n, F] -> [n, F * (2 * lags + 1)]``: the values at steps ``t - lags .. t + lags`` (edges repeated)."""
    padded = np.pad(features, ((lags, lags), (0, 0)), mode="edge")
    return np.concatenate([padded[i : i + len(features)] for i in range(2 * lags + 1)], axis=1)


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge with an unpenalised intercept: ``x [N, F], y [N, K] -> (weights [F, K], bias [K])``."""
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    weights = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    return weights, y_mean - x_mean @ weights


class LaggedRidge:
    """Ridge regressions of each channel from the other channels at lags, fitted on training recordings.

    Features are the other channels' visible values, linearly interpolated where hidden
    (so a drop-out in a feature channel does not stop the regression); a channel is
    predicted only from channels that are not entirely hidden in the recording.

    Args:
        recordings: training recordings, each ``(values [n, C], observed [n, C])`` normalised.
    """

    def __init__(self, recordings: list[tuple[np.ndarray, np.ndarray]], lags: int, alpha: float) -> None:
        self.recordings = [(values, observed, linear_fill(values, observed)) for values, observed in recordings]
        self.lags, self.alpha = lags, alpha
        self._fitted: dict[tuple[int, tuple[int, ...]], tuple[np.ndarray, np.ndarray]] = {}

    def _fit(self, target: int, features: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        key = (target, features)
        if key not in self._fitted:
            xs, ys = [], []
            for values, observed, filled in self.recordings:
                rows = observed[:, target] & observed[:, list(features)].any(axis=1)
                if rows.any():
                    xs.append(lagged(filled[:, list(features)], self.lags)[rows])
                    ys.append(values[rows, target : target + 1])
            if not xs:
                return np.zeros((len(features) * (2 * self.lags + 1), 1)), np.zeros(1)
            self._fitted[key] = fit_ridge(np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64), self.alpha)
        return self._fitted[key]

    def __call__(self, values: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """``[n, C]``: every channel predicted from the channels visible somewhere in the recording."""
        out = np.zeros(values.shape, dtype=np.float64)
        present = np.flatnonzero(visible.any(axis=0))
        filled = linear_fill(values, visible)
        for c in range(values.shape[1]):
            features = tuple(int(f) for f in present if f != c)
            if features:
                weights, bias = self._fit(c, features)
                out[:, c] = (lagged(filled[:, list(features)], self.lags) @ weights + bias)[:, 0]
        return out


FILLS = {"mean_fill": mean_fill, "linear": linear_fill, "locf": locf_fill}
