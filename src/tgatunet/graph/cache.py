"""The graph cache: knn graphs of windows seen before, in memory and on disk.

Structure-only graphs (the temporal graph: a function of window length,
``time_k`` and device) live in :func:`temporal_neighbors`' own LRU. This module
caches the data-dependent ones, looked up by content:

* **key**: a 128-bit BLAKE2b hash of the format version, the builder's
  signature (graph type, ``graph_knn``, ``time_k``), the window's shape
  (``window_size``, channels) and the bytes of what the graph is built from,
  the visible values (zero elsewhere) and the visibility mask. Changing any
  parameter or any visible value gives another key, so stale entries are
  never read; they age out through the size limit.
* **memory**: :class:`MemoryLRU`, decoded tables, least recently used evicted
  beyond a byte limit.
* **disk**: :class:`DiskGraphStore`, one small binary file per window under
  ``ROOT/entries/``. A file is written to a temporary name in its final
  folder and renamed over the target, so a reader sees a whole entry or none,
  whichever DataLoader worker, DDP rank or run wrote it. Each file carries its
  key and a CRC32 of its payload: a corrupt or truncated entry is reported
  once as a warning and rebuilt, never fatal. Entries are not fsynced: a torn
  file after a crash is caught by the same check. Beyond the size limit the
  least recently used entries (file modification time, refreshed on every
  hit) are deleted down to 90% of the limit, so one write over the limit does
  not trigger a full scan each time.

:class:`GraphCache` puts the three together: memory, then disk, then one
batched build of whatever is still missing. ``ROOT/stats.json`` keeps the hit
counts of the last run that saved them (``tgatunet cache info``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
import zlib
from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tgatunet.graph.knn import KnnGraph
from tgatunet.rundir import RunDir, atomic_write_text

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ENTRY_SUFFIX = ".nbr"
STATS_FILE = "stats.json"
_MAGIC = b"TGNB"
# magic, format version, bytes per index, T, K, key, CRC32 of the payload
_HEADER = struct.Struct("<4sHHII16sI")
_EVICT_TO = 0.9
_INT16_MAX = 32767  # step indices up to this fit in int16

# One window's table as stored: index [T, K] int16 (int32 for T > 32767) and valid [T, K] bool,
# read-only views of the entry's bytes, so a hit copies nothing until the batch is stacked.
Graph = tuple[np.ndarray, np.ndarray]


class CorruptEntry(Exception):
    """A cache file that is not a whole, matching entry."""


@functools.lru_cache(maxsize=64)
def _key_prefix(version: int, signature: str, T: int, C: int) -> bytes:
    return f"tgatunet-graph/v{version}/{signature}/T={T}/C={C}".encode()


def window_keys(signature: str, values: torch.Tensor, visible: torch.Tensor) -> list[bytes]:
    """16-byte content keys of ``[B, T, C]`` windows: version, signature, shape, visible values and mask."""
    B, T, C = values.shape
    prefix = _key_prefix(FORMAT_VERSION, signature, T, C)
    m = np.ascontiguousarray(visible.numpy(force=True))
    # +0.0 where hidden, so a hidden value, even -0.0, never changes the key.
    x = np.where(m, values.numpy(force=True).astype(np.float32, copy=False), np.float32(0.0))
    keys = []
    for b in range(B):
        h = hashlib.blake2b(prefix, digest_size=16)
        h.update(x[b])
        h.update(m[b])
        keys.append(h.digest())
    return keys


def encode_entry(key: bytes, index: np.ndarray, valid: np.ndarray) -> bytes:
    """One window's table ``[T, K]`` as file bytes: header, index (int16 when it fits), valid (one byte each)."""
    T, K = index.shape
    dtype = np.int16 if T <= _INT16_MAX else np.int32
    payload = np.asarray(index).astype(dtype).tobytes() + np.asarray(valid, dtype=np.bool_).tobytes()
    return _HEADER.pack(_MAGIC, FORMAT_VERSION, np.dtype(dtype).itemsize, T, K, key, zlib.crc32(payload)) + payload


def entry_size(T: int, K: int) -> int:
    """Bytes of the entry of a ``[T, K]`` table."""
    width = 2 if T <= _INT16_MAX else 4
    return _HEADER.size + T * K * (width + 1)


def _entry_arrays(data: bytes, width: int, T: int, K: int) -> Graph:
    index = np.frombuffer(data, np.int16 if width == 2 else np.int32, T * K, _HEADER.size).reshape(T, K)
    valid = np.frombuffer(data, np.bool_, T * K, _HEADER.size + T * K * width).reshape(T, K)
    return index, valid


def decode_entry(key: bytes, data: bytes) -> Graph:
    """Inverse of :func:`encode_entry`; raises :class:`CorruptEntry` unless ``data`` is a whole entry for ``key``."""
    if len(data) < _HEADER.size:
        raise CorruptEntry(f"truncated ({len(data)} bytes)")
    magic, version, width, T, K, stored_key, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != FORMAT_VERSION or width not in (2, 4) or stored_key != key:
        raise CorruptEntry("header does not match")
    if len(data) != _HEADER.size + T * K * (width + 1):
        raise CorruptEntry(f"wrong length ({len(data)} bytes, expected {_HEADER.size + T * K * (width + 1)})")
    if zlib.crc32(memoryview(data)[_HEADER.size :]) != crc:
        raise CorruptEntry("checksum mismatch")
    return _entry_arrays(data, width, T, K)


def _nbytes(graph: Graph) -> int:
    return graph[0].nbytes + graph[1].nbytes


class MemoryLRU:
    """Graphs by key, least recently used first out once they hold more than ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[bytes, Graph] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: bytes) -> bool:
        return key in self._items

    def get(self, key: bytes) -> Graph | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: bytes, item: Graph) -> int:
        """Store ``item``; returns the number of entries evicted to make room."""
        size = _nbytes(item)
        if size > self.max_bytes:
            return 0
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= _nbytes(old)
        self._items[key] = item
        self.bytes += size
        evicted = 0
        while self.bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.bytes -= _nbytes(dropped)
            evicted += 1
        return evicted


@dataclass(frozen=True)
class DiskEntry:
    """One entry file as a scan found it."""

    path: Path
    size: int
    mtime: float


class DiskGraphStore:
    """Graph files under ``root/entries/<first 2 hex>/<32 hex>.nbr``, limited to ``max_bytes`` (None: no limit)."""

    def __init__(self, root: Path | str, max_bytes: int | None) -> None:
        self.root = Path(root)
        self.entries = self.root / "entries"
        self._entries = str(self.entries)  # plain strings: pathlib costs more than the read on a hit
        self.max_bytes = max_bytes
        self._bytes: int | None = None  # running estimate, from a scan at the first write
        self._write_error_reported = False

    def path(self, key: bytes) -> str:
        name = key.hex()
        return os.path.join(self._entries, name[:2], name + ENTRY_SUFFIX)

    def read(self, key: bytes, size: int) -> Graph | None:
        """The entry of ``key`` (``size`` bytes when whole), None if absent; :class:`CorruptEntry` if damaged."""
        # Plain descriptors: on a hit, buffered file objects and path lookups cost more than the read.
        try:
            fd = os.open(self.path(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            raise CorruptEntry(f"unreadable: {err}") from None
        try:
            data = os.read(fd, size + 1)  # one byte more: a longer file is damaged too
            # Recency for eviction, best effort (a read-only disk keeps the old time).
            with contextlib.suppress(OSError):
                os.utime(fd)
        except OSError as err:
            raise CorruptEntry(f"unreadable: {err}") from None
        finally:
            os.close(fd)
        return decode_entry(key, data)

    def write(self, key: bytes, data: bytes) -> int:
        """Write an encoded entry atomically; returns the entries evicted for room. Failures are logged, not raised."""
        path = self.path(key)
        folder = os.path.dirname(path)
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key.hex()}.", suffix=".tmp", dir=folder)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as err:
            # The cache only saves time: a full or read-only disk must not stop a run.
            if not self._write_error_reported:
                log.warning("cannot write to the graph cache '%s' (%s); graphs are rebuilt instead.", self.root, err)
                self._write_error_reported = True
            return 0
        if self.max_bytes is None:
            return 0
        if self._bytes is None:
            self._bytes = sum(e.size for e in self.scan())
        else:
            self._bytes += len(data)
        return self.enforce_limit() if self._bytes > self.max_bytes else 0

    def scan(self) -> list[DiskEntry]:
        """Every entry file (temporary files excluded)."""
        found = []
        if not self.entries.is_dir():
            return found
        # Other processes may delete files and folders while this one looks: skip what vanished.
        for folder in os.scandir(self.entries):
            if not folder.is_dir():
                continue
            with contextlib.suppress(FileNotFoundError):
                for item in os.scandir(folder.path):
                    if item.name.endswith(ENTRY_SUFFIX) and not item.name.startswith("."):
                        with contextlib.suppress(FileNotFoundError):
                            st = item.stat()
                            found.append(DiskEntry(Path(item.path), st.st_size, st.st_mtime))
        return found

    def enforce_limit(self) -> int:
        """Delete least recently used entries until at most 90% of ``max_bytes`` remain; returns how many."""
        entries = self.scan()
        total = sum(e.size for e in entries)
        evicted = 0
        if self.max_bytes is not None and total > self.max_bytes:
            target = _EVICT_TO * self.max_bytes
            for entry in sorted(entries, key=lambda e: e.mtime):
                if total <= target:
                    break
                entry.path.unlink(missing_ok=True)
                total -= entry.size
                evicted += 1
        self._bytes = total
        return evicted


@dataclass
class CacheStats:
    """Lookups of one :class:`GraphCache`, by where each graph came from."""

    memory_hits: int = 0
    disk_hits: int = 0
    built: int = 0
    corrupt_rebuilt: int = 0
    evicted: int = 0

    @property
    def lookups(self) -> int:
        return self.memory_hits + self.disk_hits + self.built

    @property
    def hit_rate(self) -> float:
        return (self.memory_hits + self.disk_hits) / self.lookups if self.lookups else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lookups": self.lookups, "hit_rate": round(self.hit_rate, 4)}

    def add(self, other: CacheStats) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


class GraphCache:
    """Graphs of windows by content: memory LRU, then disk, then one batched build of the rest.

    Args:
        graph: the builder whose graphs are cached.
        directory: the disk cache's folder.
        max_disk_bytes: disk limit (None: this instance never evicts, e.g. a worker whose parent does).
        max_memory_bytes: in-process LRU limit (0: no memory level).

    Cost per window looked up: a BLAKE2b hash of its ``T * C * 5`` bytes (values and mask);
    then a dictionary lookup, or one file read of ``entry_size(T, K)`` bytes (about
    ``3 * T * K``) with a CRC32 check; misses are built together in one batched call.
    Memory: up to ``max_memory_bytes`` of tables, ``3 * T * K`` bytes each.
    """

    def __init__(self, graph: KnnGraph, directory: Path | str, max_disk_bytes: int | None, max_memory_bytes: int) -> None:
        self.graph = graph
        self.directory = Path(directory)
        self.memory = MemoryLRU(max_memory_bytes)
        self.disk = DiskGraphStore(self.directory, max_disk_bytes)
        self.stats = CacheStats()

    def get(self, values: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Neighbour tables ``index, valid [B, T, K]`` of ``values, visible [B, T, C]``, on ``values``' device."""
        keys = window_keys(self.graph.signature, values, visible)
        size = entry_size(values.shape[1], self.graph.degree)
        found: list[Graph | None] = [self._lookup(key, size) for key in keys]
        missing = [b for b, item in enumerate(found) if item is None]
        if missing:
            index, valid = self.graph.build(values[missing], visible[missing])
            index, valid = index.cpu().numpy(), valid.cpu().numpy()
            for j, b in enumerate(missing):
                data = encode_entry(keys[b], index[j], valid[j])
                self.stats.evicted += self.disk.write(keys[b], data)
                found[b] = decode_entry(keys[b], data)
                self.memory.put(keys[b], found[b])
            self.stats.built += len(missing)
        # np.array stacks equal-shaped arrays in C, without np.stack's Python-level checks.
        index = torch.from_numpy(np.array([item[0] for item in found], dtype=np.int64))
        valid = torch.from_numpy(np.array([item[1] for item in found]))
        if values.device.type == "cpu":
            return index, valid
        return index.to(values.device), valid.to(values.device)

    def _lookup(self, key: bytes, size: int) -> Graph | None:
        item = self.memory.get(key)
        if item is not None:
            self.stats.memory_hits += 1
            return item
        try:
            item = self.disk.read(key, size)
        except CorruptEntry as err:
            log.warning("graph cache entry '%s' is damaged (%s); rebuilding it.", self.disk.path(key), err)
            self.stats.corrupt_rebuilt += 1
            return None
        if item is not None:
            self.stats.disk_hits += 1
            self.memory.put(key, item)
        return item

    def save_stats(self, by: str) -> None:
        """Record this instance's counts as the last run's, in ``stats.json``."""
        write_stats(self.directory, by, self.stats)


def write_stats(directory: Path, by: str, stats: CacheStats) -> None:
    """Write ``stats`` as the last run's hit counts (``by``: what ran, e.g. train or build)."""
    record = {"by": by, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), **stats.to_dict()}
    atomic_write_text(Path(directory) / STATS_FILE, json.dumps(record, indent=1))


def cache_dir(config, run_root: Path) -> Path:
    """Where a run's knn graphs live: ``graph_cache_dir``, or ``RUN_DIR/graph_cache``."""
    return Path(config.graph_cache_dir) if config.graph_cache_dir else RunDir(Path(run_root)).graph_cache


def open_graph_cache(config, run_root: Path) -> GraphCache | None:
    """The run's graph cache; None when the config builds no data-dependent graph or disables the cache."""
    if config.graph_type != "knn" or not config.use_graph_cache:
        return None
    return GraphCache(
        KnnGraph.from_config(config),
        cache_dir(config, run_root),
        max_disk_bytes=int(config.graph_cache_max_mb * 2**20),
        max_memory_bytes=int(config.graph_memory_cache_mb * 2**20),
    )


def cache_summary(directory: Path | str) -> dict[str, Any]:
    """Location, entries, bytes and the last run's hit counts of a cache folder."""
    directory = Path(directory)
    entries = DiskGraphStore(directory, None).scan()
    stats_path = directory / STATS_FILE
    last = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.is_file() else None
    return {
        "location": str(directory.resolve()),
        "exists": directory.is_dir(),
        "entries": len(entries),
        "bytes": sum(e.size for e in entries),
        "last_run": last,
    }


def clear_cache(directory: Path | str) -> tuple[int, int]:
    """Delete every entry (and leftover temporary file) and the stats; returns (entries, bytes) removed."""
    directory = Path(directory)
    entries = DiskGraphStore(directory, None).scan()
    shutil.rmtree(directory / "entries", ignore_errors=True)
    (directory / STATS_FILE).unlink(missing_ok=True)
    return len(entries), sum(e.size for e in entries)
