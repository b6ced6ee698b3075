"""Reading one source file into arrays, with errors that name file and column.

A source is a CSV or Parquet table, one row per time step. Reading it yields
a :class:`SourceTable`: the configured channels as one float32 array
``[N, C]`` (NaN = not observed), block segments, and raw labels. Nothing here
modifies the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tgatunet.config import Config, SourceConfig
from tgatunet.data.datasets import BUNDLED_SCHEME, resolve_bundled
from tgatunet.errors import DataError

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class SourceTable:
    """One source's rows, in file order.

    Attributes:
        name: source name from the config.
        path: the file it was read from.
        values: ``[N, C]`` float32 in the config's channel order; NaN where not observed
            (including every channel the source does not have).
        segment_bounds: ``[S, 2]`` int64 ``[start, end)`` row ranges of contiguous blocks.
        segment_blocks: ``[S]`` block name of each segment (a block may span several segments
            when its rows are not consecutive; its segments share one split).
        labels: ``[N]`` raw label values (object array; None where missing).
        block_split: split fixed by ``split_col`` for each block name, or empty.
    """

    name: str
    path: Path
    values: np.ndarray
    segment_bounds: np.ndarray
    segment_blocks: np.ndarray
    labels: np.ndarray
    block_split: dict[str, str]


def read_table(path: Path, source_name: str) -> pd.DataFrame:
    """Read a CSV or Parquet file as it is."""
    if not path.is_file():
        raise DataError(f"source '{source_name}': file '{path}' not found. Check 'path' in the config.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".gz"):
            return pd.read_csv(path)
    except Exception as err:  # a parser error: report it against the file
        raise DataError(f"source '{source_name}': cannot read '{path}': {err}") from None
    raise DataError(
        f"source '{source_name}': '{path}' has suffix '{suffix}'; use a .csv or .parquet file."
    )


def _numeric_column(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw):
        raise DataError(f"{where}: column '{column}' is boolean; modality columns must be numeric.")
    numeric = pd.to_numeric(raw, errors="coerce")
    bad = numeric.isna() & raw.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{where}: column '{column}' is not numeric: row {row} holds {raw.iloc[row]!r}. "
            "Modality columns must hold numbers; leave cells empty for values not observed."
        )
    return numeric.to_numpy(dtype=np.float64)


def _segments(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous runs of equal block values: ``[S, 2]`` bounds and ``[S]`` block names."""
    n = len(blocks)
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64), np.array([], dtype=object)
    change = np.flatnonzero(blocks[1:] != blocks[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [n]])
    return np.stack([starts, ends], axis=1).astype(np.int64), blocks[starts]


def source_path(config: Config, source: SourceConfig) -> Path:
    """A source's file: bundled, absolute, or relative to the config file."""
    if source.path.startswith(BUNDLED_SCHEME):
        return resolve_bundled(source.path)
    return config.resolve(source.path)


def load_source(config: Config, source: SourceConfig) -> SourceTable:
    """Read one source and check it against the config."""
    path = source_path(config, source)
    where = f"source '{source.name}' ({path})"
    frame = read_table(path, source.name)
    if len(frame) == 0:
        raise DataError(f"{where}: the file has no rows.")

    label_col = source.label_col or config.data.label_col
    block_col = source.block_col or config.data.block_col
    expected = [*config.data.common_modalities, *source.have]
    for column, role in [(label_col, "label_col"), (block_col, "block_col"), (config.data.split_col, "split_col")]:
        if column is not None and column not in frame.columns:
            raise DataError(
                f"{where}: {role} '{column}' is not a column of the file. "
                f"Columns found: {', '.join(map(str, frame.columns))}."
            )
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        close = {c: [str(x) for x in frame.columns if str(x).lower() == c.lower()] for c in missing}
        hint = "".join(f" Did you mean '{v[0]}' for '{k}'?" for k, v in close.items() if v)
        raise DataError(
            f"{where}: modality column(s) {missing} (from common_modalities/have) are not in the file.{hint} "
            f"Columns found: {', '.join(map(str, frame.columns))}."
        )

    channels = config.channels
    values = np.full((len(frame), len(channels)), np.nan, dtype=np.float32)
    for j, channel in enumerate(channels):
        if channel in expected or (channel in source.need and channel in frame.columns):
            values[:, j] = _numeric_column(frame, channel, where)
    for channel in expected:
        if np.isnan(values[:, channels.index(channel)]).all():
            raise DataError(
                f"{where}: column '{channel}' has no observed value at all. "
                f"Move it to this source's 'need' list if the source lacks it."
            )

    if block_col is None:
        blocks = np.zeros(len(frame), dtype=object)
    else:
        if frame[block_col].isna().any():
            row = int(np.flatnonzero(frame[block_col].isna().to_numpy())[0])
            raise DataError(f"{where}: block_col '{block_col}' is empty at row {row}; every row needs a block.")
        blocks = frame[block_col].astype(str).to_numpy(dtype=object)
    bounds, segment_blocks = _segments(blocks)

    labels = frame[label_col].to_numpy(dtype=object)
    labels = np.where(pd.isna(frame[label_col]).to_numpy(), None, labels)

    block_split: dict[str, str] = {}
    if config.data.split_col is not None:
        block_split = _block_splits(frame[config.data.split_col], blocks, where, config.data.split_col)
    return SourceTable(source.name, path, values, bounds, segment_blocks, labels, block_split)


def _block_splits(split: pd.Series, blocks: np.ndarray, where: str, column: str) -> dict[str, str]:
    names = split.astype(str).str.strip().str.lower()
    unknown = sorted(set(names) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(
            f"{where}: split_col '{column}' holds {unknown[:5]}; allowed values are train, val, test."
        )
    per_block = pd.DataFrame({"block": blocks, "split": names.map(SPLIT_NAMES)})
    counts = per_block.groupby("block")["split"].nunique()
    mixed = counts[counts > 1]
    if len(mixed):
        raise DataError(
            f"{where}: block '{mixed.index[0]}' has rows in several splits in split_col '{column}'; "
            "a block must belong to one split, or windows would leak between splits."
        )
    return per_block.groupby("block")["split"].first().to_dict()


def encode_labels(tables: list[SourceTable]) -> tuple[list[str], list[np.ndarray]]:
    """Map raw labels of all sources to class indices (-1 = missing).

    Classes are sorted numerically when every label is a number, else as text.
    """
    names, index = order_classes({lab for t in tables for lab in t.labels if lab is not None})
    coded = [np.array([index.get(v, -1) if v is not None else -1 for v in t.labels], dtype=np.int64) for t in tables]
    return names, coded


def order_classes(labels: set) -> tuple[list[str], dict]:
    """Class names and the class index of each raw label value, for the distinct ``labels``.

    Classes are sorted numerically when every label is a number, else as text.
    """
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in labels):
        ordered = sorted(labels)
        names = [str(int(v)) if float(v).is_integer() else str(v) for v in ordered]
    else:
        ordered = sorted(labels, key=str)
        names = [str(v) for v in ordered]
    return names, {v: i for i, v in enumerate(ordered)}
