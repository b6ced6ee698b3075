"""Bringing a channel onto the model's grid: anti-aliased decimation going down, band-limited interpolation going up.

A channel's samples sit at whole indices ``q`` of its own lattice; sample ``q`` lies at grid coordinate
``offset + q * ratio`` (``ratio``: grid steps per sample, ``up / down`` as a fraction). Each run of consecutive samples
(a stretch) is resampled on its own with SciPy's polyphase FIR filter (:func:`scipy.signal.upfirdn`, the filter
:func:`scipy.signal.resample_poly` designs: a Kaiser-windowed sinc cut at the lower of the two Nyquist frequencies), and
only grid points between a stretch's first and last sample get a value: a gap, or a stretch of unobserved samples, stays
unobserved (NaN). A stretch is padded by reflection at its ends, and its padded start is put on a multiple of ``down``
so that the filter's outputs fall on the same grid whatever part of a recording is resampled: a recording resampled
in pieces, with :func:`margin` grid steps of context on each side, equals the recording resampled whole. A channel
already at the grid's rate but off its phase (half a step) is read between its samples linearly: there is nothing to
filter.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
from scipy.signal import firwin, upfirdn

MAX_DENOMINATOR = 1000  # rates are matched as fractions up / down with down at most this


def grid_ratio(rate_hz: float, grid_hz: float) -> Fraction:
    """Grid steps per sample of a table of ``rate_hz``, as a fraction with a small denominator."""
    return Fraction(grid_hz / rate_hz).limit_denominator(MAX_DENOMINATOR)


@functools.lru_cache(maxsize=64)
def _lowpass(up: int, down: int) -> tuple[np.ndarray, int]:
    """The polyphase filter's taps (at ``up`` times the input rate) and its delay in output samples: half its length,
    a multiple of ``down`` so that output ``m`` falls exactly at input position ``m * down / up``. At the same rate
    (``up == down == 1``) there is nothing to filter: the samples themselves."""
    if up == down == 1:
        return np.ones(1), 0
    half = -(-10 * max(up, down) // down) * down
    taps = firwin(2 * half + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up
    return taps, half // down


def reach(ratio: Fraction) -> int:
    """Input samples on each side of an output that the filter reads, plus the alignment of a stretch's start."""
    up, down = ratio.numerator, ratio.denominator
    return -(-10 * max(up, down) // up) + 2 * down + 1


def margin(ratio: Fraction) -> int:
    """Grid steps of context a piece of a recording needs on each side to be resampled as in the whole."""
    return math.ceil(reach(ratio) * ratio) + 2


def on_grid(q: np.ndarray, values: np.ndarray, ratio: Fraction, offset: Fraction, g0: int, g1: int) -> np.ndarray:
    """Grid points ``g0 .. g1 - 1`` of one channel observed at lattice indices ``q [m]`` (increasing) with ``values [m]``:
    ``[g1 - g0]`` float64, NaN outside its stretches."""
    out = np.full(g1 - g0, np.nan)
    if not len(q):
        return out
    if ratio == 1 and offset.denominator == 1:  # same rate on the grid: the samples themselves
        at = q + int(offset) - g0
        inside = (at >= 0) & (at < len(out))
        out[at[inside]] = values[inside]
        return out
    up, down = ratio.numerator, ratio.denominator
    # grid coordinates in whole units of 1 / scale: sample q lies at (shift + q * step) / scale
    scale = math.lcm(offset.denominator, down)
    shift, step = offset.numerator * (scale // offset.denominator), up * (scale // down)
    taps, delay = _lowpass(up, down)
    pad = reach(ratio)
    breaks = np.flatnonzero(np.diff(q) != 1) + 1
    for lo, hi in zip([0, *breaks], [*breaks, len(q)]):
        q0 = int(q[lo])
        first = max(g0, -(-(shift + q0 * step) // scale))
        last = min(g1 - 1, (shift + int(q[hi - 1]) * step) // scale)
        if first > last:
            continue
        start = (q0 - pad) // down * down
        padded = _reflected(values[lo:hi], q0 - start, pad)
        y = upfirdn(taps, padded, up, down)[delay:]  # y[m] at lattice index start + m * down / up
        base = shift + start * step  # scale x the grid coordinate of y[0]: a whole number plus the offset's fraction
        whole, frac = base // scale, base % scale
        g = np.arange(first, last + 1)
        if frac == 0:
            out[g - g0] = y[g - whole]
        else:  # g lies between y[g - whole - 1] (at g - 1 + frac) and y[g - whole] (at g + frac)
            f = frac / scale
            out[g - g0] = f * y[g - whole - 1] + (1 - f) * y[g - whole]
    return out


def _reflected(x: np.ndarray, front: int, back: int) -> np.ndarray:
    """``x`` with ``front`` and ``back`` samples mirrored about its ends (as ``np.pad(mode="reflect")``, repeated as
    often as the padding needs; a single sample repeated)."""
    n = len(x)
    if n == 1:
        return np.full(front + 1 + back, x[0])
    period = 2 * (n - 1)
    i = np.arange(-front, n + back) % period
    return x[np.where(i >= n, period - i, i)]


def at_coordinates(grid: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
    """``grid [G, ...]`` read at fractional grid ``coordinates [n]`` (within ``0 .. G - 1``) by linear interpolation:
    ``[n, ...]``; a whole coordinate reads its grid point exactly."""
    lo = np.floor(coordinates).astype(np.int64)
    hi = np.minimum(lo + 1, len(grid) - 1)
    w = (coordinates - lo).reshape(-1, *([1] * (grid.ndim - 1)))
    exact = w == 0
    return np.where(exact, grid[lo], (1 - w) * grid[lo] + w * grid[hi])


def segment_on_grid(positions: np.ndarray, values: np.ndarray, steps: np.ndarray, ratio: Fraction, g0: int, g1: int) -> np.ndarray:
    """Grid points ``g0 .. g1 - 1`` of a segment's rows at lattice ``positions [n]`` with ``values [n, C]`` (NaN: not
    observed): ``[g1 - g0, C]``. Channel ``c`` is sampled every ``steps[c]`` positions; its samples of each phase
    (position modulo its step) are resampled as one sequence, so a rhythm that shifts starts a new stretch."""
    out = np.full((g1 - g0, values.shape[1]), np.nan)
    for c in np.flatnonzero((~np.isnan(values)).any(axis=0)):
        rows = np.flatnonzero(~np.isnan(values[:, c]))
        k = int(steps[c])
        phase = positions[rows] % k
        for p in np.unique(phase):
            mine = rows[phase == p]
            grid = on_grid((positions[mine] - p) // k, values[mine, c], ratio * k, Fraction(int(p)) * ratio, g0, g1)
            out[:, c] = np.where(np.isnan(grid), out[:, c], grid)
    return out


def grid_length(last_position: int, ratio: Fraction) -> int:
    """Grid points of a segment whose last row is at lattice position ``last_position``: up to the first at or after
    it, so that every row of the segment lies between two of its grid points."""
    return -(-last_position * ratio.numerator // ratio.denominator) + 1


def rows_before(positions: np.ndarray, grid: np.ndarray, ratio: Fraction) -> np.ndarray:
    """For each grid point, the last row at or before it (index into ``positions``, increasing)."""
    return np.searchsorted(positions * ratio.numerator, grid * ratio.denominator, side="right") - 1
