"""The data store's format: its manifest and its arrays, read by rows.

See :mod:`tgatunet.data.store` for the layout. Rows are read with positioned reads (``os.pread``) into fresh buffers,
not through a memory map: pages of a mapped file that an epoch touches count in the process's resident memory and stay
there while the map lives, so a memory-mapped epoch would grow RSS with the dataset; explicit reads go through the
kernel's page cache, which is not the process's and is given back under memory pressure.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from tgatunet.errors import DataError

MANIFEST = "manifest.json"
SCHEMA = "tgatunet-store"
FORMAT_VERSION = 1
ARRAYS = ("values", "observed", "labels", "segments")


class ArrayEntry(BaseModel):
    """One array file of the store, as the manifest describes it."""

    model_config = ConfigDict(extra="forbid")
    file: str
    shape: list[int]
    dtype: str
    sha256: str


class SourceEntry(BaseModel):
    """One source of the store: where it came from, what the config said about it, its arrays."""

    model_config = ConfigDict(extra="forbid")
    name: str
    path: str
    sha256: str
    have: list[str]
    need: list[str]
    label_col: str
    block_col: str | None
    split_col: str | None
    time_col: str | None = None
    rate_hz: float | None = None
    max_gap_s: float | None = None
    grid_hz: float | None = None  # the grid a timed source was resampled onto
    rows: int
    segment_blocks: list[str]
    block_split: dict[str, str]
    arrays: dict[str, ArrayEntry]


class Manifest(BaseModel):
    """``manifest.json``: everything needed to validate the store and to read it."""

    model_config = ConfigDict(extra="forbid")
    schema_name: str
    format_version: int
    channels: list[str]
    class_names: list[str]
    sources: list[SourceEntry]


@dataclass(frozen=True)
class ArrayFile:
    """An ``.npy`` file read by rows: ``shape[0]`` rows of ``shape[1:]`` items from byte ``offset`` on."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize


def _close_all(fds: dict[Path, int]) -> None:
    for fd in fds.values():
        os.close(fd)
    fds.clear()


class _Files:
    """Read-only descriptors of the store's arrays, each opened on first use.

    Reads are positioned (``os.pread``: no shared file offset), so DataLoader workers forked from one process can share
    the descriptors; a pickled copy (a spawned worker) opens its own.
    """

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}
        weakref.finalize(self, _close_all, self._fds)

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def read(self, array: ArrayFile, first: int, count: int) -> np.ndarray:
        """Rows ``[first, first + count)`` of ``array`` as a read-only ``[count, *shape[1:]]`` array of fresh memory."""
        fd = self._fds.get(array.path)
        if fd is None:
            fd = self._fds[array.path] = os.open(array.path, os.O_RDONLY)
        size = count * array.row_bytes
        data = os.pread(fd, size, array.offset + first * array.row_bytes)
        if len(data) != size:
            raise DataError(f"store array '{array.path}' ends before row {first + count}; rebuild the store.")
        return np.frombuffer(data, dtype=array.dtype).reshape(count, *array.shape[1:])


@dataclass(frozen=True)
class StoreSource:
    """One source's arrays and its segments."""

    name: str
    rows: int
    segment_blocks: list[str]
    block_split: dict[str, str]
    arrays: dict[str, ArrayFile]


@dataclass(frozen=True)
class DataStore:
    """An opened, validated store. Every read returns read-only arrays of fresh memory; nothing is mapped."""

    root: Path
    channels: list[str]
    class_names: list[str]
    sources: list[StoreSource]
    files: _Files = field(default_factory=_Files, repr=False, compare=False)

    def read_values(self, source: int, first: int, count: int) -> np.ndarray:
        """``[count, C]`` float32 raw values of rows ``[first, first + count)`` of ``source`` (NaN = not observed)."""
        return self.files.read(self.sources[source].arrays["values"], first, count)

    def read_observed(self, source: int, first: int, count: int) -> np.ndarray:
        """``[count, C]`` bool observation mask of those rows."""
        return self.files.read(self.sources[source].arrays["observed"], first, count)

    def read_labels(self, source: int, first: int, count: int) -> np.ndarray:
        """``[count]`` int64 class index of those rows (-1 = none)."""
        return self.files.read(self.sources[source].arrays["labels"], first, count)

    def segments(self, source: int) -> np.ndarray:
        """``[S, 2]`` int64 ``[start, end)`` rows (within the source) of its block segments."""
        segments = self.sources[source].arrays["segments"]
        return self.files.read(segments, 0, segments.shape[0])
