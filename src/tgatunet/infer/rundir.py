"""The run directory: where a run's config, data description, checkpoints, metrics and plots live.

README.md (Command line) describes its files; :class:`RunDir` names their paths and :data:`OWNED` those tgatunet
writes. ``.lock`` is held while a training runs (its process id and host). A folder is only ever cleared when it
carries the marker ``.tgatunet-run``, and then only of the files the marker lists as written by tgatunet; anything else
in it (a file of yours in ``plots/`` or ``completed/``), and any configured source or config file, is left alone.
"""

from __future__ import annotations

import json
import logging
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tgatunet.config import Config, config_from_dict
from tgatunet.data.normalize import ChannelStats
from tgatunet.errors import RunError, TgatunetError
from tgatunet.files import atomic_write_text, output_lock
from tgatunet.infer.intervals import IntervalCalibration

log = logging.getLogger(__name__)

MARKER = ".tgatunet-run"
LOCK = ".lock"
# What tgatunet writes into a run directory: all that --overwrite removes (the graph cache stays).
OWNED = ("config.yaml", "data.json", "plan.json", "calibration.json", "checkpoints", "logs", "metrics.json", "plots", "sources", "completed", "bench",
         "ablation", "seeds")


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


@dataclass(frozen=True)
class RunDir:
    """Paths, readers and ownership of one run directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())

    config_path = property(lambda self: self.root / "config.yaml")
    data_path = property(lambda self: self.root / "data.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    best_checkpoint = property(lambda self: self.checkpoints / "best.ckpt")
    last_checkpoint = property(lambda self: self.checkpoints / "last.ckpt")
    metrics_path = property(lambda self: self.root / "metrics.json")
    calibration_path = property(lambda self: self.root / "calibration.json")
    plots = property(lambda self: self.root / "plots")
    logs = property(lambda self: self.root / "logs")
    graph_cache = property(lambda self: self.root / "graph_cache")
    marker = property(lambda self: self.root / MARKER)

    # --- ownership ----------------------------------------------------------------------------
    def holds_run(self) -> bool:
        """Whether the folder holds a run that got as far as a checkpoint (a crashed first start does not)."""
        return self.marker.is_file() and (self.last_checkpoint.is_file() or self.best_checkpoint.is_file())

    def claim(self, overwrite: bool, protected: list[Path]) -> None:
        """Make the folder this run's: new, empty, a crashed first start, or (``overwrite``) an earlier run.

        ``protected``: files that must survive (the config and the sources); a folder holding one is refused.
        """
        self.check_folder()
        if self.holds_run() and not overwrite:
            raise RunError(f"run directory '{self.root}' already holds a run. Continue it with --resume (in Python resume=True), "
                           "start over with --overwrite (overwrite=True), or set another run_dir.")
        owned = [self.root / name for name in OWNED if (self.root / name).exists()]
        kept = [p for p in protected if any(_inside(p, o) for o in owned)]
        if kept:
            raise RunError(f"run directory '{self.root}' holds {kept[0]}, an input of this run; choose another run_dir.")
        self._remove_written(owned)
        atomic_write_text(self.marker, json.dumps({"tgatunet": "run directory", "written": []}))

    def _written(self) -> set[str] | None:
        """The files tgatunet wrote here (relative paths), from the marker; None for a marker without the list."""
        try:
            written = json.loads(self.marker.read_text(encoding="utf-8")).get("written")
        except (OSError, ValueError, AttributeError):
            return None
        return set(written) if isinstance(written, list) else None

    def note_written(self, *paths: Path) -> None:
        """Add ``paths`` (files, or folders: every file in them) to the marker's list of what tgatunet wrote here,
        which is all that ``--overwrite`` deletes."""
        files = [f for p in map(Path, paths) for f in ([p] if p.is_file() else sorted(p.rglob("*")) if p.is_dir() else [])]
        new = {str(f.relative_to(self.root)) for f in files if f.is_file() and _inside(f, self.root)}
        written = self._written()
        if written is not None and not new <= written:
            atomic_write_text(self.marker, json.dumps({"tgatunet": "run directory", "written": sorted(written | new)}))

    def _remove_written(self, owned: list[Path]) -> None:
        """Delete the files of ``owned`` that tgatunet wrote, and folders left empty; anything else stays."""
        written = self._written()
        if written is None and owned:
            raise RunError(f"'{self.root}' was written by an older tgatunet that did not list its files, so --overwrite cannot tell "
                           "them from yours. Delete the folder yourself, or train into another run_dir.")
        others = []
        for entry in owned:
            for path in sorted([entry] if not entry.is_dir() else entry.rglob("*"), reverse=True):
                if path.is_dir() and not path.is_symlink():
                    with contextlib.suppress(OSError):
                        path.rmdir()  # only when empty
                elif str(path.relative_to(self.root)) in written:
                    path.unlink()
                else:
                    others.append(path)
            if entry.is_dir() and not any(entry.iterdir()):
                entry.rmdir()
        if others:
            log.warning("--overwrite kept %d file(s) that tgatunet did not write, e.g. '%s'.", len(others), others[0])

    def check_folder(self) -> None:
        """A clear error unless the run directory is new, empty, or marked as a run; then it exists and is writable."""
        if self.root.exists() and not self.root.is_dir():
            raise RunError(f"run directory '{self.root}' is a file; give run_dir (or --run-dir) a folder.")
        present = {p.name for p in self.root.iterdir()} if self.root.is_dir() else set()
        foreign = sorted(present - {"graph_cache", LOCK})
        if foreign and not self.marker.is_file():
            raise RunError(f"'{self.root}' is not empty and is not a tgatunet run directory (no {MARKER} marker): it holds "
                           f"{foreign[:5]}. Nothing there is deleted; choose a new or empty folder for the run.")

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as err:
            raise RunError(f"cannot write to run directory '{self.root}': {err.strerror}. Choose a folder you can write.") from None

    def lock(self) -> contextlib.AbstractContextManager:
        """Held by a training while it runs: a second one of the same directory is refused, naming the process."""
        return output_lock(self.root, self.root / LOCK)

    # --- reading ------------------------------------------------------------------------------
    def require_trained(self) -> None:
        """Fail with a clear message unless the run has a config, its data description and a checkpoint."""
        if self.root.is_file():
            raise RunError(f"'{self.root}' is a file, not a run directory; give --run the folder a training wrote.")
        if not self.root.is_dir():
            raise RunError(f"run directory '{self.root}' does not exist. Train first: tgatunet train --config FILE")
        for path in (self.config_path, self.data_path):
            if not path.is_file():
                raise RunError(f"'{self.root}' is not a complete run: '{path.name}' is missing. Train it again.")
        if not (self.best_checkpoint.is_file() or self.last_checkpoint.is_file()):
            raise RunError(f"run '{self.root}' has no checkpoint yet; train it (or continue it with --resume) first.")

    def inference_checkpoints(self) -> list[Path]:
        """The checkpoints to load a model from, best first."""
        return [p for p in (self.best_checkpoint, self.last_checkpoint) if p.is_file()]

    def write_config(self, config: Config) -> None:
        atomic_write_text(self.config_path, yaml.safe_dump(config.to_dict(), sort_keys=False))
        self.note_written(self.config_path)

    def read_config(self) -> Config:
        try:
            raw = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
            return config_from_dict(raw, origin=str(self.config_path), config_dir=self.root)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, TgatunetError) as err:
            raise RunError(f"the run's config '{self.config_path}' cannot be read ({str(err).splitlines()[0]}); "
                           "it is damaged: train the run again.") from None

    def write_data(self, info: dict[str, Any]) -> None:
        atomic_write_text(self.data_path, json.dumps(info, indent=1))
        self.note_written(self.data_path)

    def read_data(self) -> tuple[ChannelStats, dict[str, str], dict[str, Any]]:
        """Normalisation, block splits and the rest of ``data.json``."""
        try:
            info = json.loads(self.data_path.read_text(encoding="utf-8"))
            return ChannelStats.from_dict(info["stats"]), info["block_splits"], info
        except FileNotFoundError:
            raise RunError(f"'{self.data_path}' is missing: '{self.root}' is not a complete run. Train it again.") from None
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            raise RunError(f"'{self.data_path}' is damaged ({type(err).__name__}: {err}); train the run again.") from None

    def read_calibration(self) -> tuple[float, IntervalCalibration | None, list[dict[str, Any]]]:
        """What training measured on the validation recordings: the temperature that divides the model's logits (1.0:
        none fitted, or fitting did not help), the completion intervals' calibration (None: none) and the verdict on
        each completed channel."""
        try:
            calibration = json.loads(self.calibration_path.read_text(encoding="utf-8"))
            intervals = calibration.get("intervals")
            return (float(calibration["temperature"]), intervals and IntervalCalibration.from_dict(intervals),
                    list(calibration.get("channels", [])))
        except FileNotFoundError:
            return 1.0, None, []
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise RunError(f"'{self.calibration_path}' is damaged ({err}); train the run again, or delete the file to apply "
                           "it without calibrated probabilities and intervals.") from None

    def read_metrics(self) -> dict[str, Any]:
        try:
            return json.loads(self.metrics_path.read_text(encoding="utf-8")) if self.metrics_path.is_file() else {}
        except (OSError, ValueError):
            log.warning("'%s' is damaged; starting it afresh.", self.metrics_path)
            return {}

    def update_metrics(self, section: str, values: Any) -> None:
        """Replace one top-level section of ``metrics.json``, keeping the others."""
        metrics = self.read_metrics()
        metrics[section] = values
        atomic_write_text(self.metrics_path, json.dumps(metrics, indent=2, default=float))
        self.note_written(self.metrics_path)
