"""When each row of a source was recorded: its time column or rate, checked, as positions on the source's own lattice.

A timed source (``time_col`` and/or ``rate_hz``) is a sequence of rows on a regular lattice of one step: a row's
position is its time since its segment's first row in steps, rounded, and at least one more than the row before
(:func:`lattice`), so timestamps that jitter keep their rows without adding up, and a drop-out of ``n`` rows leaves ``n``
empty positions. A segment is a run of rows of one block, split where the time jumps by more than ``max_gap_s``.

The step is measured on the source's first :data:`RHYTHM_ROWS` rows (the mean of the row-to-row steps no longer than
1.5x their median; ``1 / rate_hz`` without times), and the rate is ``rate_hz`` or the measured one (:func:`rhythm`). A
channel observed only every ``k``-th position there (the most common distance between its samples, at least half of
them) is a slow channel recorded at ``rate / k`` inside a faster file. Everything here is pure: arrays in, arrays out,
a :class:`~tgatunet.errors.DataError` naming file, column, block or rows.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tgatunet.errors import DataError, shown

OFFSET = re.compile(r"(Z|[+-]\d\d:?\d\d)$")  # an ISO 8601 time's UTC offset
RHYTHM_ROWS = 65536  # a source's step and slow channels are measured on its first rows, so a stream of it agrees
RATE_TOLERANCE = 0.02  # timestamps and rate_hz may differ by this share of a step
RATE_DIGITS = 4  # significant digits of a measured rate
MIN_STEPS = 20  # a block needs this many regular steps before its timestamps are held against rate_hz
SLOW_SAMPLES = 10  # a channel needs this many distances between its samples (first rows) to be recognised as slow


@dataclass(frozen=True)
class Timing:
    """How a table's rows map to time: a time column (seconds as numbers, or datetimes), a rate, or both; and the
    time jump that starts a new segment."""

    time_col: str | None = None
    rate_hz: float | None = None
    max_gap_s: float | None = None

    def __post_init__(self) -> None:
        if self.time_col is not None and not isinstance(self.time_col, str):
            raise DataError(f"the time column is named by text, not {shown(self.time_col)}.")
        for key in ("rate_hz", "max_gap_s"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0
                                      or not np.isfinite(value)):
                raise DataError(f"{key} must be a positive number (per second / seconds), not {shown(value)}.")

    @property
    def timed(self) -> bool:
        return self.time_col is not None or self.rate_hz is not None


@dataclass(frozen=True)
class Carry:
    """Where the previous chunk left off: its last row's block and time, and the segment it was in: the segment's
    first time, its rows so far, and how far its positions run ahead of its row count."""

    block: object
    time: float
    origin: float
    rows: int
    lead: int


def row_seconds(column: pd.Series, where: str, first_row: int) -> tuple[np.ndarray, str]:
    """A time column as float64 seconds, and its clock: ``"seconds"`` (numbers), ``"no time zone"`` (naive
    datetimes) or the time zone's name (datetimes in UTC seconds). Text is read as numbers, else as ISO 8601."""
    name = column.name
    kind = column.dtype
    if isinstance(kind, pd.ArrowDtype) and not pd.api.types.is_numeric_dtype(kind):
        column = pd.to_datetime(column) if pd.api.types.is_datetime64_any_dtype(kind) else column.astype(object)
        kind = column.dtype
    if pd.api.types.is_bool_dtype(kind):
        raise DataError(f"{where}: time column '{name}' holds true/false; give seconds as numbers or datetimes.")
    if not pd.api.types.is_numeric_dtype(kind) and not pd.api.types.is_datetime64_any_dtype(kind):
        column = _parsed(column, where, first_row)
    if pd.api.types.is_numeric_dtype(column.dtype):
        seconds, clock = column.to_numpy(dtype=np.float64, na_value=np.nan), "seconds"
    else:
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            clock = str(column.dtype.tz)
            column = column.dt.tz_convert("UTC").dt.tz_localize(None)
        else:
            clock = "no time zone"
        nanos = column.to_numpy(dtype="datetime64[ns]")
        seconds = np.where(np.isnat(nanos), np.nan, nanos.astype(np.int64) / 1e9)
    bad = ~np.isfinite(seconds)
    if bad.any():
        row = first_row + int(np.flatnonzero(bad)[0])
        raise DataError(f"{where}: time column '{name}' is empty or not a time at row {row}; every row needs its time.")
    return seconds, clock


def _parsed(column: pd.Series, where: str, first_row: int) -> pd.Series:
    """Text or numbers as seconds when most cells are numbers, else text or Python datetimes as datetimes."""
    dates = column.map(lambda v: isinstance(v, (datetime.date, np.datetime64))).to_numpy()
    numbers = pd.to_numeric(column.where(~dates, None), errors="coerce")
    if not dates.any() and numbers.notna().sum() * 2 > len(column):
        if numbers.notna().all():
            return numbers
        bad = int(np.flatnonzero(numbers.isna().to_numpy())[0])
        raise DataError(f"{where}: time column '{column.name}' row {first_row + bad} holds {shown(column.iloc[bad])}, which is "
                        "not a number of seconds like the rest of the column.")
    # text with UTC offsets is read in UTC: an offset that changes with daylight saving is one clock
    offsets = bool(column.map(lambda v: isinstance(v, str) and OFFSET.search(v.strip()) is not None).all())
    try:
        return pd.to_datetime(column, format="ISO8601", utc=offsets)
    except (ValueError, TypeError) as err:
        if any(word in str(err).lower() for word in ("mixed timezones", "tz-naive", "tz-aware", "unless utc=true")):
            raise DataError(f"{where}: time column '{column.name}' mixes time zones (or times with and without one); write "
                            "every time in one zone (e.g. UTC).") from None
        bad = next((i for i, v in enumerate(column) if not _is_time(v)), 0)
        raise DataError(f"{where}: time column '{column.name}' row {first_row + bad} holds {shown(column.iloc[bad])}, which is "
                        "neither a number of seconds nor an ISO 8601 time (2024-05-01T12:00:00.250, with or without a zone).") from None


def _is_time(value) -> bool:
    try:
        pd.to_datetime(pd.Series([value]), format="ISO8601")
        return True
    except (ValueError, TypeError):
        return False


def measured_step(seconds: np.ndarray, blocks: np.ndarray, where: str) -> float:
    """The step of the first :data:`RHYTHM_ROWS` rows: the mean of the steps inside blocks no longer than 1.5x their
    median (drop-outs and gaps left out)."""
    t, b = seconds[:RHYTHM_ROWS], blocks[:RHYTHM_ROWS]
    dt = np.diff(t)[b[1:] == b[:-1]]
    dt = dt[dt > 0]
    if not len(dt):
        raise DataError(f"{where}: no two rows of a block have different times, so the rate cannot be measured; give rate_hz.")
    return float(dt[dt <= 1.5 * np.median(dt)].mean())


def rhythm(seconds: np.ndarray | None, blocks: np.ndarray, timing: Timing, where: str) -> tuple[float, float]:
    """A table's rate (``rate_hz``, or the measured one to :data:`RATE_DIGITS` significant digits: a clock's rounding
    and float seconds leave no 9.9999999 Hz) and its lattice step in seconds (measured where there are times, so that
    a clock a little off its nominal rate does not drift against it), from its first rows."""
    if seconds is None:
        return timing.rate_hz, 1.0 / timing.rate_hz
    step = measured_step(seconds, blocks, where)
    return timing.rate_hz or float(f"{1.0 / step:.{RATE_DIGITS}g}"), step


def check_rate(seconds: np.ndarray, blocks: np.ndarray, rate_hz: float, where: str, first_row: int) -> None:
    """Timestamps must step by ``1 / rate_hz`` (within :data:`RATE_TOLERANCE`) in every block run of at least
    :data:`MIN_STEPS` regular steps."""
    change = np.flatnonzero(blocks[1:] != blocks[:-1]) + 1
    for lo, hi in zip([0, *change], [*change, len(blocks)]):
        dt = np.diff(seconds[lo:hi])
        dt = dt[dt > 0]
        regular = dt[dt <= 1.5 * np.median(dt)] if len(dt) else dt
        if len(regular) < MIN_STEPS:
            continue
        step = float(regular.mean())
        if abs(step * rate_hz - 1.0) > RATE_TOLERANCE:
            raise DataError(f"{where}: block '{blocks[lo]}' rows {first_row + lo}-{first_row + hi - 1}: the timestamps step "
                            f"{step:.6g} s ({1 / step:.4g} Hz) but rate_hz is {rate_hz:g}. Correct rate_hz, or give the time "
                            "column in seconds.")


def lattice(seconds: np.ndarray | None, blocks: np.ndarray, step: float, max_gap_s: float | None, where: str, first_row: int,
            carry: Carry | None) -> tuple[np.ndarray, np.ndarray, Carry]:
    """Each row's position in its segment, and where segments start.

    ``seconds [n]`` (None: rows one step apart), ``blocks [n]``; ``carry``: where the rows before these left off (None:
    they begin the table). A row's position is its time since the segment's first row in steps, rounded, and at least
    one more than the row before: timestamps that jitter do not add up, a drop-out leaves its positions empty. Returns
    ``positions [n]`` int64, ``starts [n]`` bool (the row begins a segment) and the carry for the next chunk. A time
    that does not increase inside a block is refused, naming the rows.
    """
    n = len(blocks)
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, bool), carry
    starts = np.concatenate([[carry is None or blocks[0] != carry.block], blocks[1:] != blocks[:-1]])
    if seconds is not None:
        previous = np.concatenate([[carry.time if carry else np.nan], seconds[:-1]])
        dt = seconds - previous
        wrong = ~starts & (dt <= 0)
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            what = "repeats the time of" if dt[i] == 0 else "has an earlier time than"
            raise DataError(f"{where}: block '{blocks[i]}' row {first_row + i} {what} row {first_row + i - 1} "
                            f"({seconds[i]:.6f} s after {previous[i]:.6f} s); times must increase inside a block. Remove the "
                            "duplicated rows or sort the file by block and time.")
        if max_gap_s is not None:
            starts |= dt > max_gap_s
    segment = np.cumsum(starts) - 1  # -1: the segment carried in from the previous chunk
    first = np.flatnonzero(starts)
    begin = first[np.maximum(segment, 0)] if len(first) else np.zeros(n, np.int64)  # each row's segment's first row here
    begin = np.where(segment >= 0, begin, 0)
    index = np.arange(n) - begin + np.where(segment < 0, carry.rows if carry else 0, 0)  # rows before it in its segment
    if seconds is None:
        positions = index
        lead = np.zeros(n, np.int64)
    else:
        origin = np.where(segment >= 0, seconds[begin], carry.origin if carry else 0.0)
        ahead = np.rint((seconds - origin) / step).astype(np.int64) - index  # positions beyond the row count
        if carry is not None and segment[0] < 0:
            ahead[0] = max(ahead[0], carry.lead)
        # a running maximum inside each segment: each later segment lifted above every earlier one
        span = int(np.abs(ahead).max()) + 1
        lifted = ahead + (segment + 1) * 2 * span
        lead = np.maximum.accumulate(lifted) - (segment + 1) * 2 * span
        positions = index + lead
    origin_last = seconds[begin[-1]] if segment[-1] >= 0 and seconds is not None else (carry.origin if carry else 0.0)
    last = Carry(blocks[-1], float(seconds[-1]) if seconds is not None else 0.0, float(origin_last), int(index[-1]) + 1, int(lead[-1]))
    return positions.astype(np.int64), starts, last


def channel_steps(positions: np.ndarray, starts: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """``[C]`` int: each channel's distance between samples on the first :data:`RHYTHM_ROWS` rows (1: every position;
    ``k > 1``: a slow channel, the most common distance between its samples in a segment, when at least half of them
    are that and there are at least :data:`SLOW_SAMPLES`)."""
    positions, starts, observed = positions[:RHYTHM_ROWS], starts[:RHYTHM_ROWS], observed[:RHYTHM_ROWS]
    segment = np.cumsum(starts)
    steps = np.ones(observed.shape[1], dtype=np.int64)
    for c in range(observed.shape[1]):
        rows = np.flatnonzero(observed[:, c])
        gaps = np.diff(positions[rows])[segment[rows][1:] == segment[rows][:-1]]
        if len(gaps) < SLOW_SAMPLES:
            continue
        values, counts = np.unique(gaps, return_counts=True)
        k = int(values[counts.argmax()])
        if k > 1 and counts.max() * 2 >= len(gaps):
            steps[c] = k
    return steps
