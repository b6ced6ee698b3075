"""A timed table streamed through the model's grid and back to its own rows.

:class:`Regrid` sits between a table's chunks and the :class:`~tgatunet.infer.stream.Stream`. Going in, each segment's
rows (:func:`~tgatunet.data.timeline.lattice`) are resampled onto the grid as far as the rows so far allow
(:func:`~tgatunet.data.resample.segment_on_grid` with :func:`~tgatunet.data.resample.margin` grid steps of context
each side, so the grid equals that of the whole table, as training reads it). Coming back, each row gets the finished
grid read at its own time (linear interpolation between the two grid steps around it): a cell the row observed is
kept as read; an empty cell of a fillable channel is filled where the row is one of that channel's own sample times,
every ``k``-th position of a slow channel in the rhythm of its latest sample (before its first in a segment, from the
segment's first row), or every row with ``every_row``. Class probabilities follow the row's time the same way.
Memory stays bounded by the chunk and the window, not the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pandas as pd

from tgatunet.data.resample import at_coordinates, grid_length, grid_ratio, margin, segment_on_grid
from tgatunet.data.sources import warn_upsampling
from tgatunet.data.timeline import RHYTHM_ROWS, Carry, Timing, channel_steps, check_rate, lattice, rhythm, row_seconds
from tgatunet.errors import DataError
from tgatunet.infer.stream import Finished

GridRows = tuple[np.ndarray, np.ndarray, int, np.ndarray]  # values [g, C], blocks [g], first grid row, starts [g]


@dataclass
class _Segment:
    """The rows of the current segment still needed to resample the grid after ``done``."""

    block: object
    base: int  # grid row (counted over the table) of the segment's grid point 0
    phases: np.ndarray  # [C] the latest sample's position modulo the channel's step (0 before its first)
    positions: np.ndarray  # [m] lattice positions of the rows kept
    values: np.ndarray  # [m, C]
    done: int = 0  # grid points handed to the stream


@dataclass
class _Rows:
    """Rows read but not yet written back: their file row, grid coordinate (over the table), values, own sample times."""

    row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray | None = None  # [p, C]
    slot: np.ndarray | None = None  # [p, C] bool

    def add(self, row, x, values, slot) -> None:
        if self.values is None:
            self.values, self.slot = values[:0], slot[:0]
        self.row, self.x = np.concatenate([self.row, row]), np.concatenate([self.x, x])
        self.values, self.slot = np.concatenate([self.values, values]), np.concatenate([self.slot, slot])

    def take(self, n: int) -> tuple[np.ndarray, ...]:
        out = self.row[:n], self.x[:n], self.values[:n], self.slot[:n]
        self.row, self.x, self.values, self.slot = self.row[n:], self.x[n:], self.values[n:], self.slot[n:]
        return out


class Regrid:
    """Feed a timed table's chunks in order; get grid rows for the stream; hand its finished grid rows back and get
    the table's rows finished.

    ``timing``: the table's time column, rate and gap limit; ``grid_hz``: the model's grid; ``channels``: the run's;
    ``fillable``: ``[C]`` bool, the channels whose empty cells are filled; ``every_row``: fill them at every row, not only at the channel's
    own sample times.
    """

    def __init__(self, timing: Timing, grid_hz: float, channels: list[str], fillable: np.ndarray, where: str, every_row: bool = False) -> None:
        self.timing, self.grid_hz, self.channels, self.fillable = timing, grid_hz, channels, fillable
        self.where, self.every_row = where, every_row
        self.ratio: Fraction | None = None
        self.step = 0.0  # seconds per lattice position
        self.steps: np.ndarray | None = None
        self.context = 0  # grid steps of context the resampling needs on each side
        self.head: list[tuple[pd.DataFrame, np.ndarray, np.ndarray, int]] = []  # chunks before the rhythm is measured
        self.head_rows = 0
        self.carry: Carry | None = None
        self.clock: str | None = None
        self.segment: _Segment | None = None
        self.grid_rows = 0  # grid rows handed out so far
        self.rows = _Rows()
        self.grid: Finished | None = None  # finished grid rows not yet read by every row that needs them

    # --- rows in, grid rows out ---------------------------------------------------------------------------------

    def feed(self, chunk: pd.DataFrame, values: np.ndarray, blocks: np.ndarray, first_row: int) -> GridRows:
        """Rows ``first_row ...``: the chunk as read, ``values [n, C]`` (NaN: not observed), ``blocks [n]``."""
        if self.ratio is None:
            self.head.append((chunk, values, blocks, first_row))
            self.head_rows += len(chunk)
            return self._measure() if self.head_rows >= RHYTHM_ROWS else self._grid_rows([])
        return self._grid_rows(self._read(chunk, values, blocks, first_row))

    def finish(self) -> GridRows:
        """The end of the table: the rest of the grid."""
        out = self._measure() if self.ratio is None and self.head else self._grid_rows([])
        if self.segment is not None:
            out = _join(out, self._grid_rows(self._close()))
        return out

    def _measure(self) -> GridRows:
        """The step and the slow channels, from the first rows; then those rows onto the grid."""
        chunks, self.head = self.head, []
        frame = pd.concat([c for c, *_ in chunks], ignore_index=True)
        values = np.concatenate([v for _, v, _, _ in chunks])
        blocks = np.concatenate([b for _, _, b, _ in chunks])
        seconds = self._seconds(frame, chunks[0][3])
        rate, self.step = rhythm(seconds, blocks, self.timing, self.where)
        self.ratio = grid_ratio(rate, self.grid_hz)
        positions, starts, _ = lattice(seconds, blocks, self.step, self.timing.max_gap_s, self.where, chunks[0][3], None)
        self.steps = channel_steps(positions, starts, ~np.isnan(values))
        self.context = max(margin(self.ratio * int(k)) for k in self.steps)
        warn_upsampling(self.where, self.ratio, self.steps, ~np.isnan(values).all(axis=0), self.channels)
        return self._grid_rows(self._read(frame, values, blocks, chunks[0][3], seconds))

    def _seconds(self, chunk: pd.DataFrame, first_row: int) -> np.ndarray | None:
        if self.timing.time_col is None:
            return None
        if self.timing.time_col not in chunk.columns:
            raise DataError(f"{self.where}: time column '{self.timing.time_col}' is not a column; its columns are {list(chunk.columns)}.")
        seconds, clock = row_seconds(chunk[self.timing.time_col], self.where, first_row)
        if self.clock is not None and clock != self.clock:
            raise DataError(f"{self.where}: time column '{self.timing.time_col}' changes from '{self.clock}' to '{clock}' near "
                            f"row {first_row}; write every time in one zone (e.g. UTC).")
        self.clock = clock
        return seconds

    def _read(self, chunk: pd.DataFrame, values: np.ndarray, blocks: np.ndarray, first_row: int,
              seconds: np.ndarray | None = None) -> list[tuple[object, bool, np.ndarray]]:
        """Rows of a chunk into the current segment (a new one where one starts); the grid each makes ready."""
        if seconds is None:
            seconds = self._seconds(chunk, first_row)
        if seconds is not None and self.timing.rate_hz is not None:
            check_rate(seconds, blocks, self.timing.rate_hz, self.where, first_row)
        positions, starts, self.carry = lattice(seconds, blocks, self.step, self.timing.max_gap_s, self.where, first_row, self.carry)
        ready = []
        cuts = [0, *np.flatnonzero(starts[1:]) + 1, len(blocks)] if len(blocks) else [0]
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            if starts[lo]:
                if self.segment is not None:
                    ready += self._close()
                C = values.shape[1]
                self.segment = _Segment(blocks[lo], self.grid_rows, np.zeros(C, np.int64), np.zeros(0, np.int64), np.zeros((0, C)))
            ready += self._extend(positions[lo:hi], values[lo:hi], first_row + lo)
        return ready

    def _extend(self, positions: np.ndarray, values: np.ndarray, first_row: int) -> list[tuple[object, bool, np.ndarray]]:
        s, ratio = self.segment, self.ratio
        observed = ~np.isnan(values)
        slot = np.ones_like(observed)
        for c in np.flatnonzero(self.steps > 1):  # a slow channel's own times: the rhythm of its latest sample
            k = int(self.steps[c])
            seen = observed[:, c]
            latest = np.maximum.accumulate(np.where(seen, np.arange(len(positions)), -1))
            phase = np.where(latest >= 0, positions[np.maximum(latest, 0)] % k, s.phases[c])
            slot[:, c] = (positions - phase) % k == 0
            s.phases[c] = phase[-1]
        if self.every_row:
            slot[:] = True
        x = s.base + (positions * ratio.numerator) / ratio.denominator  # exact where the row falls on a grid point
        self.rows.add(np.arange(first_row, first_row + len(positions)), x, values, slot)
        s.positions, s.values = np.concatenate([s.positions, positions]), np.concatenate([s.values, values])
        ready_to = int(s.positions[-1]) * ratio.numerator // ratio.denominator + 1 - self.context
        return self._resample(ready_to, closing=False)

    def _close(self) -> list[tuple[object, bool, np.ndarray]]:
        s, self.segment = self.segment, None
        return self._resample(grid_length(int(s.positions[-1]), self.ratio), closing=True, segment=s)

    def _resample(self, upto: int, closing: bool, segment: _Segment | None = None) -> list[tuple[object, bool, np.ndarray]]:
        """The segment's grid points from ``done`` up to ``upto`` (a piece for the stream); rows no longer needed dropped."""
        s = segment or self.segment
        if upto <= s.done:
            return []
        grid = segment_on_grid(s.positions, s.values, self.steps, self.ratio, s.done, upto)
        piece = (s.block, s.done == 0, grid)
        s.done = upto
        self.grid_rows += len(grid)
        if not closing:  # keep the rows whose context the grid after ``upto`` still needs
            keep = s.positions * self.ratio.numerator >= (upto - self.context) * self.ratio.denominator
            first = max(0, int(np.argmax(keep)) - 1) if keep.any() else len(keep)
            s.positions, s.values = s.positions[first:], s.values[first:]
        return [piece]

    def _grid_rows(self, pieces: list[tuple[object, bool, np.ndarray]]) -> GridRows:
        first = self.grid_rows - sum(len(g) for _, _, g in pieces)
        if not pieces:
            return np.zeros((0, 0)), np.zeros(0, object), first, np.zeros(0, bool)
        values = np.concatenate([g for _, _, g in pieces])
        blocks = np.concatenate([np.full(len(g), b, dtype=object) for b, _, g in pieces])
        starts = np.concatenate([np.arange(len(g)) == 0 if new else np.zeros(len(g), bool) for _, new, g in pieces])
        return values, blocks, first, starts

    # --- finished grid rows in, rows out ------------------------------------------------------------------------

    def windows_at_rows(self, table: pd.DataFrame) -> pd.DataFrame:
        """A windows table's ``first_row`` and ``last_row`` (grid rows) as the first and last table row inside each
        window; a window inside a gap in time holds none and is left out."""
        x, rows = self.rows.x, self.rows.row
        lo = np.searchsorted(x, table["first_row"].to_numpy(), side="left")
        hi = np.searchsorted(x, table["last_row"].to_numpy(), side="right") - 1
        inside = (lo <= hi) & (lo < len(rows)) & (hi >= 0)
        first, last = rows[np.minimum(lo, len(rows) - 1)[inside]], rows[hi[inside]]
        return table[inside].assign(first_row=first, last_row=last).reset_index(drop=True)

    def back(self, parts: list[Finished]) -> list[Finished]:
        """Finished grid rows in order; the table rows whose time they now cover (both grid rows around it), finished."""
        if not parts:
            return []
        g = self.grid = Finished.join(([self.grid] if self.grid is not None else []) + parts)
        n = int(np.searchsorted(self.rows.x, g.first_row + len(g.completed) - 1, side="right"))
        if n == 0:
            return []
        row, x, values, slot = self.rows.take(n)
        local = x - g.first_row
        grid_values = at_coordinates(g.completed, local)
        filled = np.isnan(values) & slot & self.fillable[None, :] & ~np.isnan(grid_values)
        finished = Finished(int(row[0]), np.where(filled, grid_values, values), filled, at_coordinates(g.probabilities, local),
                            *((at_coordinates(g.spread, local), _worst(g.kind, local)) if g.spread is not None else ()))
        self.grid = g.rows(int(np.floor(local[-1])), len(g.completed))  # the next rows may still need this grid row
        return [finished]


def _worst(kind: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
    """The more severe kind of missing value of the two grid rows around each coordinate."""
    lo = np.floor(coordinates).astype(np.int64)
    hi = np.minimum(np.ceil(coordinates).astype(np.int64), len(kind) - 1)
    return np.maximum(kind[lo], kind[hi])


def _join(a: GridRows, b: GridRows) -> GridRows:
    if not len(a[1]):
        return b
    if not len(b[1]):
        return a
    return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]), a[2], np.concatenate([a[3], b[3]])
