"""The out-of-core data store: the sources converted once into arrays on disk.

``tgatunet data prepare`` reads each source file once, one at a time, and
writes its rows as plain ``.npy`` arrays next to a manifest::

    STORE/
      manifest.json             format version, channels, classes, and per source: the
                                source file's SHA-256, the segments, and each array's
                                file, shape, dtype and SHA-256
      source_000/values.npy     [N, C] float32 raw values (not normalised), NaN = not observed
      source_000/observed.npy   [N, C] bool observation mask
      source_000/labels.npy     [N] int64 class index of each row, -1 = no label
      source_000/segments.npy   [S, 2] int64 [start, end) rows of each contiguous block segment
      source_001/...

Rows are read by positioned reads, not mapped (:mod:`tgatunet.data.store_format`).

:func:`open_store` validates a store before any row is read: the manifest's schema, the config it was prepared for, the
content hash of every source file (a store whose sources changed is stale and refused, naming the file), and the header,
size and hash of every array.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from tgatunet.config import Config
from tgatunet.data.sources import grid_rate, load_source, order_classes, source_path, source_timing
from tgatunet.data.store_format import ARRAYS, FORMAT_VERSION, MANIFEST, SCHEMA, ArrayEntry, ArrayFile, DataStore, Manifest, SourceEntry, StoreSource
from tgatunet.errors import DataError
from tgatunet.files import output_lock, replace_dir, sha256_file

log = logging.getLogger(__name__)


def _rebuild_hint(root: Path) -> str:
    return f"Rebuild it: tgatunet data prepare --config YOUR_CONFIG --out {root}"


def _effective_columns(config: Config, index: int, grid_hz: float | None) -> dict[str, str | float | None]:
    src = config.data.sources[index]
    timing = source_timing(config, src)
    return {"label_col": src.label_col or config.data.label_col, "block_col": src.block_col or config.data.block_col,
            "split_col": config.data.split_col, "time_col": timing.time_col, "rate_hz": timing.rate_hz, "max_gap_s": timing.max_gap_s,
            "grid_hz": grid_hz if timing.timed else None}


# --- writing ------------------------------------------------------------------------------


def _write_source(config: Config, index: int, folder: Path, grid_hz: float | None) -> tuple[SourceEntry, np.ndarray]:
    """Write one source's arrays to ``folder``; labels are coded per source for now.

    Returns its manifest entry (array hashes still empty) and its distinct raw labels,
    in the order of their per-source codes.
    """
    src = config.data.sources[index]
    path = source_path(config, src)
    if not path.is_file():
        raise DataError(f"source '{src.name}': file '{path}' not found. Check 'path' in the config.")
    # Hashed before reading: if the file changes meanwhile, the next open finds it stale.
    source_hash = sha256_file(path)
    table = load_source(config, src, grid_hz)
    codes, uniques = pd.factorize(table.labels)  # None (no label) -> -1
    folder.mkdir(parents=True)
    arrays = {"values": table.values, "observed": ~np.isnan(table.values), "labels": codes.astype(np.int64),
              "segments": table.segment_bounds.astype(np.int64)}
    entries = {}
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
        entries[name] = ArrayEntry(file=f"{folder.name}/{name}.npy", shape=list(array.shape), dtype=array.dtype.str, sha256="")
    entry = SourceEntry(name=src.name, path=str(path.resolve()), sha256=source_hash, have=src.have, need=src.need,
                        **_effective_columns(config, index, grid_hz), rows=len(table.values), segment_blocks=[str(b) for b in table.segment_blocks],
                        block_split=table.block_split, arrays=entries)
    return entry, np.asarray(uniques, dtype=object)


def _recode_labels(path: Path, mapping: np.ndarray, chunk: int = 1 << 20) -> None:
    """Replace per-source label codes by class indices in place (``mapping[-1]`` is -1)."""
    labels = np.load(path, mmap_mode="r+")
    for lo in range(0, len(labels), chunk):
        labels[lo : lo + chunk] = mapping[labels[lo : lo + chunk]]
    labels.flush()
    del labels


def _write_store(config: Config, root: Path) -> Manifest:
    entries, uniques = [], []
    grid_hz = grid_rate(config)
    for i in range(len(config.data.sources)):
        entry, labels = _write_source(config, i, root / f"source_{i:03d}", grid_hz)
        entries.append(entry)
        uniques.append(labels)
        log.info("stored source '%s': %d rows", entry.name, entry.rows)
    class_names, index = order_classes({v for u in uniques for v in u})
    for entry, labels in zip(entries, uniques):
        mapping = np.array([index[v] for v in labels] + [-1], dtype=np.int64)
        _recode_labels(root / entry.arrays["labels"].file, mapping)
        for array in entry.arrays.values():
            array.sha256 = sha256_file(root / array.file)
    manifest = Manifest(schema_name=SCHEMA, format_version=FORMAT_VERSION, channels=config.channels, class_names=class_names, sources=entries)
    (root / MANIFEST).write_text(manifest.model_dump_json(indent=1), encoding="utf-8")
    return manifest


def build_store(config: Config, out: str | Path, force: bool = False) -> tuple[DataStore, bool]:
    """Convert the sources of ``config`` into a store at ``out``; returns the opened store and whether it was (re)built.

    An up-to-date store already at ``out`` is kept unless ``force``; a stale or damaged one is replaced. The new
    store is written beside ``out`` and moved in place at the end, so an interrupted build never leaves a
    half-written store; a second process building ``out`` meanwhile is refused (:func:`output_lock`).
    """
    out = Path(out)
    with output_lock(out):
        if (out / MANIFEST).is_file():
            if not force:
                try:
                    return open_store(config, out), False
                except DataError as err:
                    log.warning("rebuilding the store: %s", err)
        elif out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise DataError(f"'{out}' exists and is not a tgatunet store (no {MANIFEST}); give a new or empty folder.")
        manifest = replace_dir(out, lambda building: _write_store(config, building))
    return _open_arrays(out, manifest), True


# --- opening and validating ------------------------------------------------------------------


def _read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST
    if not root.is_dir():
        raise DataError(f"data_store '{root}' does not exist. Create it: tgatunet data prepare --config YOUR_CONFIG --out {root}")
    if not path.is_file():
        raise DataError(f"data_store '{root}' is not a tgatunet store: '{MANIFEST}' is missing. {_rebuild_hint(root)}")
    try:
        manifest = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'the file'}: {e['msg']}" for e in err.errors()[:3])
        raise DataError(f"store manifest '{path}' is damaged ({problems}). {_rebuild_hint(root)}") from None
    if manifest.schema_name != SCHEMA or manifest.format_version != FORMAT_VERSION:
        raise DataError(f"store manifest '{path}' has format {manifest.schema_name!r} version {manifest.format_version}; "
                        f"this tgatunet reads {SCHEMA!r} version {FORMAT_VERSION}. {_rebuild_hint(root)}")
    return manifest


def _check_config(root: Path, manifest: Manifest, config: Config) -> None:
    """The store must have been prepared for this config's sources, channels and columns."""

    def differs(what: str, stored, configured) -> DataError:
        return DataError(f"data_store '{root}' was prepared for another config: {what} is {stored!r} in the store "
                         f"but {configured!r} in the config. {_rebuild_hint(root)}")

    if manifest.channels != config.channels:
        raise differs("the channel list", manifest.channels, config.channels)
    names = [s.name for s in config.data.sources]
    if [s.name for s in manifest.sources] != names:
        raise differs("the source list", [s.name for s in manifest.sources], names)
    grid_hz = grid_rate(config)
    for i, (entry, src) in enumerate(zip(manifest.sources, config.data.sources)):
        configured = {"have": src.have, "need": src.need, **_effective_columns(config, i, grid_hz)}
        for key, value in configured.items():
            if getattr(entry, key) != value:
                raise differs(f"source '{src.name}' {key}", getattr(entry, key), value)


def _check_sources_fresh(root: Path, manifest: Manifest, config: Config) -> None:
    """Every source file must still hold the content the store was made from."""
    for entry, src in zip(manifest.sources, config.data.sources):
        path = source_path(config, src)
        if not path.is_file():
            raise DataError(f"source '{src.name}': file '{path}' not found (the store '{root}' was made from it).")
        if sha256_file(path) != entry.sha256:
            raise DataError(f"data_store '{root}' is stale: source '{src.name}' file '{path}' changed since the store was "
                            f"prepared (its content hash differs). {_rebuild_hint(root)}")


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of an ``.npy`` file."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            shape, fortran, dtype = readers[version](handle)
        except (ValueError, KeyError) as err:
            raise DataError(f"store array '{path}' is not a valid .npy file ({err}).") from None
        if fortran:
            raise DataError(f"store array '{path}' is in Fortran order; the store writes C order.")
        return tuple(shape), dtype, handle.tell()


def _expected_shapes(entry: SourceEntry, channels: int) -> dict[str, tuple[list[int], str]]:
    rows, segments = entry.rows, len(entry.segment_blocks)
    return {
        "values": ([rows, channels], np.dtype(np.float32).str),
        "observed": ([rows, channels], np.dtype(np.bool_).str),
        "labels": ([rows], np.dtype(np.int64).str),
        "segments": ([segments, 2], np.dtype(np.int64).str),
    }


def _open_arrays(root: Path, manifest: Manifest, verify_hashes: bool = False) -> DataStore:
    """Check every array against the manifest (shape, dtype, size, optionally hash) and open it."""
    sources = []
    for entry in manifest.sources:
        if sorted(entry.arrays) != sorted(ARRAYS):
            raise DataError(f"store manifest '{root / MANIFEST}': source '{entry.name}' lists arrays {sorted(entry.arrays)}, "
                            f"expected {sorted(ARRAYS)}. {_rebuild_hint(root)}")
        arrays = {}
        for name, (shape, dtype) in _expected_shapes(entry, len(manifest.channels)).items():
            item = entry.arrays[name]
            path = root / item.file
            if (item.shape, item.dtype) != (shape, dtype):
                raise DataError(f"store manifest '{root / MANIFEST}': array '{item.file}' is {item.dtype} {item.shape}, but source "
                                f"'{entry.name}' with {entry.rows} rows needs {dtype} {shape}. {_rebuild_hint(root)}")
            if not path.is_file():
                raise DataError(f"store array '{path}' is missing. {_rebuild_hint(root)}")
            file_shape, file_dtype, offset = _npy_header(path)
            expected_bytes = offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if list(file_shape) != shape or file_dtype.str != dtype or path.stat().st_size != expected_bytes:
                raise DataError(f"store array '{path}' holds {file_dtype} {list(file_shape)} in {path.stat().st_size} bytes; "
                                f"the manifest says {dtype} {shape} ({expected_bytes} bytes). {_rebuild_hint(root)}")
            if verify_hashes and sha256_file(path) != item.sha256:
                raise DataError(f"store array '{path}' does not match its hash in the manifest (damaged). {_rebuild_hint(root)}")
            arrays[name] = ArrayFile(path, tuple(shape), np.dtype(dtype), offset)
        segments = np.load(arrays["segments"].path)
        if len(segments) and (segments.min() < 0 or segments.max() > entry.rows or (segments[:, 1] <= segments[:, 0]).any()):
            raise DataError(f"store array '{arrays['segments'].path}' holds segments outside the source's rows. {_rebuild_hint(root)}")
        sources.append(StoreSource(entry.name, entry.rows, entry.segment_blocks, entry.block_split, arrays))
    return DataStore(root, manifest.channels, manifest.class_names, sources)


def open_store(config: Config, path: str | Path | None = None) -> DataStore:
    """Open and validate the store at ``path`` (default: the config's ``data_store``) for ``config``.

    Raises :class:`DataError` when the store is missing, damaged, prepared for another config, or stale.
    """
    root = Path(path) if path is not None else config.data_store_path()
    if root is None:
        raise DataError("no data_store is configured; set data_store in the config or pass a store folder.")
    manifest = _read_manifest(root)
    _check_config(root, manifest, config)
    _check_sources_fresh(root, manifest, config)
    return _open_arrays(root, manifest, verify_hashes=True)
