"""The graph cache: knn graphs of windows seen before, on disk.

A knn graph depends on the window's data; a trained run that evaluates, completes or predicts the same windows again
(or after ``tgatunet cache build``) reads their graphs back instead of rebuilding them. The temporal graph is never
cached, and training, which hides fresh values every step, does not use the cache.

* **key**: a 128-bit BLAKE2b hash of the format version, the builder's signature (``graph_knn``, ``time_k``), the
  window's shape and the bytes of what the graph is built from, the visible values (zero elsewhere) and the visibility
  mask. Changing any parameter or visible value gives another key, so a stale entry is never read; it ages out through
  the size limit.
* **entry**: one small binary file per window under ``ROOT/entries/``, written to a temporary name and renamed, so a
  reader sees a whole entry or none, whichever process wrote it. It carries its key and a CRC32 of its payload: a
  damaged entry is reported once and rebuilt, never fatal.
* **limit**: beyond ``graph_cache_max_mb`` the least recently used entries (file modification time, refreshed on every
  hit) are deleted down to 90% of the limit.

``ROOT/stats.json`` keeps the hit counts of the last run that saved them (``tgatunet cache info``); the marker
``ROOT/.tgatunet-graph-cache`` lets ``tgatunet cache clear`` delete the files the cache wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import zlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tgatunet.errors import RunError
from tgatunet.files import atomic_write, atomic_write_text
from tgatunet.graph.knn import KnnGraph

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ENTRY_SUFFIX = ".nbr"
STATS_FILE = "stats.json"
MARKER = ".tgatunet-graph-cache"
# An entry and the temporary files it is written through (:class:`~tgatunet.files.AtomicFile`, or older ones).
_OWN_FILE = re.compile(r"[0-9a-f]{32}\.nbr|\.[0-9a-f]{32}\..*\.tmp")
_MAGIC = b"TGNB"
# magic, format version, bytes per index, T, K, key, CRC32 of the payload
_HEADER = struct.Struct("<4sHHII16sI")
_EVICT_TO = 0.9

# One window's table as stored: index [T, K] (int16, or int32 for T > 32767) and valid [T, K] bool.
Graph = tuple[np.ndarray, np.ndarray]


class CorruptEntry(Exception):
    """A cache file that is not a whole, matching entry."""


def window_keys(signature: str, values: torch.Tensor, visible: torch.Tensor) -> list[bytes]:
    """16-byte content keys of ``[B, T, C]`` windows: version, signature, shape, visible values and mask."""
    B, T, C = values.shape
    prefix = f"tgatunet-graph/v{FORMAT_VERSION}/{signature}/T={T}/C={C}".encode()
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


def _width(T: int) -> int:
    return 2 if T <= np.iinfo(np.int16).max else 4


def encode_entry(key: bytes, index: np.ndarray, valid: np.ndarray) -> bytes:
    """One window's table ``[T, K]`` as file bytes: header, index (int16 when it fits), valid (one byte each)."""
    T, K = index.shape
    width = _width(T)
    payload = np.asarray(index).astype(np.int16 if width == 2 else np.int32).tobytes() + np.asarray(valid, np.bool_).tobytes()
    return _HEADER.pack(_MAGIC, FORMAT_VERSION, width, T, K, key, zlib.crc32(payload)) + payload


def entry_size(T: int, K: int) -> int:
    """Bytes of the entry of a ``[T, K]`` table."""
    return _HEADER.size + T * K * (_width(T) + 1)


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
    index = np.frombuffer(data, np.int16 if width == 2 else np.int32, T * K, _HEADER.size).reshape(T, K)
    valid = np.frombuffer(data, np.bool_, T * K, _HEADER.size + T * K * width).reshape(T, K)
    return index, valid


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
        self.max_bytes = max_bytes
        self._bytes: int | None = None  # running estimate, from a scan at the first write
        self._write_error_reported = False
        self._marked = False

    def path(self, key: bytes) -> str:
        name = key.hex()
        return os.path.join(self.entries, name[:2], name + ENTRY_SUFFIX)

    def read(self, key: bytes, size: int) -> Graph | None:
        """The entry of ``key`` (``size`` bytes when whole), None if absent; :class:`CorruptEntry` if damaged."""
        try:
            with open(self.path(key), "rb") as handle:
                data = handle.read(size + 1)  # one byte more: a longer file is damaged too
                with contextlib.suppress(OSError):  # recency for eviction, best effort
                    os.utime(handle.fileno())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            raise CorruptEntry(f"unreadable: {err}") from None
        return decode_entry(key, data)

    def write(self, key: bytes, data: bytes) -> int:
        """Write an encoded entry atomically; returns the entries evicted for room. Failures are logged, not raised."""
        try:
            if not self._marked:
                mark_cache(self.root)
                self._marked = True
            atomic_write(self.path(key), lambda handle: handle.write(data), sync=False)
        except OSError as err:
            # The cache only saves time: a full or read-only disk must not stop a run.
            if not self._write_error_reported:
                log.warning("cannot write to the graph cache '%s' (%s); graphs are rebuilt instead.", self.root, err)
                self._write_error_reported = True
            return 0
        if self.max_bytes is None:
            return 0
        self._bytes = sum(e.size for e in self.scan()) if self._bytes is None else self._bytes + len(data)
        return self.enforce_limit() if self._bytes > self.max_bytes else 0

    def scan(self) -> list[DiskEntry]:
        """Every entry file (temporary files excluded); files other processes delete meanwhile are skipped."""
        found = []
        for path in self.entries.glob(f"*/*{ENTRY_SUFFIX}") if self.entries.is_dir() else []:
            if not path.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    st = path.stat()
                    found.append(DiskEntry(path, st.st_size, st.st_mtime))
        return found

    def enforce_limit(self) -> int:
        """Delete least recently used entries until at most 90% of ``max_bytes`` remain; returns how many."""
        entries = self.scan()
        total = sum(e.size for e in entries)
        evicted = 0
        if self.max_bytes is not None and total > self.max_bytes:
            for entry in sorted(entries, key=lambda e: e.mtime):
                if total <= _EVICT_TO * self.max_bytes:
                    break
                entry.path.unlink(missing_ok=True)
                total -= entry.size
                evicted += 1
        self._bytes = total
        return evicted


@dataclass
class CacheStats:
    """Lookups of one :class:`GraphCache`, by where each graph came from."""

    disk_hits: int = 0
    built: int = 0
    corrupt_rebuilt: int = 0
    evicted: int = 0

    @property
    def lookups(self) -> int:
        return self.disk_hits + self.built

    def to_dict(self) -> dict[str, Any]:
        hit_rate = self.disk_hits / self.lookups if self.lookups else 0.0
        return {**asdict(self), "lookups": self.lookups, "hit_rate": round(hit_rate, 4)}

    def add(self, other: CacheStats) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


class GraphCache:
    """Graphs of ``graph``'s builder by window content: read from ``directory``, and one batched build of the rest.

    ``max_disk_bytes``: size limit (None: this instance never evicts, e.g. a worker whose parent does).
    """

    def __init__(self, graph: KnnGraph, directory: Path | str, max_disk_bytes: int | None) -> None:
        self.graph = graph
        self.directory = Path(directory)
        self.disk = DiskGraphStore(self.directory, max_disk_bytes)
        self.stats = CacheStats()

    def get(self, values: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Neighbour tables ``index, valid [B, T, K]`` of ``values, visible [B, T, C]``, on ``values``' device."""
        keys = window_keys(self.graph.signature, values, visible)
        size = entry_size(values.shape[1], self.graph.degree)
        found: list[Graph | None] = [self._read(key, size) for key in keys]
        missing = [b for b, item in enumerate(found) if item is None]
        if missing:
            index, valid = (t.cpu().numpy() for t in self.graph.build(values[missing], visible[missing]))
            for j, b in enumerate(missing):
                self.stats.evicted += self.disk.write(keys[b], encode_entry(keys[b], index[j], valid[j]))
                found[b] = (index[j], valid[j])
            self.stats.built += len(missing)
        index = torch.from_numpy(np.array([item[0] for item in found], dtype=np.int64))
        valid = torch.from_numpy(np.array([item[1] for item in found]))
        return index.to(values.device), valid.to(values.device)

    def _read(self, key: bytes, size: int) -> Graph | None:
        try:
            item = self.disk.read(key, size)
        except CorruptEntry as err:
            log.warning("graph cache entry '%s' is damaged (%s); rebuilding it.", self.disk.path(key), err)
            self.stats.corrupt_rebuilt += 1
            return None
        self.stats.disk_hits += item is not None
        return item

    def save_stats(self, by: str) -> None:
        """Record this instance's counts as the last run's, in ``stats.json``."""
        write_stats(self.directory, by, self.stats)


def write_stats(directory: Path, by: str, stats: CacheStats) -> None:
    """Write ``stats`` as the last run's hit counts (``by``: what ran, e.g. evaluate or build)."""
    record = {"by": by, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), **stats.to_dict()}
    mark_cache(directory)
    atomic_write_text(Path(directory) / STATS_FILE, json.dumps(record, indent=1))


def cache_dir(config, run_root: Path) -> Path:
    """Where a run's knn graphs live: ``graph_cache_dir``, or ``RUN_DIR/graph_cache``."""
    configured = config.performance.graph_cache_dir
    return Path(configured) if configured else Path(run_root) / "graph_cache"


def open_graph_cache(config, run_root: Path) -> GraphCache | None:
    """The run's graph cache; None when the config builds no data-dependent graph or disables the cache."""
    if config.model.graph_type != "knn" or not config.performance.use_graph_cache:
        return None
    max_bytes = int(config.performance.graph_cache_max_mb * 2**20)
    return GraphCache(KnnGraph.from_config(config), cache_dir(config, run_root), max_bytes)


def cache_summary(directory: Path | str) -> dict[str, Any]:
    """Location, entries, bytes and the last run's hit counts of a cache folder."""
    directory = Path(directory)
    entries = DiskGraphStore(directory, None).scan()
    return {"location": str(directory.resolve()), "exists": directory.is_dir(), "entries": len(entries),
            "bytes": sum(e.size for e in entries), "last_run": _last_run(directory)}


def mark_cache(directory: Path) -> None:
    """Mark ``directory`` as a graph cache (:data:`MARKER`), so that :func:`clear_cache` knows it may clear it."""
    marker = Path(directory) / MARKER
    if not marker.is_file():
        atomic_write_text(marker, json.dumps({"tgatunet": "graph cache"}))


def _last_run(directory: Path) -> dict[str, Any] | None:
    """The counts :func:`write_stats` wrote; None when ``stats.json`` is absent, damaged or not the cache's."""
    with contextlib.suppress(OSError, ValueError):
        stats = json.loads((directory / STATS_FILE).read_text(encoding="utf-8"))
        if isinstance(stats, dict) and {"by", "finished", *CacheStats().to_dict()} <= stats.keys():
            return stats
    return None


def _is_cache(directory: Path) -> bool:
    """Marked, or a cache made before the marker: it holds entries or the cache's ``stats.json``."""
    return (directory / MARKER).is_file() or bool(DiskGraphStore(directory, None).scan()) or _last_run(directory) is not None


def clear_cache(directory: Path | str) -> tuple[int, int]:
    """Delete the cache's entries, its leftover temporary files and its stats; returns (entries, bytes) removed.

    Only files named as the cache names them are deleted (``entries/ab/<32 hex>.nbr``, their
    temporary files, ``stats.json``), and only in a folder that is a graph cache: anything
    else in it stays. A folder that is not one is refused (:class:`RunError`), nothing deleted.
    """
    directory = Path(directory)
    if not directory.exists():
        return 0, 0
    if not _is_cache(directory):
        raise RunError(f"'{directory}' is not a tgatunet graph cache (no {MARKER}, no cache entries): nothing was deleted. "
                       "Check the folder given with --dir, or the config's graph_cache_dir.")
    entries = DiskGraphStore(directory, None).scan()
    for folder in (directory / "entries").glob("[0-9a-f][0-9a-f]"):
        for path in folder.iterdir():
            if _OWN_FILE.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # kept when it holds a file the cache did not write
            folder.rmdir()
    with contextlib.suppress(OSError):
        (directory / "entries").rmdir()
    if _last_run(directory) is not None:
        (directory / STATS_FILE).unlink()
    return len(entries), sum(e.size for e in entries)
