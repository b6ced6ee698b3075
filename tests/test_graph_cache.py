"""The graph cache: keys, disk entries, damage, concurrent writers, size limits."""

import logging
import multiprocessing
import os
import time

import numpy as np
import pytest
import torch
from conftest import assert_equally_near_neighbours

from tgatunet.graph import cache as cache_module
from tgatunet.graph.cache import (
    DiskGraphStore,
    GraphCache,
    cache_summary,
    clear_cache,
    decode_entry,
    encode_entry,
    entry_size,
    window_keys,
)
from tgatunet.graph.knn import KnnGraph
from tgatunet.graph.temporal import temporal_neighbors

MiB = 2**20


def _windows(B=6, T=20, C=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, C, generator=gen), torch.rand(B, T, C, generator=gen) < 0.85


def _cache(path, graph=None, disk=MiB):
    return GraphCache(graph or KnnGraph(3, 1), path, max_disk_bytes=disk)


def _entry_files(path):
    return sorted(e.path for e in DiskGraphStore(path, None).scan())


def test_a_cached_graph_equals_a_fresh_one(tmp_path):
    values, visible = _windows()
    fresh = KnnGraph(3, 1).build(values, visible)
    first = _cache(tmp_path)
    built = first.get(values, visible)
    from_disk = first.get(values, visible)
    in_another_process = _cache(tmp_path).get(values, visible)
    for got in (built, from_disk, in_another_process):
        assert torch.equal(got[0], fresh[0]) and torch.equal(got[1], fresh[1])
    assert first.stats.built == 6 and first.stats.disk_hits == 6
    assert len(_entry_files(tmp_path)) == 6


def test_a_batch_mixing_hits_and_misses_keeps_its_order(tmp_path):
    values, visible = _windows(B=8)
    cache = _cache(tmp_path)
    cache.get(values[[1, 4, 6]], visible[[1, 4, 6]])
    got = cache.get(values, visible)
    want = KnnGraph(3, 1).build(values, visible)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert cache.stats.disk_hits == 3 and cache.stats.built == 8


def _key(graph=KnnGraph(3, 1), values=None, visible=None):
    v, m = _windows(B=1)
    return window_keys(graph.signature, v if values is None else values, m if visible is None else visible)[0]


def test_every_key_part_invalidates_the_entry(monkeypatch):
    base = _key()
    values, visible = _windows(B=1)
    changed_value = values.clone()
    b, t, c = visible.nonzero()[0].tolist()
    changed_value[b, t, c] += 1e-3
    changed_mask = visible.clone()
    changed_mask[0, 0, 0] = ~changed_mask[0, 0, 0]
    variants = {
        "time_k": _key(KnnGraph(3, 2)),
        "graph_knn": _key(KnnGraph(4, 1)),
        "window_size": _key(values=values[:, :19], visible=visible[:, :19]),
        "data": _key(values=changed_value),
        "mask": _key(visible=changed_mask),
    }
    monkeypatch.setattr(cache_module, "FORMAT_VERSION", cache_module.FORMAT_VERSION + 1)
    variants["format version"] = _key()
    monkeypatch.undo()
    assert _key() == base
    for part, key in variants.items():
        assert key != base, part
    assert len(set(variants.values())) == len(variants)


def test_hidden_values_do_not_change_the_key():
    values, visible = _windows(B=1)
    changed = values.clone()
    changed[~visible] = -values[~visible] - 7.0
    assert _key(values=changed) == _key(values=values)


def test_a_changed_parameter_misses_and_rebuilds(tmp_path):
    values, visible = _windows()
    _cache(tmp_path).get(values, visible)
    other = _cache(tmp_path, KnnGraph(3, 2))
    index, _ = other.get(values, visible)
    assert other.stats.built == 6 and other.stats.disk_hits == 0
    assert index.shape[-1] == 3 + 5
    assert len(_entry_files(tmp_path)) == 12


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage", "append"])
def test_a_damaged_entry_is_rebuilt_with_one_warning(tmp_path, caplog, damage):
    values, visible = _windows(B=2)
    _cache(tmp_path).get(values, visible)
    path = _entry_files(tmp_path)[0]
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-3] ^= 0xFF
    elif damage == "empty":
        data = bytearray()
    elif damage == "append":
        data += b"\0"
    else:
        data = bytearray(os.urandom(len(data)))
    path.write_bytes(bytes(data))

    caplog.set_level(logging.WARNING, logger="tgatunet.graph.cache")
    cache = _cache(tmp_path)
    got = cache.get(values, visible)
    again = cache.get(values, visible)
    fresh = KnnGraph(3, 1).build(values, visible)
    for result in (got, again):
        assert torch.equal(result[0], fresh[0]) and torch.equal(result[1], fresh[1])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "damaged" in warnings[0].getMessage()
    assert cache.stats.corrupt_rebuilt == 1 and cache.stats.built == 1 and cache.stats.disk_hits == 3


def test_an_entry_under_another_key_is_refused():
    index, valid = temporal_neighbors(10, 1)
    data = encode_entry(b"a" * 16, index, valid)
    assert len(data) == entry_size(10, 3)
    assert np.array_equal(decode_entry(b"a" * 16, data)[0], index.numpy())
    with pytest.raises(cache_module.CorruptEntry):
        decode_entry(b"b" * 16, data)


def _hammer(path, barrier, entries, rounds):
    """Writes the same entries as its twin process, at the same time."""
    store = DiskGraphStore(path, None)
    barrier.wait()
    for _ in range(rounds):
        for key, index, valid in entries:
            store.write(key, encode_entry(key, index, valid))


def _read_while_written(path, barrier, keys, size, damaged):
    """Reads the entries while they are being written: each read must find a whole entry or none."""
    store = DiskGraphStore(path, None)
    barrier.wait()
    for _ in range(40):
        for key in keys:
            try:
                store.read(key, size)
            except cache_module.CorruptEntry:
                damaged.value += 1


def test_two_processes_writing_the_same_entries_leave_a_valid_cache(tmp_path):
    values, visible = _windows(B=24, T=64)
    graph = KnnGraph(3, 1)
    # Built here: a forked child must not start torch's thread pool, only write bytes.
    entries = list(zip(window_keys(graph.signature, values, visible), *graph.build(values, visible)))
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(3)
    damaged = context.Value("i", 0)
    workers = [context.Process(target=_hammer, args=(tmp_path, barrier, entries, 20)) for _ in range(2)]
    keys = [e[0] for e in entries]
    workers.append(
        context.Process(target=_read_while_written, args=(tmp_path, barrier, keys, entry_size(64, 6), damaged))
    )
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    assert damaged.value == 0
    cache = _cache(tmp_path)
    got = cache.get(values, visible)
    want = KnnGraph(3, 1).build(values, visible)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert cache.stats.disk_hits == 24 and cache.stats.corrupt_rebuilt == 0
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".nbr" and p.name != cache_module.MARKER]
    assert leftovers == []


def test_disk_limit_evicts_the_least_recently_used_entries(tmp_path):
    values, visible = _windows(B=10, T=20)
    graph = KnnGraph(3, 1)
    index, valid = graph.build(values, visible)
    keys = window_keys(graph.signature, values, visible)
    entry = len(encode_entry(keys[0], index[0], valid[0]))
    store = DiskGraphStore(tmp_path, max_bytes=int(6.5 * entry))
    for n, (key, i, v) in enumerate(zip(keys[:6], index, valid)):
        assert store.write(key, encode_entry(key, i, v)) == 0
        os.utime(store.path(key), (time.time() - 100 + n, time.time() - 100 + n))  # written in order
    assert store.read(keys[0], entry) is not None  # entry 0 becomes the most recently used
    assert store.write(keys[6], encode_entry(keys[6], index[6], valid[6])) == 2  # 7 > 6.5: evict to 90% (5)
    left = {key for key in keys[:7] if os.path.exists(store.path(key))}
    assert left == {keys[0], *keys[3:7]}
    assert sum(e.size for e in store.scan()) <= 6.5 * entry


def test_a_cache_that_cannot_write_still_answers(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    cache = _cache(blocked / "cache")  # the folder cannot be created
    values, visible = _windows()
    caplog.set_level(logging.WARNING, logger="tgatunet.graph.cache")
    got = cache.get(values, visible)
    want = KnnGraph(3, 1).build(values, visible)
    assert torch.equal(got[0], want[0])
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1


def test_summary_and_clear(tmp_path):
    values, visible = _windows()
    cache = _cache(tmp_path)
    cache.get(values, visible)
    cache.get(values, visible)
    cache.save_stats("test")
    summary = cache_summary(tmp_path)
    assert summary["entries"] == 6 and summary["bytes"] > 0
    assert summary["last_run"]["hit_rate"] == 0.5 and summary["last_run"]["by"] == "test"
    assert clear_cache(tmp_path) == (6, summary["bytes"])
    assert cache_summary(tmp_path)["entries"] == 0 and cache_summary(tmp_path)["last_run"] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_windows_get_cuda_tables_equal_to_the_cpu_ones(tmp_path):
    values, visible = _windows(B=8, T=32)
    cache = _cache(tmp_path)
    cache.get(values[:4].cuda(), visible[:4].cuda())  # half built on the GPU
    got = cache.get(values.cuda(), visible.cuda())  # half hits, half built
    assert got[0].is_cuda and got[1].is_cuda
    assert_equally_near_neighbours(got, KnnGraph(3, 1).build(values, visible), values, visible, time_k=1)
