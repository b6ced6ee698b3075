"""Tables read and written in chunks, their cells kept as they were read.

A CSV file is read as text: every cell of a chunk is the string the file holds (``000``, ``NA`` and ``01`` stay what
they are), and only the modality columns are parsed as numbers, for the model. A Parquet file is read one row group at a
time with its own column types. Outputs are written to a temporary file beside the target (unique to the process), chunk
after chunk, and renamed over it when complete, so a reader never sees half a file and an interrupted write leaves
nothing behind.
"""

from __future__ import annotations

import csv
import functools
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from tgatunet.errors import DataError, shown
from tgatunet.files import AtomicFile

PARQUET = (".parquet", ".pq")
# Cells of a modality column that mean "not observed".
MISSING_TEXT = {"", "na", "n/a", "nan", "null", "none", "#n/a"}
FLOAT32_MAX = float(np.finfo(np.float32).max)


def table_format(path: Path) -> str:
    return "parquet" if path.suffix.lower() in PARQUET else "csv"


def _reason(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):
        return (f"it is not UTF-8 text (byte {err.object[err.start:err.start + 1]!r} at byte {err.start}); "
                "save it as UTF-8 (in a spreadsheet: CSV UTF-8).")
    return str(err)


class TableReader:
    """A CSV or Parquet file read in chunks of about ``chunk_rows`` rows.

    The file's size and modification time are noted when it is opened and checked again after the last chunk: a file
    another program wrote meanwhile is refused, not half read. A CSV row with more or fewer fields than the header, or a
    last line without a line break (a writer cut off mid-row), is refused too, naming the row.

    Attributes:
        columns: the header, in file order.
        rows: the number of data rows (CSV: counted by newlines, when first asked).
    """

    def __init__(self, path: Path, chunk_rows: int = 65536) -> None:
        self.path, self.chunk_rows = Path(path), chunk_rows
        if not self.path.is_file():
            raise DataError(f"input file '{self.path}' not found.")
        self.format = table_format(self.path)
        try:
            self._stamp = _stamp(self.path)
            if self.format == "parquet":
                # Pre-buffering keeps every row group read so far in memory: a long file would end up all there.
                self._parquet = pq.ParquetFile(self.path, pre_buffer=False)
                self.columns = list(self._parquet.schema_arrow.names)
            else:
                with open(self.path, newline="", encoding="utf-8-sig") as handle:  # Excel writes a BOM
                    self.columns = next(csv.reader(handle), [])
                _check_line_end(self.path)
        except (OSError, UnicodeDecodeError, pa.ArrowException, csv.Error) as err:
            raise DataError(f"cannot read '{self.path}': {_reason(err)}") from None
        if not self.columns:
            raise DataError(f"'{self.path}' is empty: a table starts with a header line naming its columns.")
        dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if dupes:
            raise DataError(f"'{self.path}': the header names column(s) {dupes} more than once; rename them.")

    @functools.cached_property
    def rows(self) -> int:
        if self.format == "parquet":
            return self._parquet.metadata.num_rows
        return max(_count_lines(self.path) - 1, 0)

    def chunks(self) -> Iterator[pd.DataFrame]:
        """The rows in order, as DataFrames: CSV cells as strings, Parquet columns with their Arrow types."""
        try:
            if self.format == "parquet":
                for batch in self._parquet.iter_batches(batch_size=self.chunk_rows):
                    yield batch.to_pandas(types_mapper=pd.ArrowDtype)
            else:
                yield from self._csv_chunks()
        except (pa.ArrowException, pd.errors.ParserError, UnicodeDecodeError) as err:
            if isinstance(err, pd.errors.ParserError):
                _check_fields(self.path, self.columns)
            raise DataError(f"cannot read '{self.path}': {_reason(err)}") from None
        if _stamp(self.path) != self._stamp:
            raise DataError(f"'{self.path}' changed while it was being read (size/modification time differ); "
                            "read it again when the writer has finished.")

    def _csv_chunks(self) -> Iterator[pd.DataFrame]:
        # pandas reads a row with too few fields as one ending in empty cells; only then is the file checked.
        checked = len(self.columns) < 2
        for chunk in pd.read_csv(self.path, dtype=str, keep_default_na=False, na_filter=False, chunksize=self.chunk_rows,
                                 encoding="utf-8-sig"):
            if not checked and (chunk.iloc[:, -1] == "").any():
                _check_fields(self.path, self.columns)
                checked = True
            yield chunk


def _stamp(path: Path) -> tuple[int, int] | None:
    """Size and modification time of ``path`` (None once it is gone)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def _row(row: int) -> str:
    """A data row as messages name it: from 0, after the header (line 1)."""
    return f"data row {row} (line {row + 2})"


def _check_line_end(path: Path) -> None:
    """Refuse a CSV whose last line has no line break: a writer stopped mid-row leaves such a file."""
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        if end == 0:
            return
        handle.seek(end - 1)
        if handle.read(1) in (b"\n", b"\r"):
            return
    lines = _count_lines(path)
    what = "its header (line 1)" if lines == 1 else f"its last line, {_row(lines - 2)},"
    raise DataError(f"'{path}': {what} does not end with a line break: the file looks cut off mid-write (a logger that "
                    "stopped?). If that line is whole, end the file with a line break; otherwise delete the line.")


def _check_fields(path: Path, columns: list[str]) -> None:
    """Raise a :class:`DataError` at the first row whose number of fields differs from the header's.

    One pass of Arrow's CSV parser over the file, keeping one column: a tenth of what reading it costs.
    """
    bad: list = []
    read = pa_csv.ReadOptions(use_threads=False, column_names=columns, skip_rows=1)  # use_threads: rows numbered
    parse = pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda row: bad.append(row) or "error")
    convert = pa_csv.ConvertOptions(include_columns=columns[:1], column_types={columns[0]: pa.string()}, check_utf8=False)
    try:
        for _ in pa_csv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert):
            pass
    except pa.ArrowInvalid:
        pass  # a bad row stopped the pass; any other failure is left to the reading itself
    if bad:
        row = bad[0]  # its number counts the header as 1
        raise DataError(f"'{path}': {_row(row.number - 2)} has {row.actual_columns} field(s) but the header has "
                        f"{row.expected_columns}: {shown(row.text)}. A row cut short (a logger that stopped mid-write?) or with a "
                        "stray delimiter cannot be read; fix the row or delete it.")


def numeric_cells(column: pd.Series, where: str, first_row: int) -> np.ndarray:
    """A modality column as ``float64`` (NaN = not observed), or a :class:`DataError` naming the bad cell.

    Text cells that are empty or read ``NA``, ``null``, ``None``, ``n/a``, ``NaN`` are missing;
    infinite values and values beyond float32's range are refused (the model computes in float32).
    """
    name = column.name
    if pd.api.types.is_bool_dtype(column.dtype) or pd.api.types.is_complex_dtype(column.dtype):
        raise DataError(f"{where}: column '{name}' is {column.dtype}; modality columns must hold real numbers.")
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = column.astype(str).str.strip()
        missing = text.str.lower().isin(MISSING_TEXT) | column.isna().to_numpy()
        values = pd.to_numeric(text.where(~missing, "nan"), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isnan(values) & ~missing.to_numpy())
        if len(bad):
            row = int(bad[0])
            raise DataError(f"{where}: column '{name}' is not numeric: row {first_row + row} holds {shown(column.iloc[row])}. "
                            "Modality columns must hold numbers; leave cells empty (or NA, NaN, null, None, n/a, #N/A) for values not observed.")
    extreme = np.flatnonzero(np.abs(values) > FLOAT32_MAX)
    if len(extreme):
        row = int(extreme[0])
        raise DataError(f"{where}: column '{name}' row {first_row + row} holds {float(values[row])!r}, beyond float32's range "
                        f"(|x| <= {FLOAT32_MAX:.3g}). Fix the cell, or leave it empty if it was not observed.")
    return values


def numeric_table(frame: pd.DataFrame, where: str, first_row: int) -> np.ndarray:
    """:func:`numeric_cells` of every column of ``frame``: ``[n, C]`` float64. The text columns are parsed as one
    (a recording of a thousand channels costs one parse, not a thousand); only a table with a bad cell is gone
    through column by column, to name it."""
    values = np.empty((len(frame), frame.shape[1]))
    text = [i for i, kind in enumerate(frame.dtypes) if not pd.api.types.is_numeric_dtype(kind)]
    parsed = set()
    if len(text) > 1:
        try:
            cells = pd.Series(frame.iloc[:, text].to_numpy(dtype=object).ravel(order="F"), name=str(frame.columns[text[0]]))
            values[:, text] = numeric_cells(cells, where, 0).reshape(len(text), len(frame)).T
            parsed = set(text)
        except DataError:
            pass  # named below, column by column
    for i, name in enumerate(frame.columns):
        if i not in parsed:
            values[:, i] = numeric_cells(frame[name], where, first_row)
    return values


def csv_bytes(frame: pd.DataFrame, header: bool) -> bytes:
    """``frame`` as CSV text. A frame of text, numbers and flags (what ``predict`` writes) goes through Arrow's writer,
    about four times faster than ``DataFrame.to_csv``: ``True``/``False`` and empty cells as pandas writes them,
    numbers in their shortest form (``1`` for 1.0), and, in a chunk where a cell holds a comma, quote or line break,
    every text cell quoted. Any other column (times, lists, bytes) sends the frame through pandas."""
    plain = (pa.types.is_string, pa.types.is_large_string, pa.types.is_boolean, pa.types.is_integer, pa.types.is_floating)
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        table = None
    if table is None or not all(any(kind(c.type) for kind in plain) for c in table.columns):
        return frame.to_csv(index=False, header=header).encode("utf-8")
    table = pa.table([pc.if_else(c, "True", "False") if pa.types.is_boolean(c.type) else c for c in table.columns],
                     names=table.column_names)
    buffer = io.StringIO()
    if header:
        csv.writer(buffer, lineterminator="\n").writerow(frame.columns)
    out = io.BytesIO()
    try:
        pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
    except pa.ArrowInvalid:  # a cell holds a comma, a quote or a line break
        out = io.BytesIO()
        pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
    return buffer.getvalue().encode("utf-8") + out.getvalue()


class TableWriter:
    """Chunks of one output table, streamed to an :class:`~tgatunet.files.AtomicFile` and put in place by :meth:`close`."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.format = Path(path), fmt
        self._file: AtomicFile | None = None
        self._parquet: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        first = self._file is None
        if first:
            self._file = AtomicFile(self.path)
        if self.format == "parquet":
            # Without pandas' dtype names (an Arrow-backed categorical's cannot be read back by pandas):
            # the Arrow types alone, which pandas, pyarrow and other readers all understand.
            table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
            if first:
                self._parquet = pq.ParquetWriter(self._file.handle, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        else:
            self._file.handle.write(csv_bytes(frame, header=first))
        self.rows += len(frame)

    def close(self) -> None:
        """Finish the file and put it in place."""
        if self._file is None:
            raise DataError(f"'{self.path}': nothing to write.")
        if self._parquet is not None:
            self._parquet.close()
        self._file.commit()

    def abort(self) -> None:
        """Drop what was written; ``path`` stays as it was."""
        if self._parquet is not None:
            self._parquet.close()
        if self._file is not None:
            self._file.abort()
