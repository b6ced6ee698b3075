"""A table completed and classified: the outputs of ``tgatunet predict`` and ``tgatunet complete``.

For an input named ``NAME`` three tables, in the input's format unless asked otherwise:

* ``NAME_completed``: every row in its order, every input cell as read, the
  filled cells of the run's channels (a channel the input lacks becomes a
  column), a ``<channel>_imputed`` column per fillable channel flagging exactly
  the filled cells, and per row the class probabilities of the windows covering
  it, averaged (``p_<class>``), with their most likely class (``predicted``);
* ``NAME_windows``: one row per window: its block, first and last row (data
  rows of the input, from 0), ``predicted`` and ``p_<class>``;
* ``NAME_blocks``: one row per block: its windows, their mean probabilities and
  the most likely class.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tgatunet.apply.stream import Finished, Stream, WindowModel
from tgatunet.data.tables import TableReader, TableWriter, numeric_cells
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
    outputs: dict[str, Path] = field(default_factory=dict)


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


def empty_channels(reader: TableReader, channels: list[str]) -> set[str]:
    """The run channels that the file has as columns but never observes (one pass over the file)."""
    present = [c for c in channels if c in reader.columns]
    seen = set()
    for first, chunk in _numbered(reader.chunks()):
        for c in present:
            if c not in seen and np.isfinite(numeric_cells(chunk[c], str(reader.path), first)).any():
                seen.add(c)
    return set(present) - seen


def _numbered(chunks: Iterable[pd.DataFrame]):
    first = 0
    for chunk in chunks:
        yield first, chunk
        first += len(chunk)


def _as_column(original: pd.Series, values: np.ndarray, filled: np.ndarray, text: bool):
    """``original`` with ``values`` where ``filled``: text cells get a number written, typed cells a float."""
    if text:
        cells = original.to_numpy(dtype=object, copy=True)
        cells[filled] = [f"{v:.7g}" for v in values[filled]]
        return cells
    column = original.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    column[filled] = values[filled]
    kind = original.dtype.numpy_dtype if isinstance(original.dtype, pd.ArrowDtype) else original.dtype
    return column.astype(np.float32) if kind == np.float32 else column


def completed_frame(part: Finished, model: WindowModel, plan: Plan) -> pd.DataFrame:
    """The rows of ``part`` as the completed table writes them."""
    out = part.frame.copy()
    for c, channel in enumerate(model.channels):
        if plan.fillable[c]:
            if channel in out.columns:
                out[channel] = _as_column(out[channel], part.completed[:, c], part.filled[:, c], plan.text)
            else:
                out[channel] = _as_column(pd.Series(np.full(len(out), np.nan)), part.completed[:, c], part.filled[:, c], plan.text)
    for c, channel in enumerate(model.channels):
        if plan.fillable[c]:
            out[channel + IMPUTED_SUFFIX] = part.filled[:, c]
    return pd.concat([out, _class_columns(part.probabilities, model.classes, out.index)], axis=1)


def _class_columns(probs: np.ndarray, classes: list[str], index=None) -> pd.DataFrame:
    columns = {"predicted": np.asarray(classes, dtype=object)[probs.argmax(axis=1)]} if len(probs) else {"predicted": []}
    columns.update({f"p_{k}": probs[:, i] for i, k in enumerate(classes)})
    return pd.DataFrame(columns, index=index)


def windows_frame(records: list[dict], classes: list[str]) -> pd.DataFrame:
    probs = np.array([r["probs"] for r in records]).reshape(len(records), len(classes))
    head = pd.DataFrame({key: [r[key] for r in records] for key in ("block", "first_row", "last_row")})
    return pd.concat([head, _class_columns(probs, classes)], axis=1)


def blocks_frame(blocks: dict[str, tuple[np.ndarray, int]], classes: list[str]) -> pd.DataFrame:
    names = list(blocks)
    probs = np.array([blocks[b][0] / blocks[b][1] for b in names]).reshape(len(names), len(classes))
    head = pd.DataFrame({"block": names, "windows": [blocks[b][1] for b in names]})
    return pd.concat([head, _class_columns(probs, classes)], axis=1)


def apply_chunks(
    model: WindowModel,
    plan: Plan,
    chunks: Iterable[pd.DataFrame],
    sinks: dict[str, Callable[[pd.DataFrame], None]],
    where: str,
    on_rows: Callable[[int], None] | None = None,
) -> Applied:
    """Stream ``chunks`` of a table through the model into ``sinks`` (one per name of :data:`OUTPUTS`)."""
    plan.check(model, where)
    start, result = time.perf_counter(), Applied(plan.name)
    stream = Stream(model, plan.fillable)
    filled = np.zeros(len(model.channels), dtype=np.int64)

    def emit(parts: list[Finished]) -> None:
        for part in parts:
            sinks["completed"](completed_frame(part, model, plan))
            filled[:] += part.filled.sum(axis=0)
            result.rows += len(part.frame)
            if on_rows:
                on_rows(len(part.frame))
        if stream.windows:
            sinks["windows"](windows_frame(stream.windows, model.classes))
            result.windows += len(stream.windows)
            stream.windows.clear()

    for first, chunk in _numbered(chunks):
        if not len(chunk):
            continue
        values = np.full((len(chunk), len(model.channels)), np.nan)
        for c, channel in enumerate(model.channels):
            if channel in chunk.columns:
                values[:, c] = numeric_cells(chunk[channel], where, first)
        blocks = _block_ids(chunk, plan, where, first)
        emit(stream.feed(chunk, values, blocks, first))
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
    plan = Plan(name, reader.columns, block_col, fillable_channels(model, reader.columns, fill, empty, need),
                reader.format == "csv")
    fmt = fmt or reader.format
    writers = {o: TableWriter(Path(out_dir) / f"{name}_{o}.{fmt}", fmt) for o in OUTPUTS}
    try:
        result = apply_chunks(model, plan, reader.chunks(), {o: w.write for o, w in writers.items()}, where, on_rows)
        for writer in writers.values():
            writer.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    result.outputs = {o: w.path for o, w in writers.items()}
    return result


def apply_frame(
    model: WindowModel, frame: pd.DataFrame, *, block_col: str | None = None, fill: str = "all", chunk_rows: int = 65536
) -> tuple[dict[str, pd.DataFrame], Applied]:
    """:func:`apply_file` for a DataFrame in memory: the three tables, and what was done."""
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        raise DataError(f"the DataFrame has duplicated column names {sorted({c for c in columns if columns.count(c) > 1})}.")
    empty = {c for c in model.channels if c in frame.columns and not np.isfinite(numeric_cells(frame[c], "the DataFrame", 0)).any()}
    plan = Plan("frame", columns, block_col, fillable_channels(model, columns, fill, empty), text=False)
    parts: dict[str, list[pd.DataFrame]] = {o: [] for o in OUTPUTS}
    chunks = (frame.iloc[lo : lo + chunk_rows] for lo in range(0, len(frame), chunk_rows))
    result = apply_chunks(model, plan, chunks, {o: parts[o].append for o in OUTPUTS}, "the DataFrame")
    tables = {o: pd.concat(p, ignore_index=o != "completed") if p else pd.DataFrame() for o, p in parts.items()}
    return tables, result
