"""Windowing: pure functions from segment bounds to window start rows.

A window holds ``window_size`` rows taken every ``downsample`` rows, so it spans ``(window_size - 1) * downsample + 1``
consecutive rows of one segment; windows never cross a segment (block) boundary.
"""

from __future__ import annotations

import numpy as np


def window_span(window_size: int, downsample: int) -> int:
    """Rows covered by one window."""
    return (window_size - 1) * downsample + 1


def window_starts(bounds: np.ndarray, span: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``span`` rows every ``stride`` rows inside each segment ``bounds [S, 2]`` (``[start, end)`` rows).

    Returns ``starts [W]`` (absolute row of each window's first row) and ``segment [W]`` (the segment it lies in).
    """
    starts, segments = [], []
    for s, (lo, hi) in enumerate(bounds):
        if hi - lo >= span:
            first = np.arange(lo, hi - span + 1, stride, dtype=np.int64)
            starts.append(first)
            segments.append(np.full(len(first), s, dtype=np.int64))
    if not starts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(starts), np.concatenate(segments)


def row_index(starts: np.ndarray, window_size: int, downsample: int) -> np.ndarray:
    """``[W, T]`` absolute rows of each window's time steps."""
    return starts[:, None] + np.arange(window_size, dtype=np.int64)[None, :] * downsample


def window_labels(row_labels: np.ndarray, rows: np.ndarray, rule: str) -> np.ndarray:
    """Label of each window from its rows' labels (-1 = missing).

    ``last``: the label of the window's last row. ``majority``: the most frequent
    label among labelled rows (ties to the smallest class index).
    """
    labels = row_labels[rows]  # [W, T]
    if rule == "last":
        return labels[:, -1].copy()
    n_classes = int(max(row_labels.max(initial=-1), 0)) + 1
    counts = np.zeros((len(labels), n_classes), dtype=np.int64)
    w_idx = np.repeat(np.arange(len(labels)), labels.shape[1])
    flat = labels.reshape(-1)
    keep = flat >= 0
    np.add.at(counts, (w_idx[keep], flat[keep]), 1)
    result = counts.argmax(axis=1)
    result[counts.sum(axis=1) == 0] = -1
    return result


def labels_of_windows(row_labels: np.ndarray, starts: np.ndarray, window_size: int, downsample: int, rule: str, chunk: int = 1 << 16) -> np.ndarray:
    """``[W]`` :func:`window_labels` of the windows starting at ``starts``, a chunk of windows at a time."""
    parts = [window_labels(row_labels, row_index(starts[i : i + chunk], window_size, downsample), rule) for i in range(0, len(starts), chunk)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def average_overlaps(rows: np.ndarray, predictions: np.ndarray, n_rows: int, where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``mean [n_rows, C]`` float64 (0 where no step landed) and ``count [n_rows]`` of overlapping predictions.

    ``rows [W, T]``: the row of each window step; ``predictions [W, T, C]``; ``where [W, T]`` bool: the steps that
    count (e.g. False on padding), all if None.
    """
    where = np.ones(rows.shape, dtype=bool) if where is None else where
    total = np.zeros((n_rows, predictions.shape[-1]), dtype=np.float64)
    count = np.zeros(n_rows, dtype=np.int64)
    np.add.at(total, rows[where], predictions[where])
    np.add.at(count, rows[where], 1)
    return total / np.maximum(count, 1)[:, None], count
