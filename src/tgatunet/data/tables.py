"""Tables read and written in chunks, their cells kept as they were read.

A CSV file is read as text: every cell of a chunk is the string the file holds
(``000``, ``NA`` and ``01`` stay what they are), and only the modality columns
are parsed as numbers, for the model. A Parquet file is read one row group at a
time with its own column types. Outputs are written to a temporary file beside
the target, chunk after chunk, and renamed over it when complete, so a reader
never sees half a file and an interrupted write leaves nothing behind.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tgatunet.errors import DataError

PARQUET = (".parquet", ".pq")
# Cells of a modality column that mean "not observed".
MISSING_TEXT = {"", "na", "n/a", "nan", "null", "none", "#n/a"}
FLOAT32_MAX = float(np.finfo(np.float32).max)


def table_format(path: Path) -> str:
    return "parquet" if path.suffix.lower() in PARQUET else "csv"


class TableReader:
    """A CSV or Parquet file read in chunks of about ``chunk_rows`` rows.

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
            if self.format == "parquet":
                # Pre-buffering keeps every row group read so far in memory: a long file would end up all there.
                self._parquet = pq.ParquetFile(self.path, pre_buffer=False)
                self.columns = list(self._parquet.schema_arrow.names)
            else:
                with open(self.path, newline="", encoding="utf-8") as handle:
                    self.columns = next(csv.reader(handle), [])
        except (OSError, UnicodeDecodeError, pa.ArrowException, csv.Error) as err:
            raise DataError(f"cannot read '{self.path}': {err}") from None
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
                yield from pd.read_csv(
                    self.path, dtype=str, keep_default_na=False, na_filter=False, chunksize=self.chunk_rows
                )
        except (pa.ArrowException, pd.errors.ParserError, UnicodeDecodeError) as err:
            raise DataError(f"cannot read '{self.path}': {err}") from None


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def numeric_cells(column: pd.Series, where: str, first_row: int) -> np.ndarray:
    """A modality column as ``float64`` (NaN = not observed), or a :class:`DataError` naming the bad cell.

    Text cells that are empty or read ``NA``, ``null``, ``None``, ``n/a``, ``NaN`` are missing;
    infinite values and values beyond float32's range are refused (the model computes in float32).
    """
    name = column.name
    if pd.api.types.is_bool_dtype(column.dtype):
        raise DataError(f"{where}: column '{name}' is boolean; modality columns must be numeric.")
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = column.astype(str).str.strip()
        missing = text.str.lower().isin(MISSING_TEXT) | column.isna().to_numpy()
        values = pd.to_numeric(text.where(~missing, "nan"), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isnan(values) & ~missing.to_numpy())
        if len(bad):
            row = int(bad[0])
            raise DataError(
                f"{where}: column '{name}' is not numeric: row {first_row + row} holds {column.iloc[row]!r}. "
                "Modality columns must hold numbers; leave cells empty for values not observed."
            )
    extreme = np.flatnonzero(np.abs(values) > FLOAT32_MAX)
    if len(extreme):
        row = int(extreme[0])
        raise DataError(
            f"{where}: column '{name}' row {first_row + row} holds {float(values[row])!r}, beyond float32's range "
            f"(|x| <= {FLOAT32_MAX:.3g}). Fix the cell, or leave it empty if it was not observed."
        )
    return values


class TableWriter:
    """Chunks of one output table, written to a temporary file and renamed over ``path`` by :meth:`close`."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.format = Path(path), fmt
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self._parquet: pq.ParquetWriter | None = None
        self._header = True
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        if self.format == "parquet":
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.tmp, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        else:
            frame.to_csv(self.tmp, mode="w" if self._header else "a", header=self._header, index=False)
        self._header = False
        self.rows += len(frame)

    def close(self) -> None:
        """Finish the file and put it in place."""
        if self._parquet is not None:
            self._parquet.close()
        elif self._header:
            raise DataError(f"'{self.path}': nothing to write.")
        self.tmp.replace(self.path)

    def abort(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        self.tmp.unlink(missing_ok=True)
