"""Adversarial probes of applying a trained run, and of the run directory, as a hostile but realistic user.

Every case ends in one of: exit code 2 (a ``TgatunetError`` subclass in Python) with a
message naming the file, column, row, key or value, and no traceback; or the correct
result. Inputs outside the run/output directory keep their bytes and mtimes. Two
processes fighting over one output: exactly one wins, the other is refused, the
winner's files are whole.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import base_config, make_frames, repoint_copy
from typer.testing import CliRunner

import tgatunet
import tgatunet.data.tables
from tgatunet.cli import app
from tgatunet.errors import ConfigError, DataError, RunError, TgatunetError

CLASSES = ["fast", "slow"]
CHANNELS = ["a", "b", "c"]
BIG_ROWS = 20_000  # long enough that two processes applying it overlap
RACES = 10


# --- helpers ---------------------------------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: its SHA-256 and mtime."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _flat(text: str) -> str:
    return " ".join(text.split())


def invoke(args: list) -> tuple[int, str]:
    """The CLI in-process: (exit code, output on one line); no exception may escape, no traceback printed."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), f"escaped: {result.exception!r}\n{output}"
    assert "Traceback" not in output, output
    return result.exit_code, _flat(output)


def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400", **extra}


def run_cli(args: list, cwd: Path, timeout: float, env: dict | None = None) -> tuple[int, str, float]:
    """The CLI as its own process: (exit code, output on one line, seconds)."""
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "tgatunet", *map(str, args)], cwd=cwd, env=env or _env(),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"tgatunet {' '.join(map(str, args))} ran past {timeout} s")
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    return done.returncode, _flat(output), time.monotonic() - start


def race(args: list, cwd: Path, timeout: float = 300) -> list[tuple[int, str]]:
    """The same command in two processes started together: [(exit code, output), ...]."""
    cmd = [sys.executable, "-m", "tgatunet", *map(str, args)]
    procs = [subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    results = []
    try:
        deadline = time.monotonic() + timeout
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((proc.returncode, out))
    except subprocess.TimeoutExpired:
        pytest.fail(f"two tgatunet {args[0]} at once ran past {timeout} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def _leftovers(folder: Path) -> list[str]:
    return [name for name in _files(folder) if name.endswith((".lock", ".tmp", ".partial", ".stale"))]


# --- a trained run, and recordings to apply it to ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A run trained (one epoch) on the conftest data, kept beside it, and a new recording unlike the training files."""
    folder = tmp_path_factory.mktemp("apply")
    data = folder / "data"
    data.mkdir()
    paths = {}
    for name, frame in make_frames().items():
        paths[name] = data / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    config = {**base_config(paths), "epochs": 1, "run_dir": str(folder / "run")}
    (data / "config.yaml").write_text(yaml.safe_dump(config))
    run = tgatunet.train(data / "config.yaml", progress_bar=False)

    new = make_frames(seed=5, blocks=3, rows=30)["full"]
    new = new[["c", "label", "subject", "a"]].copy()  # another order, channel b absent, c partly missing
    new.loc[[3, 4, 5, 40], "c"] = np.nan
    new.insert(1, "note", (["000", "NA", "01", "x y", ""] * len(new))[: len(new)])
    return {"run": run, "dir": folder, "data": data, "config": config, "new": new}


@pytest.fixture(scope="module")
def big(trained) -> Path:
    """A 20,000-row recording for the races."""
    path = trained["dir"] / "big" / "big.csv"
    path.parent.mkdir()
    make_frames(seed=7, blocks=BIG_ROWS // 40, rows=40)["full"].to_csv(path, index=False)
    return path


@dataclass
class Work:
    dir: Path  # the user's inputs: must never change
    out: Path  # the --output folder
    run: Path
    new: pd.DataFrame
    csv: Path  # the new recording as CSV

    def write(self, name: str, frame: pd.DataFrame) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False) if path.suffix == ".parquet" else frame.to_csv(path, index=False)
        return path

    def predict(self, *inputs: Path, output: Path | None = None, extra: tuple = ()) -> list:
        args = ["predict", "--run", self.run]
        for path in inputs:
            args += ["--input", path]
        return [*args, "--output", output or self.out, *extra]


@pytest.fixture
def work(trained, tmp_path) -> Work:
    folder = tmp_path / "in"
    folder.mkdir()
    w = Work(folder, tmp_path / "out", trained["run"].directory, trained["new"].copy(), folder / "new.csv")
    w.new.to_csv(w.csv, index=False)
    return w


@pytest.fixture
def copied(trained, tmp_path) -> dict:
    """A copy of the run and its training data, the run's config pointing at the copy's files."""
    root = tmp_path / "w"
    shutil.copytree(trained["dir"] / "data", root / "data")
    shutil.copytree(trained["run"].directory, root / "run")
    repoint_copy(root)
    return {"root": root, "data": root / "data", "run": root / "run", "config": root / "data" / "config.yaml"}


# --- 1. two processes at once ---------------------------------------------------------------------------------------


def _one_won(results: list[tuple[int, str]]) -> tuple[str, str]:
    for _, out in results:
        assert "Traceback" not in out, out
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], f"exit codes {codes}:\n" + "\n----\n".join(out[-2000:] for _, out in results)
    winner = next(out for code, out in results if code == 0)
    loser = _flat(next(out for code, out in results if code == 2))
    assert "another tgatunet process" in loser and "is writing" in loser, loser
    return winner, loser


def _whole(path: Path, header: list[str], rows: int) -> None:
    table = pd.read_csv(path)
    assert list(table.columns[: len(header)]) == header, list(table.columns)
    assert len(table) == rows
    assert table[[c for c in CHANNELS if c in table.columns]].notna().all().all()


@pytest.mark.parametrize("attempt", range(RACES))
def test_two_predicts_into_one_output_one_wins(trained, big, tmp_path, attempt):
    before = _snapshot(big.parent)
    out = tmp_path / "O"
    results = race(["predict", "--run", trained["run"].directory, "--input", big, "--output", out], tmp_path)
    _one_won(results)
    _whole(out / "big_completed.csv", list(pd.read_csv(big, nrows=0).columns), BIG_ROWS)
    assert (out / "big_windows.csv").is_file() and (out / "big_blocks.csv").is_file()
    assert _leftovers(out) == []
    assert _snapshot(big.parent) == before, "the input changed"


@pytest.fixture(scope="module")
def big_run(trained, tmp_path_factory) -> Path:
    """A copy of the run whose sources are 20,000 rows each."""
    root = tmp_path_factory.mktemp("bigrun")
    shutil.copytree(trained["run"].directory, root / "run")
    frames = make_frames(seed=9, blocks=BIG_ROWS // 40, rows=40)
    saved = yaml.safe_load((root / "run" / "config.yaml").read_text())
    for source in saved["sources"]:
        path = root / "data" / f"{source['name']}.csv"
        path.parent.mkdir(exist_ok=True)
        frames[source["name"]].to_csv(path, index=False)
        source["path"] = str(path)
    (root / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    return root / "run"


@pytest.mark.parametrize("attempt", range(RACES))
def test_two_completes_into_one_output_one_wins(big_run, tmp_path, attempt):
    data = big_run.parent / "data"
    before = _snapshot(data)
    out = tmp_path / "O"
    results = race(["complete", "--run", big_run, "--output", out], tmp_path)
    _one_won(results)
    for name in ("full", "partial"):
        _whole(out / f"{name}_completed.csv", list(pd.read_csv(data / f"{name}.csv", nrows=0).columns), BIG_ROWS)
    assert _leftovers(out) == []
    assert _snapshot(data) == before, "a source changed"


# --- 2-4. the CLI refusing what it cannot do, in a table -------------------------------------------------------------

Setup = Callable[[Work], list]
CASES: dict[str, tuple[Setup, int, list]] = {}


def case(name: str, code: int, *texts):
    """``texts``: strings, or callables of the Work giving one, that the output must hold."""
    def register(fn: Setup) -> Setup:
        CASES[name] = (fn, code, list(texts))
        return fn
    return register


# 2. name collisions, refused before any work
@case("same name from two folders", 2, lambda w: str(w.dir / "a" / "x.csv"), lambda w: str(w.dir / "b" / "x.csv"))
def _(w):
    return w.predict(w.write("a/x.csv", w.new), w.write("b/x.csv", w.new))


@case("csv and parquet of one name into --format csv", 2, lambda w: str(w.dir / "x.csv"), lambda w: str(w.dir / "x.parquet"))
def _(w):
    return w.predict(w.write("x.csv", w.new), w.write("x.parquet", w.new), extra=("--format", "csv"))


@case("the same file twice", 2, "twice", lambda w: str(w.csv))
def _(w):
    return w.predict(w.csv, w.csv)


@case("the same file twice, spelled two ways", 2, lambda w: str(w.csv))
def _(w):
    (w.dir / "sub").mkdir()
    return w.predict(w.csv, w.dir / "sub" / ".." / "new.csv")


@case("an input named like the other's output, output beside them", 2, "would overwrite", lambda w: str(w.dir / "rec_completed.csv"))
def _(w):
    return w.predict(w.write("rec.csv", w.new), w.write("rec_completed.csv", w.new), output=w.dir)


@case("an input named like the other's output, in the output folder", 2, "would overwrite", lambda w: str(w.dir / "b" / "rec_completed.csv"))
def _(w):
    return w.predict(w.write("a/rec.csv", w.new), w.write("b/rec_completed.csv", w.new), output=w.dir / "b")


# 3. input faults
def _lines(w: Work) -> list[str]:
    return w.csv.read_text().splitlines(keepends=True)


@case("last line cut mid-row without a line break", 2, lambda w: str(w.dir / "cut.csv"), lambda w: f"data row {len(w.new) - 1} ")
def _(w):
    lines = _lines(w)
    last = lines[-1]
    lines[-1] = last[: last.index(",", last.index(",") + 1) + 2]  # two fields and a bit of the third
    (w.dir / "cut.csv").write_text("".join(lines))
    return w.predict(w.dir / "cut.csv")


@case("a short row", 2, lambda w: str(w.dir / "short.csv"), "data row 10 ")
def _(w):
    lines = _lines(w)
    lines[11] = ",".join(lines[11].split(",")[:2]) + "\n"
    (w.dir / "short.csv").write_text("".join(lines))
    return w.predict(w.dir / "short.csv")


@case("a row with too many fields", 2, lambda w: str(w.dir / "long.csv"), "data row 20 ")
def _(w):
    lines = _lines(w)
    lines[21] = lines[21].rstrip("\n") + ",1,2\n"
    (w.dir / "long.csv").write_text("".join(lines))
    return w.predict(w.dir / "long.csv")


def _abc(frame: pd.DataFrame, row: int = 6) -> pd.DataFrame:
    frame = frame.astype({"a": object})
    frame.loc[row, "a"] = "abc"
    return frame


@case("text in a channel cell of a CSV", 2, lambda w: str(w.dir / "abc.csv"), "column 'a'", "'abc'", "row 6")
def _(w):
    return w.predict(w.write("abc.csv", _abc(w.new)))


@case("text in a channel column of a Parquet file", 2, lambda w: str(w.dir / "abc.parquet"), "column 'a'", "'abc'", "row 6")
def _(w):
    return w.predict(w.write("abc.parquet", _abc(w.new).astype({"a": str})))


@case("an empty file", 2, lambda w: str(w.dir / "empty.csv"), "empty")
def _(w):
    (w.dir / "empty.csv").write_bytes(b"")
    return w.predict(w.dir / "empty.csv")


@case("only a header", 2, lambda w: str(w.dir / "header.csv"), "no data rows")
def _(w):
    return w.predict(w.write("header.csv", w.new.iloc[:0]))


@case("a missing input", 2, lambda w: str(w.dir / "nope.csv"), "not found")
def _(w):
    return w.predict(w.dir / "nope.csv")


@case("a directory as input", 2, lambda w: str(w.dir / "folder.csv"))
def _(w):
    (w.dir / "folder.csv").mkdir()
    (w.dir / "folder.csv" / "inside.txt").write_text("x")
    return w.predict(w.dir / "folder.csv")


@case("an Excel file as input", 2, lambda w: str(w.dir / "rec.xlsx"))
def _(w):
    (w.dir / "rec.xlsx").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    return w.predict(w.dir / "rec.xlsx")


@case("a semicolon-separated CSV", 2, lambda w: str(w.dir / "semi.csv"), "channels")
def _(w):
    w.new.to_csv(w.dir / "semi.csv", sep=";", index=False)
    return w.predict(w.dir / "semi.csv")


# 4. output faults
@case("--output where a folder cannot be made", 2, lambda w: str(w.dir / "blocked"))
def _(w):
    if os.geteuid() == 0:  # root ignores a folder's permissions: a path through a regular file fails the same way
        (w.dir / "blocked").write_text("a regular file\n")
        return w.predict(w.csv, output=w.dir / "blocked" / "sub")
    (w.dir / "blocked").mkdir(mode=0o500)
    return w.predict(w.csv, output=w.dir / "blocked" / "out")


@case("--output an existing file", 2, lambda w: str(w.dir / "taken.txt"))
def _(w):
    (w.dir / "taken.txt").write_text("the user's file\n")
    return w.predict(w.csv, output=w.dir / "taken.txt")


@pytest.mark.parametrize("name", list(CASES))
def test_cli_case(name, work):
    setup, code, texts = CASES[name]
    args = setup(work)
    out_before = set(_files(work.out))
    before = _snapshot(work.dir)
    try:
        got, output = invoke(args)
    finally:
        if (work.dir / "blocked").is_dir():
            (work.dir / "blocked").chmod(0o700)
    assert got == code, output
    for text in texts:
        text = text(work) if callable(text) else text
        assert text in output, f"{text!r} not in: {output}"
    assert _snapshot(work.dir) == before, "a file outside the output folder changed (or was added)"
    if code == 2:
        assert set(_files(work.out)) == out_before, f"files left in the output folder: {_files(work.out)}"


# --- 3. the Python API refusing, never a bare exception -------------------------------------------------------------

API_CASES: dict[str, tuple[Callable, type, str]] = {
    "load(None)": (lambda t: tgatunet.load(None), RunError, "None"),
    "load(123)": (lambda t: tgatunet.load(123), RunError, "int"),
    "load of a file": (lambda t: tgatunet.load(t["data"] / "full.csv"), RunError, "full.csv"),
    "load of a missing folder": (lambda t: tgatunet.load(t["dir"] / "nope"), RunError, "nope"),
    "train(12345)": (lambda t: tgatunet.train(12345), ConfigError, "int"),
    "complete a DataFrame with text in a channel": (lambda t: t["run"].complete(_abc(t["new"])), DataError, r"column 'a'.*'abc'"),
    "complete an object array holding text": (
        lambda t: t["run"].complete(_abc(t["new"])[["a", "c"]].to_numpy(dtype=object), channels=["a", "c"]), DataError, "not numbers"),
    "complete a string array": (
        lambda t: t["run"].complete(_abc(t["new"])[["a", "c"]].astype(str).to_numpy(), channels=["a", "c"]), DataError, "not numbers"),
    "complete a list of lists": (lambda t: t["run"].complete(t["new"][["a", "c"]].to_numpy().tolist()), DataError, "DataFrame"),
    "complete with an unknown fill": (lambda t: t["run"].complete(t["new"], fill="everything"), DataError, "fill"),
    "complete a DataFrame with a column twice": (
        lambda t: t["run"].complete(pd.concat([t["new"], t["new"][["a"]]], axis=1)), DataError, "'a'"),
    "predict a frame sharing no channel": (
        lambda t: t["run"].predict(pd.DataFrame({"x": np.arange(40.0), "y": np.arange(40.0)})), DataError, "channels"),
    "complete an empty array": (lambda t: t["run"].complete(np.zeros((0, 2)), channels=["a", "c"]), DataError, "not empty"),
    "complete windows of no steps": (lambda t: t["run"].complete(np.zeros((2, 0, 2)), channels=["a", "c"]), DataError, "not empty"),
    "complete an array sharing no channel": (
        lambda t: t["run"].complete(np.full((40, 2), np.nan), channels=["x", "y"]), DataError, "none of the run's channels"),
    "complete an array with an unknown fill": (
        lambda t: t["run"].complete(t["new"][["a", "c"]].to_numpy(), channels=["a", "c"], fill="nope"), DataError, "fill"),
}


@pytest.mark.parametrize("name", list(API_CASES))
def test_api_case(name, trained):
    call, kind, pattern = API_CASES[name]
    try:
        call(trained)
    except TgatunetError as err:
        assert isinstance(err, kind), f"{type(err).__name__}: {err}"
        assert pd.Series([str(err)]).str.contains(pattern).item(), f"{pattern!r} not in: {err}"
    except Exception as err:  # noqa: BLE001 - what the probe is about
        pytest.fail(f"a bare {type(err).__name__} escaped the API: {err}")
    else:
        pytest.fail("accepted without an error")


def test_complete_an_array_holding_inf_is_refused_or_finite(trained):
    values = trained["new"][["a", "c"]].to_numpy(dtype=float, copy=True)
    values[10, 0] = np.inf
    try:
        filled = trained["run"].complete(values, channels=["a", "c"])
    except TgatunetError as err:
        assert "inf" in str(err), err
        return
    missing = np.isnan(values)
    assert np.isfinite(filled[missing]).all(), "filled cells are not numbers"


def test_complete_a_frame_with_its_own_index_gives_the_same_values(trained):
    frame = trained["new"].copy()
    shifted = frame.set_axis(np.arange(1000, 1000 + len(frame))[::-1])
    want = trained["run"].complete(frame)
    got = trained["run"].complete(shifted)
    assert len(got) == len(frame)
    for column in [*CHANNELS, *(f"p_{k}" for k in CLASSES)]:
        np.testing.assert_allclose(got[column].to_numpy(float), want[column].to_numpy(float), rtol=0, atol=1e-9, err_msg=column)


def test_complete_a_nullable_float_frame_as_the_numpy_one(trained):
    frame = trained["new"].copy()
    nullable = frame.astype({"a": "Float64", "c": "Float64"})
    want = trained["run"].complete(frame)
    got = trained["run"].complete(nullable)
    for column in [*CHANNELS, *(f"p_{k}" for k in CLASSES)]:
        np.testing.assert_allclose(got[column].to_numpy(float), want[column].to_numpy(float), rtol=0, atol=1e-9, err_msg=column)
    assert got["c_imputed"].tolist() == want["c_imputed"].tolist()


# --- 5. the run directory -----------------------------------------------------------------------------------------


def test_overwrite_keeps_the_users_files_in_completed_and_plots(copied):
    run = copied["run"]
    (run / "completed").mkdir(exist_ok=True)
    mine = {run / "plots" / "my_notes.txt": b"my notes\n", run / "completed" / "mine.csv": b"x,y\n1,2\n"}
    for path, content in mine.items():
        path.write_bytes(content)
    before = _snapshot(copied["data"])
    code, output = invoke(["train", "--config", copied["config"], "--overwrite"])
    assert code == 0, output
    for path, content in mine.items():
        assert path.is_file(), f"'{path}' was deleted by --overwrite"
        assert path.read_bytes() == content
    assert _snapshot(copied["data"]) == before


def test_a_run_dir_under_home_is_expanded(trained, tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    config = cwd / "config.yaml"
    config.write_text(yaml.safe_dump({**trained["config"], "run_dir": "~/myrun"}))
    before = _snapshot(trained["data"])
    code, output, _ = run_cli(["train", "--config", config], cwd, timeout=400, env=_env(HOME=str(home)))
    assert code == 0, output
    assert (home / "myrun" / "checkpoints").is_dir() and (home / "myrun" / "data.json").is_file(), _files(home)
    assert not (cwd / "~").exists(), f"a literal '~' folder was made: {_files(cwd)}"
    assert _snapshot(trained["data"]) == before


def _change_partial(copied) -> None:
    frame = pd.read_csv(copied["data"] / "partial.csv")
    frame.loc[4, "a"] += 0.5
    frame.to_csv(copied["data"] / "partial.csv", index=False)


def test_evaluate_refuses_changed_sources_naming_them(copied):
    _change_partial(copied)
    metrics = (copied["run"] / "metrics.json").read_bytes()
    before = _snapshot(copied["data"])
    code, output = invoke(["evaluate", "--run", copied["run"]])
    assert code == 2, output
    assert "partial" in output and "--allow-changed-data" in output, output
    assert (copied["run"] / "metrics.json").read_bytes() == metrics
    assert _snapshot(copied["data"]) == before


def test_evaluate_of_changed_sources_runs_when_allowed(copied):
    _change_partial(copied)
    before = _snapshot(copied["data"])
    code, output = invoke(["evaluate", "--run", copied["run"], "--allow-changed-data"])
    assert code == 0, output
    assert "classification" in (copied["run"] / "metrics.json").read_text()
    assert _snapshot(copied["data"]) == before


def test_evaluate_of_a_folder_that_is_not_a_run(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("buy milk\n")
    before = _snapshot(folder)
    code, output = invoke(["evaluate", "--run", folder])
    assert code == 2, output
    assert str(folder) in output, output
    assert _snapshot(folder) == before and [p.name for p in folder.iterdir()] == ["todo.txt"]


# --- 6. outputs people can open --------------------------------------------------------------------------------------


NUMERIC = [*CHANNELS, *(f"p_{k}" for k in CLASSES)]


@pytest.mark.parametrize("reader", ["pandas", "pyarrow"])
def test_parquet_output_of_a_csv_input_has_numeric_columns(work, reader):
    before = _snapshot(work.dir)
    code, output = invoke(work.predict(work.csv, extra=("--format", "parquet")))
    assert code == 0, output
    path = work.out / "new_completed.parquet"
    if reader == "pandas":
        table = pd.read_parquet(path)
        bad = {c: str(table[c].dtype) for c in NUMERIC if not pd.api.types.is_numeric_dtype(table[c])}
    else:
        schema = pq.read_table(path).schema
        bad = {c: str(schema.field(c).type) for c in NUMERIC
               if not (pa.types.is_floating(schema.field(c).type) or pa.types.is_integer(schema.field(c).type))}
    assert bad == {}, f"not numeric in {reader}: {bad}"
    windows = pd.read_parquet(work.out / "new_windows.parquet")
    assert all(pd.api.types.is_numeric_dtype(windows[f"p_{k}"]) for k in CLASSES), windows.dtypes.to_dict()
    assert _snapshot(work.dir) == before


@pytest.mark.parametrize("extra", ["categorical", "string"])
def test_parquet_input_with_a_categorical_or_string_column(work, extra):
    frame = work.new.copy()
    if extra == "categorical":
        frame["subject"] = pd.Categorical(frame["subject"])
        frame["label"] = pd.Categorical(frame["label"], categories=["slow", "fast", "unused"])
    else:
        frame["comment"] = pd.array(["left wrist", None, "ünïcode", ""] * (len(frame) // 4) + ["x"] * (len(frame) % 4),
                                    dtype="string")
    path = work.write("rec.parquet", frame)
    before = _snapshot(work.dir)
    code, output = invoke(work.predict(path))
    assert code == 0, output
    out = pd.read_parquet(work.out / "rec_completed.parquet")  # plain pandas, no options
    assert len(out) == len(frame)
    for column in frame.columns:
        if column not in CHANNELS:
            assert _cells(out[column]) == _cells(frame[column]), column
    kept = frame["c"].notna().to_numpy()
    np.testing.assert_array_equal(out["c"].to_numpy(float)[kept], frame["c"].to_numpy(float)[kept])
    assert _snapshot(work.dir) == before


def _cells(series: pd.Series) -> list:
    return [None if pd.isna(v) else v for v in series.astype(object)]


def test_csv_with_a_byte_order_mark_is_read_right_or_refused(work):
    path = work.dir / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + work.csv.read_bytes())  # as Excel saves "CSV UTF-8"; its first column is c
    before = _snapshot(work.dir)
    code, output = invoke(work.predict(path))
    assert _snapshot(work.dir) == before
    if code == 2:
        assert str(path) in output, output
        return
    assert code == 0, output
    out = pd.read_csv(work.out / "bom_completed.csv", encoding="utf-8-sig")
    observed = work.new["c"].notna().to_numpy()
    assert [c for c in out.columns if c.lstrip("\ufeff") == "c"] == ["c"], list(out.columns)
    np.testing.assert_allclose(out["c"].to_numpy(float)[observed], work.new["c"].to_numpy(float)[observed], rtol=0, atol=1e-12)
    assert out["c_imputed"].tolist() == (~observed).tolist(), "observed cells of c were replaced"


def test_csv_in_latin1_is_kept_byte_for_byte_or_refused(work):
    path = work.dir / "latin.csv"
    frame = work.new.assign(note=(["Größe", "Ärmel", "plain"] * len(work.new))[: len(work.new)])
    path.write_bytes(frame.to_csv(index=False).encode("latin-1"))
    before = _snapshot(work.dir)
    code, output = invoke(work.predict(path))
    assert _snapshot(work.dir) == before
    if code == 2:
        assert str(path) in output and "utf-8" in output.lower(), output
        assert _files(work.out) == []
        return
    assert code == 0, output
    given = path.read_bytes().splitlines()
    written = (work.out / "latin_completed.csv").read_bytes().splitlines()
    note = frame.columns.get_loc("note")
    assert [line.split(b",")[note] for line in written] == [line.split(b",")[note] for line in given]


def _raw(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def test_csv_output_filled_cells_are_numbers(work):
    code, output = invoke(work.predict(work.csv))
    assert code == 0, output
    header, rows = _raw(work.out / "new_completed.csv")
    col = {name: i for i, name in enumerate(header)}
    for channel in CHANNELS:
        for r, row in enumerate(rows):
            if f"{channel}_imputed" in col and row[col[f"{channel}_imputed"]] == "True":
                cell = row[col[channel]]
                try:
                    assert math.isfinite(float(cell)), cell
                except ValueError:
                    pytest.fail(f"filled cell {channel} row {r} is {cell!r}, not a number")
    for k in CLASSES:
        assert all(math.isfinite(float(row[col[f"p_{k}"]])) for row in rows)


def test_csv_to_csv_keeps_observed_cells_byte_for_byte(work):
    # Cells as a logger writes them: trailing zeros, exponents, signs, spaces.
    new = work.new
    forms = ["{:.4f}0", "{:.3e}", "{:+.2f}", "{:.6g}", "{:.1f}"]
    a = [forms[i % len(forms)].format(v) for i, v in enumerate(new["a"])]
    a[7], a[8] = "-0", "1E3"
    c = ["" if pd.isna(v) else forms[(i + 2) % len(forms)].format(v) for i, v in enumerate(new["c"])]
    frame = new.assign(a=a, c=c).astype(str)
    path = work.dir / "odd.csv"
    frame.to_csv(path, index=False)
    before = _snapshot(work.dir)
    code, output = invoke(work.predict(path))
    assert code == 0, output
    in_header, in_rows = _raw(path)
    out_header, out_rows = _raw(work.out / "odd_completed.csv")
    assert out_header[: len(in_header)] == in_header and len(out_rows) == len(in_rows)
    for j, name in enumerate(in_header):
        for r, (given, got) in enumerate(zip(in_rows, out_rows)):
            if given[j] != "":
                assert got[j] == given[j], f"column {name} row {r}: {given[j]!r} written as {got[j]!r}"
    assert _snapshot(work.dir) == before


# --- 7. config ---------------------------------------------------------------------------------------------------


def _laughs() -> str:
    """A list value whose aliases expand to 9**9 strings."""
    levels = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    for i in range(1, 9):
        levels.append(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "[" + ", ".join(levels) + "]"


def test_config_in_latin1_is_refused_naming_utf8(trained, tmp_path):
    path = tmp_path / "latin.yaml"
    text = yaml.safe_dump(trained["config"]) + "# Messung am Handgelenk, Größe M\n"
    path.write_bytes(text.encode("latin-1"))
    code, output = invoke(["config", "validate", path])
    assert code == 2, output
    assert "UTF-8" in output and str(path) in output, output


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_config_seed_out_of_range(trained, tmp_path, seed):
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump({**trained["config"], "seed": seed}))
    code, output = invoke(["config", "validate", path])
    assert code == 2, output
    assert "seed" in output and str(seed) in output, output


def test_config_billion_laughs_is_refused_quickly(trained, tmp_path):
    path = tmp_path / "laughs.yaml"
    text = yaml.safe_dump({k: v for k, v in trained["config"].items() if k != "common_modalities"})
    path.write_text(text + f"common_modalities: {_laughs()}\n")
    code, output, seconds = run_cli(["config", "validate", path], tmp_path, timeout=10)
    assert code == 2, output
    assert "common_modalities" in output and len(output) < 5000, output[:5000]


# --- 8. the Python API gives what the CLI writes -----------------------------------------------------------------


def test_run_complete_equals_the_cli_completed_csv(trained, work):
    code, output = invoke(work.predict(work.csv))
    assert code == 0, output
    cli = pd.read_csv(work.out / "new_completed.csv")
    python = tgatunet.load(work.run).complete(pd.read_csv(work.csv))
    assert list(cli.columns) == list(python.columns)
    for column in cli.columns:
        if pd.api.types.is_numeric_dtype(python[column]) and not pd.api.types.is_bool_dtype(python[column]):
            np.testing.assert_allclose(cli[column].to_numpy(float), python[column].to_numpy(float), rtol=0, atol=1e-6,
                                       err_msg=column)
        else:
            assert cli[column].astype(str).tolist() == python[column].astype(str).tolist(), column


def test_run_predict_equals_the_cli_windows_csv(trained, work):
    code, output = invoke(work.predict(work.csv))
    assert code == 0, output
    cli = pd.read_csv(work.out / "new_windows.csv", dtype={"block": str})
    python = tgatunet.load(work.run).predict(pd.read_csv(work.csv))
    assert len(cli) == len(python) > 0
    assert cli["block"].tolist() == python["block"].astype(str).tolist()
    for column in ("first_row", "last_row"):
        assert cli[column].tolist() == python[column].tolist(), column
    assert cli["predicted"].tolist() == python["predicted"].tolist()
    proba = tgatunet.load(work.run).predict_proba(pd.read_csv(work.csv))
    for k in CLASSES:
        np.testing.assert_allclose(cli[f"p_{k}"], proba[f"p_{k}"], rtol=0, atol=1e-6)


# --- 9. many channels ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> dict:
    from tgatunet.data.synth import SynthSpec, write_synthetic

    root = tmp_path_factory.mktemp("many")
    config_path = write_synthetic(
        SynthSpec(sources=2, channels=1000, missing_per_source=10, blocks_per_source=4, block_length=120), root / "data")
    raw = yaml.safe_load(config_path.read_text())
    raw.update(window_size=16, step_size=8, hidden_channels=16, encoder_layers=1, decoder_layers=1,
               transformer_layers=0, batch_size=8, epochs=1, run_dir=str(root / "run"))
    for source in raw["sources"]:
        source["path"] = str(root / "data" / source["path"])
    (root / "config.yaml").write_text(yaml.safe_dump(raw))
    run = tgatunet.train(root / "config.yaml", progress_bar=False)
    recording = root / "rec" / "recording.csv"
    recording.parent.mkdir()
    frame = pd.read_csv(root / "data" / "source_1.csv")
    assert len(frame) == 480
    frame.to_csv(recording, index=False)
    return {"run": run, "recording": recording, "root": root}


def _performance_warnings(caught) -> list[str]:
    return [str(w.message)[:200] for w in caught if issubclass(w.category, pd.errors.PerformanceWarning)]


def test_many_channels_through_the_api_without_performance_warnings(many):
    frame = pd.read_csv(many["recording"])
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        completed = many["run"].complete(frame)
        windows = many["run"].predict(frame)
    seconds = time.monotonic() - start
    assert _performance_warnings(caught) == []
    assert seconds < 60, f"{seconds:.0f} s"
    assert len(completed) == 480 and len(windows) > 0
    assert completed[many["run"].channels].notna().all().all()


def test_many_channels_through_predict_without_performance_warnings(many, tmp_path):
    before = _snapshot(many["recording"].parent)
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, output = invoke(["predict", "--run", many["run"].directory, "--input", many["recording"], "--output", tmp_path / "o"])
    seconds = time.monotonic() - start
    assert code == 0, output
    assert _performance_warnings(caught) == []
    assert seconds < 60, f"{seconds:.0f} s"
    assert len(pd.read_csv(tmp_path / "o" / "recording_completed.csv")) == 480
    assert _snapshot(many["recording"].parent) == before


@pytest.mark.parametrize("fault,advice", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only file system")])
def test_a_full_disk_or_read_only_output_is_a_message_and_leaves_nothing(work, monkeypatch, fault, advice):
    """The write itself fails (as on a full disk or a read-only mount): one message, no torn or temporary file."""

    def failing(frame, header):
        raise OSError(fault, os.strerror(fault), str(work.out / "new_completed.csv"))

    monkeypatch.setattr(tgatunet.data.tables, "csv_bytes", failing)
    code, out = invoke(work.predict(work.csv))
    assert code == 2 and advice in _flat(out) and "Traceback" not in out
    assert _files(work.out) == []


def test_a_frame_whose_categories_change_is_applied_again_and_results_are_the_callers(trained):
    run, frame = trained["run"], trained["new"].assign(tag=pd.Categorical(["a", "b"] * (len(trained["new"]) // 2)))
    assert list(run.complete(frame)["tag"].cat.categories) == ["a", "b"]
    changed = frame.assign(tag=frame["tag"].cat.rename_categories({"b": "z"}))
    assert list(run.complete(changed)["tag"].cat.categories) == ["a", "z"]  # not the earlier frame's result
    run.apply(changed).tables["windows"]["predicted"] = "XXX"  # a caller changing what it got back
    assert (run.predict(changed)["predicted"] != "XXX").all()


def test_apply_step_in_the_runs_config_is_used_and_cannot_leave_rows_uncovered(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained["run"].directory, copy)
    raw = yaml.safe_load((copy / "config.yaml").read_text())
    dense = tgatunet.load(copy).predict(trained["new"])
    (copy / "config.yaml").write_text(yaml.safe_dump({**raw, "apply_step": 2}))
    assert len(tgatunet.load(copy).predict(trained["new"])) > len(dense)
    (copy / "config.yaml").write_text(yaml.safe_dump({**raw, "apply_step": raw["window_size"] + 1}))
    with pytest.raises(RunError, match="apply_step"):
        tgatunet.load(copy)


def test_a_held_lock_on_a_later_input_stops_the_command_before_it_writes_anything(work):
    first, second = work.csv, work.write("second.csv", work.new)
    work.out.mkdir()
    lock = work.out / "second_completed.csv.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    code, out = invoke(work.predict(first, second))
    assert code == 2 and "is writing" in _flat(out)
    assert _files(work.out) == ["second_completed.csv.lock"]  # nothing of the first input either


def test_parquet_with_list_columns_is_written_as_csv(work):
    source = work.write("nested.parquet", work.new.assign(extra=[[1, 2]] * len(work.new)))
    code, out = invoke(work.predict(source, extra=("--format", "csv")))
    assert code == 0, out
    assert len(pd.read_csv(work.out / "nested_completed.csv")) == len(work.new)


def test_a_csv_saved_by_excel_with_a_byte_order_mark_reads_its_first_column(work):
    path = work.dir / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + work.csv.read_bytes())
    code, out = invoke(work.predict(path))
    assert code == 0, out
    assert list(pd.read_csv(work.out / "excel_completed.csv").columns)[0] == work.new.columns[0]
    blocks = pd.read_csv(work.out / "excel_blocks.csv")["block"]
    assert sorted(blocks) == sorted(work.new["subject"].unique())  # the block column was found
