"""Completing and classifying rows fed in order, with memory bounded by a chunk, not by the file.

Rows arrive in chunks; contiguous rows with the same block id form a segment (a caller may also start one inside a
block: a gap in time). Inside a segment the model runs over
windows that cover every row: windows of ``window_size`` steps every ``stride`` rows, one more flush with the
segment's end, and a segment shorter than a window padded (padding hidden from the model). With ``downsample > 1``
each phase of rows (``lo, lo + d, ...``; ``lo + 1, lo + 1 + d, ...``) is covered as its own sequence. A window is
computed as soon as its rows have arrived; a row is finished once no window still to come covers it, and is then
handed back with the mean of the reconstructions and class probabilities of the windows that covered it.

Only cells that were not observed and belong to a fillable channel are filled; every observed value is returned as it
came. Asked for (``spread=True``), each filled cell also gets the mean spread (expected absolute error) of the windows'
reconstructions of it and the kind of missing value it was to them (:func:`~tgatunet.infer.intervals.missing_kinds`),
from which :mod:`tgatunet.infer.intervals` makes its interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import torch

from tgatunet.data.normalize import ChannelStats
from tgatunet.infer.intervals import IntervalCalibration, missing_kinds


class Predictor(Protocol):
    def predict_windows(self, values: torch.Tensor, visible: torch.Tensor,
                        batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``recon [W, T, C]``, ``logits [W, K]`` and ``spread [W, T, C]`` (None: this predictor has none) of
        normalised ``values, visible [W, T, C]``."""


@dataclass(frozen=True)
class WindowModel:
    """What streaming needs: a predictor of windows (the trained network, or a baseline imputer) and the run's
    channels, classes, normalisation and window layout; for a trained run, its interval calibration and the verdict
    on each completed channel (rows of ``calibration.json``'s ``channels``)."""

    predictor: Predictor
    channels: list[str]
    classes: list[str]
    stats: ChannelStats
    window_size: int
    downsample: int
    stride: int
    intervals: IntervalCalibration | None = None
    report: tuple[dict, ...] = ()


@dataclass
class Finished:
    """Rows handed back, ``first_row ...`` in input order: completed values, what was filled, class probabilities."""

    first_row: int
    completed: np.ndarray  # [n, C] float64 raw units: observed values, fills where filled, NaN elsewhere
    filled: np.ndarray  # [n, C] bool
    probabilities: np.ndarray  # [n, K] mean over the windows covering each row
    spread: np.ndarray | None = None  # [n, C] raw units: the windows' mean expected absolute error (spread=True)
    kind: np.ndarray | None = None  # [n, C] int8: index in intervals.KINDS, the most severe over the windows

    ARRAYS = ("completed", "filled", "probabilities", "spread", "kind")

    @classmethod
    def join(cls, parts: list[Finished]) -> Finished:
        """Consecutive parts as one."""
        cat = lambda key: None if getattr(parts[0], key) is None else np.concatenate([getattr(p, key) for p in parts])  # noqa: E731
        return cls(parts[0].first_row, *(cat(key) for key in cls.ARRAYS))

    def rows(self, lo: int, hi: int) -> Finished:
        """Rows ``lo .. hi`` of this part (positions in it, not file rows)."""
        cut = lambda x: None if x is None else x[lo:hi]  # noqa: E731
        return Finished(self.first_row + lo, *(cut(getattr(self, key)) for key in self.ARRAYS))


@dataclass
class _Segment:
    """The rows of the current segment not yet handed back, and what the windows so far made of them."""

    block: str
    lo: int  # file row of the segment's first row
    base: int  # file row of the first buffered row
    values: np.ndarray  # [m, C] raw, NaN = not observed
    recon: np.ndarray  # [m, C] sums
    probs: np.ndarray  # [m, K] sums
    count: np.ndarray  # [m]
    spread: np.ndarray  # [m, C] sums ([m, 0] when not asked for)
    kind: np.ndarray  # [m, C] int8 most severe kind so far, -1 none ([m, 0] when not asked for)
    next_start: list[int] = field(default_factory=list)  # per phase: next window start, in phase steps

    @property
    def end(self) -> int:
        return self.base + len(self.values)


@dataclass
class Windows:
    """Windows computed: their block, first and last input row, class probabilities."""

    blocks: np.ndarray  # [W] block ids
    first_row: np.ndarray  # [W]
    last_row: np.ndarray  # [W]
    probs: np.ndarray  # [W, K]


class Stream:
    """Feed chunks of rows in file order; get finished rows back, and every window's class probabilities.

    The windows that a chunk completes, over all the segments in it, go through the model together, so many short blocks
    (or an array of windows) cost batches, not one call each. ``fillable``: ``[C]`` bool, the channels whose missing
    cells are filled; ``batch_size``: windows per forward pass; ``spread``: also each filled cell's spread and kind of
    missing value (the predictor must give spreads).

    Attributes:
        windows: the windows computed since the caller last cleared the list.
    """


    def __init__(self, model: WindowModel, fillable: np.ndarray, batch_size: int = 256, spread: bool = False) -> None:
        self.model, self.fillable, self.batch_size, self.spread = model, fillable, batch_size, spread
        self.step = max(1, model.stride // model.downsample)
        self.segment: _Segment | None = None
        self.windows: list[Windows] = []

    def feed(self, values: np.ndarray, blocks: np.ndarray, first_row: int, starts: np.ndarray | None = None) -> list[Finished]:
        """Rows ``first_row ...`` of the input: ``values [n, C]`` raw (NaN: not observed), ``blocks [n]`` ids;
        ``starts [n]`` bool: rows that begin a new segment of the same block (a gap in time)."""
        if not len(blocks):
            return []
        jobs: list[tuple[_Segment, np.ndarray]] = []
        ended: list[_Segment] = []
        starts = np.zeros(len(blocks), bool) if starts is None else starts
        change = np.flatnonzero((blocks[1:] != blocks[:-1]) | starts[1:]) + 1
        for lo, hi in zip([0, *change], [*change, len(blocks)]):
            block = blocks[lo]
            if self.segment is None or self.segment.block != block or starts[lo]:
                if self.segment is not None:
                    jobs.append((self.segment, self._due_rows(self.segment, ended=True)))
                    ended.append(self.segment)
                self.segment = self._new_segment(block, first_row + lo)
            self._append(values[lo:hi])
        if self.segment is not None:
            jobs.append((self.segment, self._due_rows(self.segment, ended=False)))
        self._compute(jobs)
        out = [self._hand_back(s, ended=True) for s in ended]
        if self.segment is not None:
            out.append(self._hand_back(self.segment, ended=False))
        return [f for f in out if f is not None]

    def finish(self) -> list[Finished]:
        """The end of the input: every buffered row, finished."""
        if self.segment is None:
            return []
        s, self.segment = self.segment, None
        self._compute([(s, self._due_rows(s, ended=True))])
        last = self._hand_back(s, ended=True)
        return [] if last is None else [last]

    def _new_segment(self, block: str, lo: int) -> _Segment:
        C, K = len(self.model.channels), len(self.model.classes)
        S = C if self.spread else 0
        return _Segment(block, lo, lo, np.zeros((0, C)), np.zeros((0, C)), np.zeros((0, K)), np.zeros(0, np.int64),
                        np.zeros((0, S)), np.zeros((0, S), np.int8), [0] * self.model.downsample)

    def _append(self, values: np.ndarray) -> None:
        s = self.segment
        s.values = np.concatenate([s.values, values])
        s.recon = np.concatenate([s.recon, np.zeros_like(values)])
        s.probs = np.concatenate([s.probs, np.zeros((len(values), s.probs.shape[1]))])
        s.count = np.concatenate([s.count, np.zeros(len(values), np.int64)])
        s.spread = np.concatenate([s.spread, np.zeros((len(values), s.spread.shape[1]))])
        s.kind = np.concatenate([s.kind, np.full((len(values), s.kind.shape[1]), -1, np.int8)])

    def _due_rows(self, s: _Segment, ended: bool) -> np.ndarray:
        """``[W, T]`` input rows of the windows of ``s`` whose rows have all arrived (all the rest when ``ended``);
        rows past the segment's end pad a segment shorter than a window."""
        T, d = self.model.window_size, self.model.downsample
        due = []
        for phase in range(d):
            steps = self._steps(s, phase)
            if s.next_start[phase] + T <= steps:
                starts = np.arange(s.next_start[phase], steps - T + 1, self.step)
                due += [(phase, int(x)) for x in starts]
                s.next_start[phase] = int(starts[-1]) + self.step
            last = s.next_start[phase] - self.step  # the last window computed, if any
            if ended and steps and (last < 0 or last + T < steps):
                due.append((phase, max(0, steps - T)))  # flush with the end, or padded if shorter
                s.next_start[phase] = steps
        if not due:
            return np.zeros((0, T), np.int64)
        phase, start = (np.array(x) for x in zip(*due))
        return s.lo + phase[:, None] + (start[:, None] + np.arange(T)) * d

    def _steps(self, s: _Segment, phase: int) -> int:
        """Rows of ``phase`` in segment ``s`` so far."""
        return max(0, -(-(s.end - s.lo - phase) // self.model.downsample))

    def _compute(self, jobs: list[tuple[_Segment, np.ndarray]]) -> None:
        """Every due window of ``jobs`` through the model at once; each segment's rows get their windows' sums."""
        jobs = [(s, rows) for s, rows in jobs if len(rows)]
        if not jobs:
            return
        inside = [rows < s.end for s, rows in jobs]  # [W, T] each
        local = [np.minimum(rows, s.end - 1) - s.base for s, rows in jobs]
        raw = np.concatenate([s.values[at] for (s, _), at in zip(jobs, local)])  # [W, T, C]
        visible = ~np.isnan(raw) & np.concatenate(inside)[..., None]
        normalised = self.model.stats.apply(raw.reshape(-1, raw.shape[-1])).reshape(raw.shape)
        values = torch.from_numpy(np.nan_to_num(normalised, nan=0.0))
        recon, logits, spread = self.model.predictor.predict_windows(values, torch.from_numpy(visible), self.batch_size)
        probs = torch.softmax(torch.from_numpy(logits).double(), dim=-1).numpy()  # [W, K]
        recon = self.model.stats.invert(recon)
        if self.spread:
            spread = spread * self.model.stats.std  # [W, T, C] raw units
            kinds = missing_kinds(visible)  # [W, T, C]
        lo = 0
        for (s, rows), at, ok in zip(jobs, local, inside):
            hi = lo + len(rows)
            np.add.at(s.recon, at[ok], recon[lo:hi][ok])
            np.add.at(s.probs, at[ok], np.repeat(probs[lo:hi, None], rows.shape[1], axis=1)[ok])
            np.add.at(s.count, at[ok], 1)
            if self.spread:
                np.add.at(s.spread, at[ok], spread[lo:hi][ok])
                np.maximum.at(s.kind, at[ok], kinds[lo:hi][ok])
            self.windows.append(Windows(np.full(hi - lo, s.block, dtype=object), rows[:, 0], np.where(ok, rows, -1).max(axis=1), probs[lo:hi]))

            lo = hi

    def _hand_back(self, s: _Segment, ended: bool) -> Finished | None:
        d = self.model.downsample
        if ended:
            upto = s.end
        else:  # a row is finished once every window still to come starts after it, in its phase; the window
            # flush with the segment's end starts no earlier than a window's length before the rows so far
            T = self.model.window_size
            upto = min(s.lo + phase + min(s.next_start[phase], max(0, self._steps(s, phase) - T)) * d for phase in range(d))
        n = max(0, min(upto, s.end) - s.base)
        if n == 0:
            return None
        raw, count = s.values[:n], np.maximum(s.count[:n], 1)[:, None]
        filled = np.isnan(raw) & self.fillable[None, :] & (s.count[:n, None] > 0)
        completed = np.where(filled, s.recon[:n] / count, raw)
        finished = Finished(s.base, completed, filled, s.probs[:n] / count,
                            *((s.spread[:n] / count, s.kind[:n]) if self.spread else ()))
        s.values, s.recon, s.probs, s.count = s.values[n:], s.recon[n:], s.probs[n:], s.count[n:]
        s.spread, s.kind = s.spread[n:], s.kind[n:]
        s.base += n
        return finished


def through_windows(model: WindowModel, recordings: list[np.ndarray], spread: bool = False) -> list[Finished]:
    """Each recording ``[n, C]`` (normalised, NaN where not visible) completed by ``model``'s windows, as ``tgatunet
    complete`` does it, every channel fillable."""
    C = len(model.channels)
    stream = Stream(replace(model, stats=ChannelStats(np.zeros(C), np.ones(C))), np.ones(C, dtype=bool), spread=spread)
    lengths = [len(r) for r in recordings]
    blocks = np.repeat(np.arange(len(recordings)).astype(str).astype(object), lengths)
    whole = Finished.join(stream.feed(np.concatenate(recordings), blocks, 0) + stream.finish())
    cuts = np.cumsum([0, *lengths])
    return [whole.rows(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:])]
