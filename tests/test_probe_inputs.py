"""Inputs a user gets wrong and outputs two programs fight over: each refused with a message, nothing lost or torn.

Files are written whole (one atomic writer) and held by one process at a time
(``output_lock``); input tables that change while read, CSV rows cut short and
text in numeric channels are refused naming file, row and column; config
mistakes name the key; folders tgatunet did not write are never overwritten or
cleared.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tgatunet.config import config_from_dict, load_config
from tgatunet.data.sources import load_source, source_path
from tgatunet.data.synth import SynthSpec, write_synthetic
from tgatunet.data.tables import TableReader, TableWriter, numeric_cells
from tgatunet.errors import ConfigError, DataError, RunError
from tgatunet.files import AtomicFile, atomic_write, output_lock, replace_dir
from tgatunet.graph.cache import MARKER, CacheStats, cache_dir, cache_summary, clear_cache

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "tgatunet" / "data" / "bundled"
ROWS = 1000


def _leftovers(folder: Path) -> list[str]:
    """Temporary files an atomic write could leave behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".partial")))


def _csv(path: Path, rows: list[str] | None = None) -> Path:
    """A source CSV: block, label, a, b; ``ROWS`` whole rows unless ``rows`` is given."""
    lines = rows if rows is not None else [f"blk{i // 100},{'xy'[i % 2]},{i * 0.5},{-i}\n" for i in range(ROWS)]
    path.write_text("block,label,a,b\n" + "".join(lines), encoding="utf-8")
    return path


def _read_all(path: Path, chunk_rows: int = 100) -> pd.DataFrame:
    return pd.concat(list(TableReader(path, chunk_rows).chunks()), ignore_index=True)


def _source_config(path, **keys):
    source = {"name": "s", "have": ["a", "b"], **({"frame": path} if isinstance(path, pd.DataFrame) else {"path": str(path)})}
    return config_from_dict({"sources": [source], "label_col": "label", "block_col": "block", "window_size": 4, **keys})


# --- one atomic writer ------------------------------------------------------------------------


def test_atomic_file_puts_the_new_file_in_place_whole_or_leaves_the_old_one(tmp_path):
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    file = AtomicFile(out)
    file.handle.write(b"new, ")
    assert out.read_bytes() == b"old"  # a reader meanwhile sees the old file
    file.handle.write(b"whole")
    file.commit()
    assert out.read_bytes() == b"new, whole" and _leftovers(tmp_path) == []

    with pytest.raises(ZeroDivisionError):
        atomic_write(out, lambda handle: (handle.write(b"half"), 1 / 0))
    assert out.read_bytes() == b"new, whole" and _leftovers(tmp_path) == []


def test_two_processes_writing_one_table_never_mix_their_rows(tmp_path):
    """Two writers of one output, interleaved chunk by chunk: the file is one writer's table, whole."""
    out = tmp_path / "out.csv"
    first, second = TableWriter(out, "csv"), TableWriter(out, "csv")
    for i in range(5):
        first.write(pd.DataFrame({"writer": ["first"] * 100, "i": range(i * 100, (i + 1) * 100)}))
        second.write(pd.DataFrame({"writer": ["second"] * 100, "i": range(i * 100, (i + 1) * 100)}))
    first.close()
    assert (pd.read_csv(out)["writer"] == "first").all() and len(pd.read_csv(out)) == 500
    second.close()
    table = pd.read_csv(out)
    assert (table["writer"] == "second").all() and table["i"].tolist() == list(range(500))
    assert _leftovers(tmp_path) == []


def test_an_aborted_table_leaves_the_earlier_output_and_no_temporary_file(tmp_path):
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"out.{fmt}"
        done = TableWriter(out, fmt)
        done.write(pd.DataFrame({"x": [1.0, 2.0]}))
        done.close()
        assert len(pd.read_parquet(out) if fmt == "parquet" else pd.read_csv(out)) == 2
        before = out.read_bytes()
        failed = TableWriter(out, fmt)
        failed.write(pd.DataFrame({"x": [3.0]}))
        failed.abort()
        assert out.read_bytes() == before and _leftovers(tmp_path) == []


def test_a_failed_folder_build_leaves_the_old_folder(tmp_path):
    out = tmp_path / "store"
    replace_dir(out, lambda folder: (folder / "a").write_text("1"))
    with pytest.raises(ZeroDivisionError):
        replace_dir(out, lambda folder: ((folder / "b").write_text("2"), 1 / 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    assert [p.name for p in out.iterdir()] == ["a"]


# --- exclusive output lock --------------------------------------------------------------------

_CONTENDER = '''
import os, sys, time
from pathlib import Path
from tgatunet.errors import RunError
from tgatunet.files import AtomicFile, atomic_write_text, output_lock

work, name = Path(sys.argv[1]), sys.argv[2]

def wait_for(path):
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.002)

for r in range(10):
    wait_for(work / f"go{r}")
    try:
        with output_lock(work / "out.bin"):
            with AtomicFile(work / "out.bin") as out:
                for i in range(64):
                    out.handle.write(f"{os.getpid()}:{i}\\n".encode() * 256)
            atomic_write_text(work / f"result{r}.{name}", f"won {os.getpid()}")
            wait_for(work / f"release{r}")
    except RunError as err:
        atomic_write_text(work / f"result{r}.{name}", f"lost {err}")
'''


def _wait(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_two_processes_contending_for_one_output_ten_times(tmp_path):
    """Exactly one process gets the output each time; the other is refused at once, told who holds it."""
    script = tmp_path / "contend.py"
    script.write_text(_CONTENDER, encoding="utf-8")
    out, lock = tmp_path / "out.bin", tmp_path / "out.bin.lock"
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), n]) for n in "ab"]
    try:
        for r in range(10):
            (tmp_path / f"go{r}").touch()
            paths = [tmp_path / f"result{r}.{n}" for n in "ab"]
            _wait(lambda: all(p.exists() for p in paths), f"round {r}")
            results = [p.read_text(encoding="utf-8") for p in paths]
            winners = [t.split()[1] for t in results if t.startswith("won ")]
            assert len(winners) == 1, results
            loser = next(t for t in results if t.startswith("lost "))
            assert f"pid {winners[0]})" in loser and f"'{out}'" in loser and f"delete '{lock}'" in loser
            (tmp_path / f"release{r}").touch()
            _wait(lambda: not lock.exists(), "the lock to go")
            assert out.read_bytes() == b"".join(f"{winners[0]}:{i}\n".encode() * 256 for i in range(64))
        assert [p.wait(timeout=60) for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert _leftovers(tmp_path) == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


def test_a_lock_left_by_a_dead_process_is_taken_over_and_removed_after(tmp_path, caplog):
    out = tmp_path / "predictions"
    lock = tmp_path / "predictions.lock"
    dead = _dead_pid()
    lock.write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    with output_lock(out) as held:
        assert held == lock and json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists() and f"from process {dead}, which no longer runs" in caplog.text
    with pytest.raises(KeyError), output_lock(out, lock=out / ".lock"):
        assert (out / ".lock").is_file()
        raise KeyError("the block failed")
    assert not (out / ".lock").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["predictions"]


@pytest.mark.parametrize("holder", ["running here", "another host"])
def test_a_lock_held_elsewhere_is_refused_at_once_and_kept(tmp_path, holder):
    out = tmp_path / "out.csv"
    lock = tmp_path / "out.csv.lock"
    pid, host = (os.getppid(), socket.gethostname()) if holder == "running here" else (_dead_pid(), "node-17")
    lock.write_text(json.dumps({"pid": pid, "host": host}))
    start = time.monotonic()
    with pytest.raises(RunError) as err:
        with output_lock(out):
            pytest.fail("the lock was taken")
    assert time.monotonic() - start < 2
    message = str(err.value)
    assert f"another tgatunet process (pid {pid}" in message and f"is writing '{out}'" in message
    assert "wait for it to finish" in message and f"delete '{lock}'" in message
    assert ("node-17" in message) == (holder == "another host")
    assert json.loads(lock.read_text())["pid"] == pid


# --- input files re-checked; CSV rows cut short ----------------------------------------------


def test_a_csv_that_grows_while_read_is_refused(tmp_path):
    path = _csv(tmp_path / "s.csv")
    chunks = TableReader(path, 100).chunks()
    next(chunks)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("blk9,x,1.0,2.0\n")
    with pytest.raises(DataError, match="changed while it was being read") as err:
        list(chunks)
    assert f"'{path}'" in str(err.value) and "read it again when the writer has finished" in str(err.value)


def test_a_parquet_file_rewritten_while_read_is_refused(tmp_path):
    path = tmp_path / "s.parquet"
    pd.DataFrame({"a": np.arange(1000.0)}).to_parquet(path, row_group_size=100)
    chunks = TableReader(path, 100).chunks()
    next(chunks)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # same size, newer
    with pytest.raises(DataError, match="changed while it was being read"):
        list(chunks)


@pytest.mark.parametrize("row, bad, fields", [(479, "blk4,x,1.0\n", 3), (0, "blk0\n", 1), (700, "blk7,x,1,2,3\n", 5)])
def test_a_row_with_too_few_or_too_many_fields_is_refused_naming_it(tmp_path, row, bad, fields):
    lines = [f"blk{i // 100},{'xy'[i % 2]},{i * 0.5},{-i}\n" for i in range(ROWS)]
    lines[row] = bad
    path = _csv(tmp_path / "s.csv", lines)
    with pytest.raises(DataError) as err:
        _read_all(path)
    message = str(err.value)
    assert f"'{path}'" in message and f"data row {row} (line {row + 2})" in message
    assert f"has {fields} field(s) but the header has 4" in message and "fix the row or delete it" in message
    with pytest.raises(DataError, match=f"data row {row} "):
        load_source(_source_config(path), _source_config(path).data.sources[0], None)


def test_a_last_line_without_a_line_break_is_refused_as_cut_off(tmp_path):
    path = _csv(tmp_path / "s.csv")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("blk9,x,12.")  # the logger stopped here
    with pytest.raises(DataError) as err:
        TableReader(path)
    message = str(err.value)
    assert f"'{path}'" in message and f"data row {ROWS} (line {ROWS + 2})" in message
    assert "does not end with a line break" in message and "end the file with a line break" in message


def test_an_empty_csv_is_refused_not_a_traceback(tmp_path):
    path = tmp_path / "s.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=f"'{path}' is empty: a table starts with a header line"):
        list(TableReader(path).chunks())


def test_whole_rows_with_empty_cells_quotes_and_crlf_still_read(tmp_path):
    """No false alarm: empty last cells, a quoted comma and line break, Windows line ends."""
    quoted = '"x,\ny"'
    lines = [f"blk0,{quoted if i == 3 else 'x'},{i},\r\n" for i in range(300)]
    path = _csv(tmp_path / "s.csv", lines)
    table = _read_all(path, 50)
    assert len(table) == 300 and table.loc[3, "label"] == "x,\ny" and (table["b"] == "").all()


def test_bundled_and_synthetic_csvs_read_whole(tmp_path):
    for path in sorted(BUNDLED.rglob("*.csv")):
        assert len(_read_all(path, 512)) == TableReader(path).rows > 0
    config = load_config(write_synthetic(SynthSpec(blocks_per_source=3, block_length=50), tmp_path))
    for source in config.data.sources:
        path = source_path(config, source)
        assert path.read_bytes().endswith(b"\n") and len(_read_all(path)) == 150


# --- text in numeric channels -----------------------------------------------------------------

CELLS = ["1.5", "", "NA", " 2 ", "nan", "None", "#N/A"]
EXPECTED = [1.5, np.nan, np.nan, 2.0, np.nan, np.nan, np.nan]


def _columns(tmp_path, cells) -> dict[str, pd.Series]:
    """The same cells as CSV text, a Parquet string column, and a DataFrame object column."""
    csv = tmp_path / "cells.csv"
    csv.write_text("a\n" + "".join(f'"{c}"\n' for c in cells), encoding="utf-8")
    parquet = tmp_path / "cells.parquet"
    pd.DataFrame({"a": pd.Series(cells, dtype=pd.ArrowDtype(pa.string()))}).to_parquet(parquet)
    return {
        "csv": _read_all(csv)["a"],
        "parquet": _read_all(parquet)["a"],
        "object": pd.Series(np.array(cells, dtype=object), name="a"),
    }


def test_missing_spellings_mean_the_same_in_csv_parquet_and_dataframes(tmp_path):
    for kind, column in _columns(tmp_path, CELLS).items():
        np.testing.assert_array_equal(numeric_cells(column, kind, 0), EXPECTED, err_msg=kind)


def test_text_in_a_numeric_column_is_refused_naming_column_and_row_everywhere(tmp_path):
    for kind, column in _columns(tmp_path, [*CELLS, "abc"]).items():
        with pytest.raises(DataError) as err:
            numeric_cells(column, f"input '{kind}'", 1000)
        assert f"input '{kind}': column 'a' is not numeric: row 1007 holds 'abc'" in str(err.value), kind


def test_a_huge_cell_gives_a_short_message():
    with pytest.raises(DataError) as err:
        numeric_cells(pd.Series(["1", "x" * 1_000_000], name="a"), "input", 0)
    assert len(str(err.value)) < 600 and "row 1 holds 'xxx" in str(err.value)


def test_sources_with_text_or_lists_in_their_columns_are_refused(tmp_path):
    frame = pd.DataFrame({"block": ["b"] * 8, "label": ["x", "y"] * 4, "a": np.arange(8.0), "b": np.arange(8.0)})
    with_text = frame.assign(a=np.array([*range(5), "oops", 6, 7], dtype=object))
    config = _source_config(with_text)
    with pytest.raises(DataError, match=r"<DataFrame s>\): column 'a' is not numeric: row 5 holds 'oops'"):
        load_source(config, config.data.sources[0], None)
    path = tmp_path / "s.parquet"
    frame.assign(b=[str(v) for v in range(7)] + ["abc"]).to_parquet(path)
    config = _source_config(path)
    with pytest.raises(DataError, match=rf"{path}\): column 'b' is not numeric: row 7 holds 'abc'"):
        load_source(config, config.data.sources[0], None)
    config = _source_config(frame.assign(label=[[1, 2]] * 8))
    with pytest.raises(DataError, match=r"label_col 'label' row 0 holds \[1, 2\]; each cell must be one value"):
        load_source(config, config.data.sources[0], None)


# --- config -----------------------------------------------------------------------------------

BASE = "label_col: y\nsources: [{name: a, path: a.csv, have: [x]}]\n"


def test_a_config_not_in_utf8_says_to_save_it_as_utf8(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes((BASE + "# réglages de l'été\n").encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "save the file as UTF-8" in str(err.value)


@pytest.mark.parametrize("key", ["seed", "split_seed", "eval_seed"])
def test_seeds_outside_0_to_2_32_are_refused_naming_the_key(key):
    raw = {"sources": [{"name": "a", "path": "a.csv", "have": ["x"]}], "label_col": "y"}
    for bad in (-1, 2**32):
        with pytest.raises(ConfigError, match=rf"key '{key}': .* \(got {bad}\)"):
            config_from_dict({**raw, key: bad})
    assert config_from_dict({**raw, key: 2**32 - 1}).flat()[key] == 2**32 - 1


_BOMB_CHECK = '''
import sys, time
from tgatunet.config import load_config
from tgatunet.errors import ConfigError
start = time.monotonic()
try:
    load_config(sys.argv[1])
except ConfigError as err:
    print(time.monotonic() - start, len(str(err)), str(err).splitlines()[1])
'''


def test_a_yaml_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    """A billion 'lol's by nested aliases: formatting the error must not expand them."""
    levels = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text(BASE + f"common_modalities: [{', '.join(levels)}]\n", encoding="utf-8")
    # Its own process: a hang is killed, not waited for (importing tgatunet takes a few seconds of its own).
    done = subprocess.run([sys.executable, "-c", _BOMB_CHECK, str(path)], capture_output=True, text=True, timeout=120)
    seconds, length, first = done.stdout.split(maxsplit=2)
    assert float(seconds) < 5 and int(length) < 5000
    assert first.startswith("- key 'common_modalities.0': Input should be a valid string (got ['lol'")


def test_tilde_in_path_keys_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    config = config_from_dict({
        "sources": [{"name": "a", "path": "~/data/a.csv", "have": ["x"]}], "label_col": "y",
        "run_dir": "~/myrun", "data_store": "~/store", "graph_cache_dir": "~/cache",
    })  # fmt: skip
    assert config.resolved_run_dir() == tmp_path / "myrun"
    assert source_path(config, config.data.sources[0]) == tmp_path / "data" / "a.csv"
    assert config.data_store_path() == tmp_path / "store"
    assert cache_dir(config, config.resolved_run_dir()) == tmp_path / "cache"
    assert not (tmp_path / "~").exists()


# --- folders not ours -------------------------------------------------------------------------

SMALL = SynthSpec(sources=2, blocks_per_source=2, block_length=20)


def test_synth_refuses_a_folder_holding_files_it_did_not_write(tmp_path):
    mine = tmp_path / "config.yaml"
    mine.write_text("my own config\n")
    with pytest.raises(DataError) as err:
        write_synthetic(SMALL, tmp_path)
    assert f"'{tmp_path}'" in str(err.value) and "'config.yaml'" in str(err.value)
    assert mine.read_text() == "my own config\n" and sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_synth_writes_a_new_or_empty_folder_and_rewrites_its_own(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "new" / "data", tmp_path / "empty"):
        first = write_synthetic(SMALL, folder).read_text()
        assert write_synthetic(SMALL, folder).read_text() == first
        assert _leftovers(folder) == []


def _cache_files(root: Path) -> dict[str, bytes]:
    entry = "0123456789abcdef" * 2
    files = {
        f"entries/01/{entry}.nbr": b"entry",
        f"entries/01/.{entry}.nbr.x1y2.tmp": b"temporary",
        "entries/01/notes.txt": b"mine",
        "entries/README": b"mine",
        "stats.json": json.dumps({"by": "evaluate", "finished": "2024-01-01", **CacheStats().to_dict()}).encode(),
        "results.csv": b"mine",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


@pytest.mark.parametrize("marked", [True, False], ids=["marked", "made before the marker"])
def test_cache_clear_deletes_only_the_files_the_cache_wrote(tmp_path, marked):
    _cache_files(tmp_path)
    if marked:
        (tmp_path / MARKER).write_text("{}")
    assert clear_cache(tmp_path) == (1, 5)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(["entries/01/notes.txt", "entries/README", "results.csv"] + [MARKER] * marked)


def test_cache_clear_refuses_a_folder_that_is_not_a_cache(tmp_path):
    (tmp_path / "entries").mkdir()
    (tmp_path / "entries" / "thesis.tex").write_text("years of work")
    (tmp_path / "stats.json").write_text('{"mean": 1}')
    with pytest.raises(RunError) as err:
        clear_cache(tmp_path)
    assert f"'{tmp_path}' is not a tgatunet graph cache" in str(err.value) and "nothing was deleted" in str(err.value)
    assert (tmp_path / "entries" / "thesis.tex").read_text() == "years of work" and (tmp_path / "stats.json").is_file()
    assert cache_summary(tmp_path)["last_run"] is None  # `cache info` reads a foreign stats.json as no run
