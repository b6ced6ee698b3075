"""A table completed and classified: the outputs of ``tgatunet predict`` and ``tgatunet complete``.

For an input named ``NAME``: ``NAME_completed`` (every row and input cell as read, the filled cells, their
``<channel>_imputed`` flags, per-row ``p_<class>`` and ``predicted``), ``NAME_windows`` (one row per window) and
``NAME_blocks`` (one row per block), in the input's format unless asked otherwise; README.md (Apply a trained run to
new recordings) lists their columns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tgatunet.infer.stream import Finished, Stream, WindowModel, Windows
from tgatunet.data.tables import TableReader, TableWriter, numeric_table
from tgatunet.errors import DataError

IMPUTED_SUFFIX = "_imputed"
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


@dataclass(frozen=True)
class Plan:
    """How one table is read: its name, columns, block column and the channels to fill."""

    name: str
    columns: list[str]
    block_col: str | None
    fillable: np.ndarray  # [C] bool
    text: bool  # cells are strings (CSV) rather than typed values

    def check(self, model: WindowModel, where: str) -> None:
        present = [c for c in model.channels if c in self.columns]
        if not present:
            raise DataError(
                f"{where} has none of the run's channels {model.channels}; its columns are {self.columns}. "
                "Rename the columns to the channel names the run was trained on."
            )
        new = [f"{c}{IMPUTED_SUFFIX}" for c, f in zip(model.channels, self.fillable) if f]
        new += ["predicted", *(f"p_{k}" for k in model.classes)]
        clash = [c for c in new if c in self.columns]
        if clash:
            raise DataError(f"{where} already has column(s) {clash}, which the output adds; rename them.")
        if self.block_col is not None and self.block_col not in self.columns:
            raise DataError(f"{where}: block column '{self.block_col}' is not a column; its columns are {self.columns}.")


def fillable_channels(model: WindowModel, columns: list[str], fill: str, empty: set[str], need: list[str] | None = None):
    """``[C]`` bool: every run channel (``fill="all"``), or the channels the table lacks (``"need"``):
    ``need`` when given (a config source's), else those absent from ``columns`` or in ``empty``."""
    if fill == "all":
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


def completed_frame(rows: pd.DataFrame, part: Finished, model: WindowModel, plan: Plan) -> pd.DataFrame:
    """The input ``rows`` of ``part`` as the completed table writes them (built at once: no column inserts)."""
    at = {channel: c for c, channel in enumerate(model.channels)}
    rewritten = lambda name: name in at and (plan.fillable[at[name]] or not plan.text)  # noqa: E731
    columns = {name: _channel_column(cells, part, at[name], plan.text) if rewritten(name) else cells for name, cells in rows.items()}
    columns.update({ch: _channel_column(None, part, c, plan.text) for c, ch in enumerate(model.channels) if plan.fillable[c] and ch not in columns})
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
    stream = Stream(model, plan.fillable)
    filled = np.zeros(len(model.channels), dtype=np.int64)
    pending: list[pd.DataFrame] = []  # input rows fed but not yet finished

    def emit(parts: list[Finished]) -> None:
        for part in parts:
            n = len(part.completed)
            head = pd.concat(pending) if len(pending) > 1 else pending[0]
            pending[:] = [head.iloc[n:]]
            sinks["completed"](completed_frame(head.iloc[:n], part, model, plan))
            filled[:] += part.filled.sum(axis=0)
            result.rows += n
            if on_rows:
                on_rows(n)
        if stream.windows:
            table = windows_frame(stream.windows, model.classes)
            sinks["windows"](table)
            result.windows += len(table)
            stream.windows.clear()

    first = 0
    for chunk, values in chunks:
        if len(chunk):
            pending.append(chunk)
            emit(stream.feed(values, _block_ids(chunk, plan, where, first), first))
            first += len(chunk)
    emit(stream.finish())
    if not result.rows:
        raise DataError(f"{where} has no data rows.")
    sinks["blocks"](blocks_frame(stream.blocks, model.classes))
    result.filled = {c: int(n) for c, n, f in zip(model.channels, filled, plan.fillable) if f}
    result.seconds = time.perf_counter() - start
    return result


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
    on_rows: Callable[[int], None] | None = None,
    chunk_rows: int = 65536,
) -> Applied:
    """Complete and classify the file ``path``, writing ``NAME_completed``, ``NAME_windows`` and ``NAME_blocks``
    to ``out_dir`` (each atomically: all three are in place only when all succeeded)."""
    reader = TableReader(path, chunk_rows)
    where = f"input '{path}'"
    name = name or path.stem
    empty = empty_channels(reader, model.channels) if fill == "need" and need is None else set()
    fmt = fmt or reader.format
    plan = Plan(name, reader.columns, block_col, fillable_channels(model, reader.columns, fill, empty, need),
                text=reader.format == "csv" and fmt == "csv")
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


def apply_frame(model: WindowModel, frame: pd.DataFrame, *, block_col: str | None = None, fill: str = "all", chunk_rows: int = 65536) -> Applied:
    """:func:`apply_file` for a DataFrame in memory: what was done, with the three tables (``Applied.tables``)."""
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        raise DataError(f"the DataFrame has duplicated column names {sorted({c for c in columns if columns.count(c) > 1})}.")
    frame = frame.set_axis(columns, axis=1)
    values = channel_values(frame, model.channels, "the DataFrame", 0)  # every channel parsed once
    empty = never_observed(np.isfinite(values).any(axis=0), model.channels, columns)
    plan = Plan("frame", columns, block_col, fillable_channels(model, columns, fill, empty), text=False)
    parts: dict[str, list[pd.DataFrame]] = {o: [] for o in OUTPUTS}
    chunks = ((frame.iloc[lo : lo + chunk_rows], values[lo : lo + chunk_rows]) for lo in range(0, len(frame), chunk_rows))
    result = apply_chunks(model, plan, chunks, {o: parts[o].append for o in OUTPUTS}, "the DataFrame")
    result.tables = {o: pd.concat(p, ignore_index=o != "completed") if p else pd.DataFrame() for o, p in parts.items()}
    return result


def complete_array(model: WindowModel, values: np.ndarray, channels: list[str], fill: str = "all") -> np.ndarray:
    """``values`` ``[N, C]`` (one recording) or ``[W, T, C]`` (windows, each its own block), NaN where not observed,
    ``channels`` naming the last axis, completed: the same array with the fillable run channels filled."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1, values.shape[-1])
    present = [c for c, channel in enumerate(model.channels) if channel in channels]
    where = [channels.index(model.channels[c]) for c in present]
    raw = np.full((len(flat), len(model.channels)), np.nan)
    raw[:, present] = flat[:, where]
    empty = never_observed(np.isfinite(raw).any(axis=0), model.channels, channels)
    stream = Stream(model, fillable_channels(model, channels, fill, empty))
    blocks = np.repeat(np.arange(len(values)), values.shape[1]) if values.ndim == 3 else np.zeros(len(flat), np.int64)
    parts = stream.feed(raw, blocks, 0) + stream.finish()
    out = flat.copy()
    out[:, where] = np.concatenate([p.completed for p in parts])[:, present]
    return out.reshape(values.shape)
