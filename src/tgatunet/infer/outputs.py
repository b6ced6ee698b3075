"""A table completed and classified: the outputs of ``tgatunet predict`` and ``tgatunet complete``.

For an input named ``NAME``: ``NAME_completed`` (every row and input cell as read, the filled cells, their
``<channel>_imputed`` flags, per-row ``p_<class>`` and ``predicted``; asked for, ``<channel>_lower`` and
``<channel>_upper`` beside each filled channel: the interval of each filled cell, :mod:`tgatunet.infer.intervals`),
``NAME_windows`` (one row per window) and ``NAME_blocks`` (one row per block), in the input's format unless asked
otherwise; README.md (Apply a trained run to new recordings) lists their columns.

A channel filled where the run's validation said such completions are no better than the channel's training mean is
named in a warning (and in ``Applied.untrusted``): whole channels missing are judged by the ``need`` pattern's verdict,
drop-outs of an observed channel by the ``gaps`` pattern's.
"""

from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tgatunet.data.tables import TableReader, TableWriter, numeric_table
from tgatunet.data.timeline import Timing
from tgatunet.infer.intervals import interval_bounds
from tgatunet.infer.regrid import Regrid
from tgatunet.infer.stream import Finished, Stream, WindowModel, Windows
from tgatunet.errors import DataError, RunError

log = logging.getLogger(__name__)

IMPUTED_SUFFIX = "_imputed"
BOUNDS = ("_lower", "_upper")
OUTPUTS = ("completed", "windows", "blocks")


@dataclass
class Applied:
    """What applying a model to one table did."""

    name: str
    rows: int = 0
    windows: int = 0
    filled: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    outputs: dict[str, Path] = field(default_factory=dict)  # the files written (tgatunet predict, complete)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # the tables themselves (a DataFrame applied)
    untrusted: dict[str, str] = field(default_factory=dict)  # channel -> why its filled values are best treated as unknown


@dataclass(frozen=True)
class Plan:
    """How one table is read: its name, columns, block column and the channels to fill."""

    name: str
    columns: list[str]
    block_col: str | None
    fillable: np.ndarray  # [C] bool
    text: bool  # cells are strings (CSV) rather than typed values
    interval: float | None = None  # the intervals' nominal coverage; None: no intervals
    timing: Timing | None = None  # the table's time column or rate: it is resampled onto the run's grid and back
    grid_hz: float | None = None  # the run's grid (sample_rate_hz); None: rows are steps
    every_row: bool = False  # timed tables: fill empty cells at every row, not only at their channel's own sample times

    @property
    def regridded(self) -> bool:
        return self.timing is not None and self.timing.timed

    def check(self, model: WindowModel, where: str) -> None:
        if self.interval is not None:
            check_interval(model, self.interval)
        present = [c for c in model.channels if c in self.columns]
        if not present:
            raise DataError(
                f"{where} has none of the run's channels {model.channels}; its columns are {self.columns}. "
                "Rename the columns to the channel names the run was trained on."
            )
        suffixes = (IMPUTED_SUFFIX, *(BOUNDS if self.interval is not None else ()))
        new = [f"{c}{suffix}" for c, f in zip(model.channels, self.fillable) if f for suffix in suffixes]
        new += ["predicted", *(f"p_{k}" for k in model.classes)]
        clash = [c for c in new if c in self.columns]
        if clash:
            raise DataError(f"{where} already has column(s) {clash}, which the output adds; rename them.")
        if self.block_col is not None and self.block_col not in self.columns:
            raise DataError(f"{where}: block column '{self.block_col}' is not a column; its columns are {self.columns}.")
        if self.regridded and self.grid_hz is None:
            raise DataError(f"{where}: a time column or rate was given, but the run was trained with rows as steps (no timed source, "
                            "no sample_rate_hz); give the file at the run's step, without time column or rate.")
        if self.regridded and self.timing.time_col is not None and self.timing.time_col not in self.columns:
            raise DataError(f"{where}: time column '{self.timing.time_col}' is not a column; its columns are {self.columns}.")


def asked_coverage(interval: bool | float | None, default: float) -> float | None:
    """The intervals' coverage asked for, checked: ``True`` the run's ``default`` (``interval_coverage``), a number
    between 0 and 1 itself, ``False``/None no intervals."""
    if interval is None or isinstance(interval, (bool, np.bool_)):
        return default if interval else None
    if not isinstance(interval, numbers.Real) or not 0.0 < float(interval) < 1.0:
        raise DataError(f"the intervals' coverage must be a number between 0 and 1 (e.g. 0.9 for 90%), not {interval!r}.")
    return float(interval)


def check_interval(model: WindowModel, coverage: float) -> None:
    """Refuse intervals a run cannot give: without an interval calibration, or at a coverage its validation
    recordings are too few to vouch for."""
    if model.intervals is None:
        raise RunError("this run has no calibrated completion intervals: it was trained by an earlier tgatunet or without "
                       "validation recordings. Train it again (with val_fraction > 0) to get them.")
    if np.isinf(model.intervals.factors(coverage)).any():
        raise DataError(f"coverage {coverage} needs more calibration values than the run's validation recordings gave; "
                        f"ask for at most {model.intervals.highest_coverage():.3f}.")


def fillable_channels(model: WindowModel, columns: list[str], fill: str, empty: set[str], need: list[str] | None = None):
    """``[C]`` bool: every run channel (``fill="all"`` or ``"grid"``), or the channels the table lacks (``"need"``):
    ``need`` when given (a config source's), else those absent from ``columns`` or in ``empty``."""
    if fill in ("all", "grid"):
        return np.ones(len(model.channels), dtype=bool)
    lacking = set(need) if need is not None else {c for c in model.channels if c not in columns} | empty
    return np.array([c in lacking for c in model.channels])


def never_observed(seen: np.ndarray, channels: list[str], columns: list[str]) -> set[str]:
    """The ``channels`` that are among a table's ``columns`` but were never observed (``seen [C]`` bool: any value)."""
    return {c for c, s in zip(channels, seen) if c in columns and not s}


def empty_channels(reader: TableReader, channels: list[str]) -> set[str]:
    """The run channels that the file has as columns but never observes (one pass over the file)."""
    seen = np.zeros(len(channels), dtype=bool)
    for first, chunk in _numbered(reader.chunks()):
        seen |= np.isfinite(channel_values(chunk, channels, str(reader.path), first)).any(axis=0)
    return never_observed(seen, channels, reader.columns)


def _numbered(chunks: Iterable[pd.DataFrame]):
    first = 0
    for chunk in chunks:
        yield first, chunk
        first += len(chunk)


def _channel_column(original: pd.Series | None, part: Finished, c: int, text: bool):
    """Channel ``c`` as written: text cells as read with a number written where filled (a CSV written as CSV),
    or the parsed values with the fills (typed outputs: float32 where the input was, else float64)."""
    if not text:
        kind = getattr(original, "dtype", None)
        kind = kind.numpy_dtype if isinstance(kind, pd.ArrowDtype) else kind
        return part.completed[:, c].astype(np.float32 if kind == np.float32 else np.float64)
    filled = part.filled[:, c]
    cells = np.full(len(filled), "", dtype=object) if original is None else original.to_numpy(dtype=object, copy=True)
    cells[filled] = np.char.mod("%.7g", part.completed[filled, c]).astype(object)
    return cells


def _bound_columns(bounds: tuple[np.ndarray, np.ndarray] | None, c: int, name: str, text: bool) -> dict[str, np.ndarray]:
    """``<name>_lower``, ``<name>_upper`` of channel ``c`` (NaN, or empty text, where not filled); none without bounds."""
    if bounds is None:
        return {}
    if not text:
        return {name + suffix: b[:, c] for suffix, b in zip(BOUNDS, bounds)}
    cells = [np.where(np.isnan(b[:, c]), "", np.char.mod("%.7g", b[:, c])).astype(object) for b in bounds]
    return {name + suffix: x for suffix, x in zip(BOUNDS, cells)}


def completed_frame(rows: pd.DataFrame, part: Finished, model: WindowModel, plan: Plan) -> pd.DataFrame:
    """The input ``rows`` of ``part`` as the completed table writes them (built at once: no column inserts), each filled
    channel followed by its interval bounds when asked for."""
    at = {channel: c for c, channel in enumerate(model.channels)}
    bounds = None
    if plan.interval is not None:
        bounds = interval_bounds(part.completed, part.filled, part.spread, part.kind, model.intervals.factors(plan.interval))
    rewritten = lambda name: name in at and (plan.fillable[at[name]] or not plan.text)  # noqa: E731
    columns = {}
    for name, cells in rows.items():
        columns[name] = _channel_column(cells, part, at[name], plan.text) if rewritten(name) else cells
        if name in at and plan.fillable[at[name]]:
            columns.update(_bound_columns(bounds, at[name], name, plan.text))
    for c, ch in enumerate(model.channels):
        if plan.fillable[c] and ch not in columns:
            columns[ch] = _channel_column(None, part, c, plan.text)
            columns.update(_bound_columns(bounds, c, ch, plan.text))
    columns.update({ch + IMPUTED_SUFFIX: part.filled[:, c] for c, ch in enumerate(model.channels) if plan.fillable[c]})
    columns.update(_class_columns(part.probabilities, model.classes))
    return pd.DataFrame(columns, index=rows.index)


def _class_columns(probs: np.ndarray, classes: list[str]) -> dict[str, np.ndarray]:
    predicted = np.asarray(classes, dtype=object)[probs.argmax(axis=1)] if len(probs) else np.zeros(0, dtype=object)
    return {"predicted": predicted, **{f"p_{k}": probs[:, i] for i, k in enumerate(classes)}}


def windows_frame(windows: list[Windows], classes: list[str]) -> pd.DataFrame:
    head = {key: np.concatenate([getattr(w, key) for w in windows]) for key in ("blocks", "first_row", "last_row")}
    probs = np.concatenate([w.probs for w in windows]).reshape(len(head["blocks"]), len(classes))
    return pd.DataFrame({"block": head["blocks"], "first_row": head["first_row"], "last_row": head["last_row"],
                         **_class_columns(probs, classes)})


def blocks_frame(blocks: dict[str, tuple[np.ndarray, int]], classes: list[str]) -> pd.DataFrame:
    names = list(blocks)
    probs = np.array([blocks[b][0] / blocks[b][1] for b in names]).reshape(len(names), len(classes))
    return pd.DataFrame({"block": names, "windows": [blocks[b][1] for b in names], **_class_columns(probs, classes)})


def channel_values(chunk: pd.DataFrame, channels: list[str], where: str, first: int) -> np.ndarray:
    """``[n, C]`` float64 values of the run's ``channels`` in ``chunk`` (NaN: absent or not observed)."""
    values = np.full((len(chunk), len(channels)), np.nan)
    present = [c for c, channel in enumerate(channels) if channel in chunk.columns]
    values[:, present] = numeric_table(chunk[[channels[c] for c in present]], where, first)
    return values


def apply_chunks(
    model: WindowModel,
    plan: Plan,
    chunks: Iterable[tuple[pd.DataFrame, np.ndarray]],
    sinks: dict[str, Callable[[pd.DataFrame], None]],
    where: str,
    on_rows: Callable[[int], None] | None = None,
) -> Applied:
    """Stream ``chunks`` of a table (each with its channels' values, :func:`channel_values`) through the model
    into ``sinks`` (one per name of :data:`OUTPUTS`)."""
    plan.check(model, where)
    start, result = time.perf_counter(), Applied(plan.name)
    stream = Stream(model, plan.fillable, spread=plan.interval is not None)
    filled = np.zeros(len(model.channels), dtype=np.int64)
    seen = np.zeros(len(model.channels), dtype=bool)  # channels observed somewhere in the table
    pending: list[pd.DataFrame] = []  # input rows fed but not yet finished

    regrid = Regrid(plan.timing, plan.grid_hz, model.channels, plan.fillable, where, plan.every_row) if plan.regridded else None
    per_block: dict[str, tuple[np.ndarray, int]] = {}  # block -> (sum of its windows' probabilities, windows)

    def emit(parts: list[Finished]) -> None:
        if stream.windows:
            table = windows_frame(stream.windows, model.classes)
            table = regrid.windows_at_rows(table) if regrid is not None else table
            sinks["windows"](table)
            result.windows += len(table)
            _add_to_blocks(per_block, table, model.classes)
            stream.windows.clear()
        for part in regrid.back(parts) if regrid is not None else parts:
            n = len(part.completed)
            head = pd.concat(pending) if len(pending) > 1 else pending[0]
            pending[:] = [head.iloc[n:]]
            sinks["completed"](completed_frame(head.iloc[:n], part, model, plan))
            filled[:] += part.filled.sum(axis=0)
            result.rows += n
            if on_rows:
                on_rows(n)

    first = 0
    for chunk, values in chunks:
        if len(chunk):
            pending.append(chunk)
            seen |= np.isfinite(values).any(axis=0)
            blocks = _block_ids(chunk, plan, where, first)
            emit(stream.feed(*regrid.feed(chunk, values, blocks, first)) if regrid else stream.feed(values, blocks, first))
            first += len(chunk)
    if regrid is not None:
        emit(stream.feed(*regrid.finish()))
    emit(stream.finish())
    if not result.rows:
        raise DataError(f"{where} has no data rows.")
    sinks["blocks"](blocks_frame(per_block, model.classes))
    result.filled = {c: int(n) for c, n, f in zip(model.channels, filled, plan.fillable) if f}
    result.untrusted = untrusted_fills(model, {c for c, n in result.filled.items() if n}, seen, where)
    result.seconds = time.perf_counter() - start
    return result


def _add_to_blocks(per_block: dict[str, tuple[np.ndarray, int]], table: pd.DataFrame, classes: list[str]) -> None:
    """Each block's sum of window probabilities and count of windows, with those of ``table`` added."""
    groups = table.groupby("block", sort=False)[[f"p_{k}" for k in classes]]
    sums, sizes = groups.sum(), groups.size()
    for block, total, n in zip(sums.index, sums.to_numpy(), sizes.to_numpy()):
        before, count = per_block.get(block, (0.0, 0))
        per_block[block] = (before + total, count + int(n))


def untrusted_fills(model: WindowModel, filled: set[str], seen: np.ndarray, where: str) -> dict[str, str]:
    """The ``filled`` channels whose completion, of the kind done here (whole channel missing: ``need``, else
    ``gaps``), was no better than the training mean on the run's validation recordings; each named in a warning."""
    verdicts = {(r["channel"], r["pattern"]): r for r in model.report}
    out = {}
    for c, channel in enumerate(model.channels):
        row = verdicts.get((channel, "gaps" if seen[c] else "need"))
        if channel in filled and row is not None and row["verdict"] == "no better than the mean":
            kind = "where it has drop-outs" if seen[c] else "where it is missing throughout"
            out[channel] = (f"on the run's validation recordings, '{channel}' completed {kind} was no better than its training "
                            f"mean (MAE {row['mae']:.3f} vs {row['mean_fill_mae']:.3f}, r {row['pearson']:.2f})")
            log.warning("%s: %s; treat its filled values as unknown.", where, out[channel])
    return out


def _block_ids(chunk: pd.DataFrame, plan: Plan, where: str, first: int) -> np.ndarray:
    if plan.block_col is None:
        return np.full(len(chunk), plan.name, dtype=object)
    column = chunk[plan.block_col]
    empty = column.isna().to_numpy() | (column.astype(str).str.strip() == "").to_numpy()
    if empty.any():
        row = first + int(np.flatnonzero(empty)[0])
        raise DataError(f"{where}: block column '{plan.block_col}' is empty at row {row}; every row needs a block.")
    return column.astype(str).to_numpy(dtype=object)


def apply_file(
    model: WindowModel,
    path: Path,
    out_dir: Path,
    *,
    name: str | None = None,
    block_col: str | None = None,
    fill: str = "all",
    fmt: str | None = None,
    need: list[str] | None = None,
    interval: float | None = None,
    timing: Timing | None = None,
    grid_hz: float | None = None,
    on_rows: Callable[[int], None] | None = None,
    chunk_rows: int = 65536,
) -> Applied:
    """Complete and classify the file ``path``, writing ``NAME_completed``, ``NAME_windows`` and ``NAME_blocks``
    to ``out_dir`` (each atomically: all three are in place only when all succeeded); ``interval``: the coverage of
    the filled cells' intervals (None: none); ``timing``: the file's time column or rate, resampled onto the run's grid
    of ``grid_hz`` and written back at its own rows (:mod:`tgatunet.infer.regrid`; ``fill="grid"``: every row)."""
    reader = TableReader(path, chunk_rows)
    where = f"input '{path}'"
    name = name or path.stem
    empty = empty_channels(reader, model.channels) if fill == "need" and need is None else set()
    fmt = fmt or reader.format
    plan = Plan(name, reader.columns, block_col, fillable_channels(model, reader.columns, fill, empty, need),
                text=reader.format == "csv" and fmt == "csv", interval=interval, timing=timing, grid_hz=grid_hz, every_row=fill == "grid")
    chunks = ((chunk, channel_values(chunk, model.channels, where, first)) for first, chunk in _numbered(reader.chunks()))
    writers = {o: TableWriter(Path(out_dir) / f"{name}_{o}.{fmt}", fmt) for o in OUTPUTS}
    try:
        result = apply_chunks(model, plan, chunks, {o: w.write for o, w in writers.items()}, where, on_rows)
        for writer in writers.values():
            writer.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    result.outputs = {o: w.path for o, w in writers.items()}
    return result


def apply_frame(model: WindowModel, frame: pd.DataFrame, *, block_col: str | None = None, fill: str = "all",
                interval: float | None = None, timing: Timing | None = None, grid_hz: float | None = None,
                chunk_rows: int = 65536) -> Applied:
    """:func:`apply_file` for a DataFrame in memory: what was done, with the three tables (``Applied.tables``)."""
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        raise DataError(f"the DataFrame has duplicated column names {sorted({c for c in columns if columns.count(c) > 1})}.")
    frame = frame.set_axis(columns, axis=1)
    values = channel_values(frame, model.channels, "the DataFrame", 0)  # every channel parsed once
    empty = never_observed(np.isfinite(values).any(axis=0), model.channels, columns)
    plan = Plan("frame", columns, block_col, fillable_channels(model, columns, fill, empty), text=False, interval=interval,
                timing=timing, grid_hz=grid_hz, every_row=fill == "grid")
    parts: dict[str, list[pd.DataFrame]] = {o: [] for o in OUTPUTS}
    chunks = ((frame.iloc[lo : lo + chunk_rows], values[lo : lo + chunk_rows]) for lo in range(0, len(frame), chunk_rows))
    result = apply_chunks(model, plan, chunks, {o: parts[o].append for o in OUTPUTS}, "the DataFrame")
    result.tables = {o: pd.concat(p, ignore_index=o != "completed") if p else pd.DataFrame() for o, p in parts.items()}
    return result


def complete_array(model: WindowModel, values: np.ndarray, channels: list[str], fill: str = "all",
                   interval: float | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``values`` ``[N, C]`` (one recording) or ``[W, T, C]`` (windows, each its own block), NaN where not observed,
    ``channels`` naming the last axis, completed: the same array with the fillable run channels filled. With
    ``interval`` (a coverage): also the intervals' ``lower`` and ``upper`` bounds, arrays of the same shape (NaN where
    nothing was filled)."""
    if interval is not None:
        check_interval(model, interval)  # the caller's asked_coverage checked the number
    flat = np.asarray(values, dtype=np.float64).reshape(-1, values.shape[-1])
    present = [c for c, channel in enumerate(model.channels) if channel in channels]
    where = [channels.index(model.channels[c]) for c in present]
    raw = np.full((len(flat), len(model.channels)), np.nan)
    raw[:, present] = flat[:, where]
    empty = never_observed(np.isfinite(raw).any(axis=0), model.channels, channels)
    stream = Stream(model, fillable_channels(model, channels, fill, empty), spread=interval is not None)
    blocks = np.repeat(np.arange(len(values)), values.shape[1]) if values.ndim == 3 else np.zeros(len(flat), np.int64)
    whole = Finished.join(stream.feed(raw, blocks, 0) + stream.finish())
    filled = {c for c, n in zip(model.channels, whole.filled.sum(axis=0)) if n}
    untrusted_fills(model, filled, np.isfinite(raw).any(axis=0), "the array")
    arrays = [whole.completed]
    if interval is not None:
        arrays += interval_bounds(whole.completed, whole.filled, whole.spread, whole.kind, model.intervals.factors(interval))
    out = [flat.copy(), *(np.full_like(flat, np.nan) for _ in arrays[1:])]
    for array, done in zip(out, arrays):
        array[:, where] = done[:, present]
    return out[0].reshape(values.shape) if interval is None else tuple(a.reshape(values.shape) for a in out)
