"""Bad input, broken runs, hostile folders: every case ends in a clear message or in a correct result.

Each case runs one command line in a fresh workspace (a data folder with the
sources and the config, and a trained run) and checks: no traceback, the exit
code and message expected, and every input file outside the run directory
byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import base_config, make_frames, repoint_copy
from typer.testing import CliRunner

from tgatunet.cli import app


@dataclass
class Space:
    root: Path
    data: Path  # sources and the config: must never change
    run: Path
    config: Path

    def cfg(self, drop: tuple[str, ...] = (), **changes) -> Path:
        raw = {k: v for k, v in {**yaml.safe_load(self.config.read_text()), **changes}.items() if k not in drop}
        path = self.data / f"variant_{len(list(self.data.glob('variant_*')))}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    def source(self, name: str, frame: pd.DataFrame, suffix: str = ".csv") -> Path:
        path = self.data / f"{name}{suffix}"
        frame.to_parquet(path, index=False) if suffix == ".parquet" else frame.to_csv(path, index=False)
        return path

    def with_path(self, name: str, path: Path) -> Path:
        """A config whose source ``name`` reads ``path``."""
        sources = yaml.safe_load(self.config.read_text())["sources"]
        return self.cfg(sources=[{**src, "path": str(path)} if src["name"] == name else src for src in sources])

    def with_source(self, frame: pd.DataFrame, index: int = 1, suffix: str = ".csv", **changes) -> Path:
        path = self.source(f"altered_{index}", frame, suffix)
        raw = yaml.safe_load(self.config.read_text())
        raw["sources"][index]["path"] = str(path)
        raw.update(changes)
        out = self.data / "altered.yaml"
        out.write_text(yaml.safe_dump(raw))
        return out


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    space = _layout(tmp_path_factory.mktemp("template"))
    result = CliRunner().invoke(app, ["train", "--config", str(space.config)])
    assert result.exit_code == 0, result.output
    return space.root


def _layout(root: Path) -> Space:
    data = root / "data"
    data.mkdir(parents=True)
    paths = {}
    for name, frame in make_frames(blocks=10, rows=32).items():
        paths[name] = data / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    config = data / "config.yaml"
    config.write_text(yaml.safe_dump({**base_config(paths), "epochs": 1, "run_dir": str(root / "run")}))
    return Space(root, data, root / "run", config)


@pytest.fixture
def space(trained_run, tmp_path) -> Space:
    shutil.copytree(trained_run, tmp_path / "w")
    root = tmp_path / "w"
    repoint_copy(root)
    return Space(root, root / "data", root / "run", root / "data" / "config.yaml")


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def frames() -> dict[str, pd.DataFrame]:
    return make_frames(blocks=10, rows=32)


# --- the cases: (setup -> command line, expected exit code, text the output must hold) ---------------------

Case = Callable[[Space], list[str]]
CASES: dict[str, tuple[Case, int, str]] = {}


def case(name: str, code: int, text: str):
    def register(fn: Case) -> Case:
        CASES[name] = (fn, code, text)
        return fn
    return register


def train(s: Space, config: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(config), *extra]


def validate(config: Path) -> list[str]:
    return ["config", "validate", str(config)]


# config mistakes
case("unknown key", 2, "Did you mean 'batch_size'")(lambda s: validate(s.cfg(batchsize=4)))
case("wrong type", 2, "batch_size")(lambda s: validate(s.cfg(batch_size="big")))
case("out of range", 2, "dropout")(lambda s: validate(s.cfg(dropout=1.5)))
case("heads do not divide width", 2, "divisible")(lambda s: validate(s.cfg(hidden_channels=15, attention_heads=2)))
case("need channel nobody has", 2, "Did you mean 'c'")(
    lambda s: validate(s.cfg(sources=[{**src, "need": ["cc"]} if src.get("need") else src
                                      for src in yaml.safe_load(s.config.read_text())["sources"]])))
case("have and need overlap", 2, "both 'have' and 'need'")(
    lambda s: validate(s.cfg(sources=[{**src, "need": ["c"]} if src["name"] == "full" else src
                                      for src in yaml.safe_load(s.config.read_text())["sources"]])))
case("duplicate source names", 2, "unique")(
    lambda s: validate(s.cfg(sources=[{**src, "name": "one"} for src in yaml.safe_load(s.config.read_text())["sources"]])))
case("no sources", 2, "sources")(lambda s: validate(s.cfg(sources=[])))
case("label_col missing from config", 2, "key 'label_col' is required")(lambda s: validate(s.cfg(drop=("label_col",))))
case("not YAML", 2, "not valid YAML")(lambda s: (s.data / "bad.yaml").write_text("a: [1, 2\n") and validate(s.data / "bad.yaml"))
case("YAML list", 2, "expected a mapping")(lambda s: (s.data / "list.yaml").write_text("- 1\n- 2\n") and validate(s.data / "list.yaml"))
case("config file missing", 2, "not found")(lambda s: validate(s.data / "nope.yaml"))
case("source key typo", 2, "Did you mean 'have'")(
    lambda s: validate(s.cfg(sources=[{("haves" if k == "have" else k): v for k, v in src.items()}
                                      for src in yaml.safe_load(s.config.read_text())["sources"]])))
case("source file missing", 2, "not found")(
    lambda s: validate(s.cfg(sources=[{**src, "path": "gone.csv"} for src in yaml.safe_load(s.config.read_text())["sources"]])))

# bad source files
case("label column missing in file", 2, "label_col 'label' is not a column")(
    lambda s: validate(s.with_source(frames()["partial"].drop(columns="label"))))
case("block column missing in file", 2, "block_col 'subject'")(
    lambda s: validate(s.with_source(frames()["partial"].drop(columns="subject"))))
case("modality column missing, other case", 2, "Did you mean 'A' for 'a'")(
    lambda s: validate(s.with_source(frames()["partial"].rename(columns={"a": "A"}))))
case("text in a modality cell", 2, "row 5 holds 'oops'")(
    lambda s: validate(s.with_source(frames()["partial"].astype({"a": object}).assign(a=lambda f: f["a"].where(f.index != 5, "oops")))))
case("inf in a cell", 2, "beyond float32's range")(
    lambda s: validate(s.with_source(frames()["partial"].assign(a=lambda f: f["a"].where(f.index != 7, np.inf)))))
case("value beyond float32", 2, "row 9 holds 1e+39")(
    lambda s: validate(s.with_source(frames()["partial"].assign(a=lambda f: f["a"].where(f.index != 9, 1e39)))))
case("sentinel 1e30 squashes a channel", 0, "dominate its normalisation")(
    lambda s: validate(s.with_source(frames()["partial"].assign(a=lambda f: f["a"].where(f.index % 40 != 9, 1e30)))))
case("header only", 2, "no rows")(lambda s: validate(s.with_source(frames()["partial"].iloc[:0])))
case("unsupported suffix", 2, "use a .csv or .parquet")(
    lambda s: (s.data / "x.xlsx").write_bytes(b"PK") and validate(s.with_path("partial", s.data / "x.xlsx")))
case("duplicated header", 2, "more than once")(
    lambda s: (s.data / "dupe.csv").write_text("subject,label,a,a,b\nx,slow,1,2,3\n") and validate(s.with_path("partial", s.data / "dupe.csv")))
case("empty block id", 2, "block_col 'subject' is empty at row 3")(
    lambda s: validate(s.with_source(frames()["partial"].assign(subject=lambda f: f["subject"].where(f.index != 3, "")))))
case("no labels anywhere", 2, "no training window has a label")(lambda s: validate(_unlabelled(s)))
case("one class only", 2, "at least two classes")(lambda s: validate(_unlabelled(s, "walk")))
case("a single block", 2, "validation")(
    lambda s: validate(s.cfg(sources=[{"name": "full", "path": str(s.source("one", frames()["full"].assign(subject="b0"))),
                                       "have": ["c"]}])))
case("window longer than every block", 2, "no window left")(lambda s: validate(s.cfg(window_size=64)))
case("bad split values", 2, "allowed values are train, val, test")(lambda s: validate(_split_column(s, "later")))
case("a block in two splits", 2, "several splits")(lambda s: validate(_split_column(s, None)))
case("binary garbage as CSV", 2, "cannot read")(
    lambda s: (s.data / "garbage.csv").write_bytes(os.urandom(2000)) and validate(s.with_path("partial", s.data / "garbage.csv")))
case("corrupt parquet", 2, "cannot read")(
    lambda s: (s.data / "broken.parquet").write_bytes(b"PAR1" + os.urandom(500)) and validate(s.with_path("partial", s.data / "broken.parquet")))
case("a need column with values", 0, "listed in 'need'")(lambda s: validate(s.with_source(frames()["full"], 1)))
case("a have column with nothing in it", 2, "no observed value at all")(
    lambda s: validate(s.with_source(frames()["full"].assign(c=np.nan), 0)))

# run directories
case("overwrite inside the data folder", 2, "not a tgatunet run directory")(lambda s: train(s, s.config, "--run-dir", str(s.data), "--overwrite"))
case("run-dir is the data folder", 2, "Nothing there is deleted")(lambda s: train(s, s.config, "--run-dir", str(s.data)))
case("run-dir is a file", 2, "is a file")(lambda s: train(s, s.config, "--run-dir", str(s.data / "full.csv")))
case("train again over a finished run", 2, "already holds a run")(lambda s: train(s, s.config))
case("locked by a live training", 2, f"process (pid {os.getpid()})")(
    lambda s: (s.run / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename})) and train(s, s.config, "--overwrite"))
case("stale lock taken over", 0, "run directory")(
    lambda s: (s.run / ".lock").write_text(json.dumps({"pid": 2**22 + 11, "host": os.uname().nodename})) and train(s, s.config, "--overwrite"))
case("overwrite keeps what is not tgatunet's", 0, "run directory")(
    lambda s: (s.run / "my_notes.txt").write_text("mine") and train(s, s.config, "--overwrite"))
case("resume without a checkpoint", 2, "nothing to resume")(
    lambda s: (s.run / "checkpoints" / "last.ckpt").unlink() or train(s, s.config, "--resume"))
case("resume from a truncated checkpoint", 2, "is damaged")(
    lambda s: _truncate(s.run / "checkpoints" / "last.ckpt") or train(s, s.config, "--resume"))
case("resume from an empty checkpoint", 2, "is damaged")(
    lambda s: (s.run / "checkpoints" / "last.ckpt").write_bytes(b"") or train(s, s.config, "--resume"))
case("resume with another model", 2, "cannot resume")(lambda s: train(s, s.cfg(hidden_channels=32), "--run-dir", str(s.run), "--resume"))
case("resume with changed sources", 2, "--allow-changed-data")(
    lambda s: train(s, _edit_source(s), "--resume"))
case("resume with changed sources, allowed", 0, "run directory")(
    lambda s: train(s, _edit_source(s), "--resume", "--allow-changed-data"))
case("crashed first start", 0, "run directory")(
    lambda s: shutil.rmtree(s.run / "checkpoints") or train(s, s.config))
case("unwritable run directory", 2, "cannot write")(lambda s: train(s, s.config, "--run-dir", str(s.data / "full.csv" / "run")))
case("evaluate a missing run", 2, "does not exist")(lambda s: ["evaluate", "--run", str(s.root / "nope")])
case("best checkpoint unreadable: last is used", 0, "cannot be read; using")(
    lambda s: _truncate(s.run / "checkpoints" / "best.ckpt") or ["evaluate", "--run", str(s.run)])
case("no checkpoint readable", 2, "no checkpoint of run")(
    lambda s: [p.write_bytes(b"junk") for p in (s.run / "checkpoints").glob("*.ckpt")] and ["evaluate", "--run", str(s.run)])
case("corrupt data.json", 2, "data.json' is damaged")(lambda s: (s.run / "data.json").write_text("{") and ["evaluate", "--run", str(s.run)])
case("missing data.json", 2, "data.json' is missing")(lambda s: (s.run / "data.json").unlink() or ["complete", "--run", str(s.run)])
case("corrupt run config", 2, "cannot be read")(lambda s: (s.run / "config.yaml").write_text("a: [") and ["complete", "--run", str(s.run)])
case("run is a file", 2, "is a file, not a run directory")(
    lambda s: ["predict", "--run", str(s.data / "full.csv"), "--input", str(s.data / "full.csv")])

# applying a run
case("predict a missing file", 2, "not found")(lambda s: ["predict", "--run", str(s.run), "--input", str(s.data / "nope.csv")])
case("predict a file sharing no channel", 2, "none of the run's channels")(
    lambda s: ["predict", "--run", str(s.run), "--input", str(s.source("other", pd.DataFrame({"x": [1.0, 2.0]})))])
case("predict a non-numeric channel", 2, "not numeric")(
    lambda s: ["predict", "--run", str(s.run), "--input", str(s.source("words", frames()["full"].assign(b="word")))])
case("predict with a missing block column", 2, "block column 'rec'")(
    lambda s: ["predict", "--run", str(s.run), "--input", str(s.data / "full.csv"), "--block-col", "rec", "--output", str(s.root / "o")])
case("predict a header-only file", 2, "has no data rows")(
    lambda s: ["predict", "--run", str(s.run), "--input", str(s.source("empty", frames()["full"].iloc[:0])), "--output", str(s.root / "o")])
case("predict over another input", 2, "overwrite an input")(lambda s: _clashing_inputs(s))
case("complete onto a source", 2, "overwrite an input")(lambda s: _source_named_like_an_output(s))
case("complete an unknown source", 2, "unknown source")(lambda s: ["complete", "--run", str(s.run), "--source", "zz"])
case("predict with a bad format", 2, "csv")(lambda s: ["predict", "--run", str(s.run), "--input", str(s.data / "full.csv"), "--format", "xls"])
case("predict keeps odd cells", 0, "rows")(
    lambda s: ["predict", "--run", str(s.run), "--input", str(s.source("odd", frames()["full"].assign(
        note=["000", "NA", "None", "n/a", "null", "01", "1", ""] * 40))), "--output", str(s.root / "o")])

# other commands
case("cache info names neither", 2, "--config")(lambda s: ["cache", "info"])
case("cache build of a temporal graph", 2, "graph_type: knn")(lambda s: ["cache", "build", "--config", str(s.config)])
case("data prepare into a foreign folder", 2, "not a tgatunet store")(lambda s: ["data", "prepare", "--config", str(s.config), "--out", str(s.data)])
case("bench a broken config", 2, "Did you mean")(lambda s: ["bench", "--config", str(s.cfg(windowsize=8))])
case("hardware with a broken config", 2, "Did you mean")(lambda s: ["hardware", "--config", str(s.cfg(epoch=3))])
case("evaluate an unknown ablation", 2, "need-update")(lambda s: ["evaluate", "--run", str(s.run), "--ablation", "dropout"])


def _unlabelled(s: Space, label: str = "") -> Path:
    """Every row of both sources labelled ``label`` (empty: unlabelled)."""
    sources = yaml.safe_load(s.config.read_text())["sources"]
    paths = {src["name"]: s.source(f"label{label}_{src['name']}", frames()[src["name"]].assign(label=label)) for src in sources}
    return s.cfg(sources=[{**src, "path": str(paths[src["name"]])} for src in sources])


def _split_column(s: Space, value: str | None) -> Path:
    """Both sources with a split column: every cell ``value``, or (None) one block's rows in two splits."""
    sources = yaml.safe_load(s.config.read_text())["sources"]
    paths = {}
    for src in sources:
        frame = frames()[src["name"]]
        frame["split"] = value if value is not None else np.where(np.arange(len(frame)) % 32 < 16, "train", "test")
        paths[src["name"]] = s.source(f"split_{src['name']}", frame)
    return s.cfg(split_col="split", sources=[{**src, "path": str(paths[src["name"]])} for src in sources])


def _clashing_inputs(s: Space) -> list[str]:
    # Predicting x.csv writes x_completed.csv next to it: the second input.
    shutil.copy(s.data / "full.csv", s.data / "x.csv")
    shutil.copy(s.data / "full.csv", s.data / "x_completed.csv")
    return ["predict", "--run", str(s.run), "--input", str(s.data / "x.csv"), "--input", str(s.data / "x_completed.csv")]


def _source_named_like_an_output(s: Space) -> list[str]:
    # Source "partial" reads full_completed.csv: completing source "full" into the data folder would replace it.
    (s.data / "partial.csv").rename(s.data / "full_completed.csv")
    _point_source(s, "partial", s.data / "full_completed.csv")
    return ["complete", "--run", str(s.run), "--output", str(s.data)]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _edit_source(s: Space) -> Path:
    frame = pd.read_csv(s.data / "partial.csv")
    frame.loc[4, "a"] += 0.5
    frame.to_csv(s.data / "partial.csv", index=False)
    return s.config


def _point_source(s: Space, name: str, path: Path) -> None:
    for config in (s.config, s.run / "config.yaml"):
        raw = yaml.safe_load(config.read_text())
        for source in raw["sources"]:
            if source["name"] == name:
                source["path"] = str(path)
        config.write_text(yaml.safe_dump(raw))


def test_there_are_at_least_60_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", list(CASES))
def test_case(name, space):
    setup, code, text = CASES[name]
    args = setup(space)
    before = _digests(space.data)  # the inputs as the case left them, before the command runs
    result = CliRunner().invoke(app, args)
    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), f"traceback:\n{output}\n{result.exception!r}"
    assert "Traceback" not in output
    assert result.exit_code == code, output
    assert text in " ".join(output.split()), output
    assert _digests(space.data) == before, "a file outside the run directory changed"
