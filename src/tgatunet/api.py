"""The Python API: train a run, load it, apply it to DataFrames and arrays.

The same operations as the command line (``tgatunet train``, ``predict``,
``evaluate``), on objects instead of files, with the same outputs: what
:meth:`Run.complete` returns is what ``tgatunet predict`` writes for the same run
and data.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tgatunet.apply.evaluate import evaluate_run
from tgatunet.apply.outputs import apply_frame
from tgatunet.apply.predict import load_model
from tgatunet.config import Config, config_from_dict
from tgatunet.errors import DataError
from tgatunet.train.run import train as _train
from tgatunet.train.rundir import RunDir


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's start-up notes (devices found, tips) at WARNING level while training; restored after."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.distributed")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class Run:
    """A trained run: its model, channels and classes, applied to new data.

    Example::

        import tgatunet
        run = tgatunet.load("runs/basicmotions")
        completed = run.complete(df)          # df: one row per time step, columns named as run.channels
        windows = run.predict(df)             # one row per window: block, first_row, last_row, predicted
    """

    def __init__(self, run_dir: str | Path, device: torch.device | str | None = None, compile: bool | None = None) -> None:
        self.directory = Path(run_dir)
        self._run = RunDir(self.directory)
        self._model = load_model(self._run, torch.device(device) if device else None, compile)
        self.config: Config = self._run.read_config()

    @property
    def channels(self) -> list[str]:
        """The modality channels the model reads and completes, in its order."""
        return list(self._model.channels)

    @property
    def classes(self) -> list[str]:
        """The class names, in the order of the probability columns."""
        return list(self._model.classes)

    def __repr__(self) -> str:
        return f"Run('{self.directory}', channels={self.channels}, classes={self.classes})"

    def _apply(self, frame: pd.DataFrame, block_col: str | None, fill: str) -> dict[str, pd.DataFrame]:
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(frame).__name__}; for arrays use complete(values, channels=[...]).")
        if block_col is None and self.config.data.block_col in frame.columns:
            block_col = self.config.data.block_col
        tables, _ = apply_frame(self._model, frame, block_col=block_col, fill=fill)
        return tables

    def complete(self, data: pd.DataFrame | np.ndarray, channels: list[str] | None = None, block_col: str | None = None,
                 fill: str = "all") -> pd.DataFrame | np.ndarray:
        """The data with its missing values of the run's channels filled.

        A DataFrame gives the completed DataFrame (rows in order, observed cells unchanged,
        ``<channel>_imputed`` flags, per-row ``predicted`` and ``p_<class>``). An array
        ``[N, C]`` (one recording) or ``[W, T, C]`` (windows, each on its own), with NaN where
        not observed and ``channels`` naming its last axis, gives the completed array.

        Example::

            filled = run.complete(values, channels=["acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z"])
        """
        if isinstance(data, np.ndarray):
            return self._complete_array(data, channels, fill)
        return self._apply(data, block_col, fill)["completed"]

    def _complete_array(self, values: np.ndarray, channels: list[str] | None, fill: str) -> np.ndarray:
        if channels is None or len(channels) != values.shape[-1] or values.ndim not in (2, 3):
            raise DataError(
                f"an array to complete is [N, C] or [W, T, C] with channels=[...] naming its last axis; got shape "
                f"{values.shape} and channels {channels}. The run's channels are {self.channels}."
            )
        frame = pd.DataFrame(values.reshape(-1, values.shape[-1]).astype(np.float64), columns=list(channels))
        if values.ndim == 3:  # every window its own block
            frame.insert(0, "_window", np.repeat(np.arange(values.shape[0]), values.shape[1]).astype(str))
        completed = self._apply(frame, "_window" if values.ndim == 3 else None, fill)["completed"]
        return completed[list(channels)].to_numpy(dtype=np.float64).reshape(values.shape)

    def predict(self, frame: pd.DataFrame, block_col: str | None = None) -> pd.DataFrame:
        """One row per window: ``block``, ``first_row``, ``last_row`` and its ``predicted`` class.

        Example::

            run.predict(df)["predicted"].value_counts()
        """
        return self._apply(frame, block_col, "all")["windows"][["block", "first_row", "last_row", "predicted"]]

    def predict_proba(self, frame: pd.DataFrame, block_col: str | None = None) -> pd.DataFrame:
        """One row per window: ``block``, ``first_row``, ``last_row`` and a ``p_<class>`` probability per class.

        Example::

            run.predict_proba(df).filter(like="p_").mean()
        """
        windows = self._apply(frame, block_col, "all")["windows"]
        return windows.drop(columns="predicted")

    def evaluate(self) -> dict[str, Any]:
        """Completion and classification on the run's test blocks (reads its training sources), as ``metrics.json``.

        Example::

            run.evaluate()["classification"]["accuracy"]
        """
        return evaluate_run(self.directory)


def train(
    config: Config | dict | str | Path,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress_bar: bool = True,
) -> Run:
    """Train a run and return it, loaded.

    ``config``: a :class:`~tgatunet.config.Config`, a YAML file, or a dict of the file's keys,
    whose sources may give a DataFrame instead of a file (``{"name": ..., "frame": df, "have": [...]}``;
    it is saved into the run directory). Relative paths in a dict resolve against the working directory.

    Example::

        run = tgatunet.train({"sources": [{"name": "watch", "frame": df, "have": ["acc_x"]}],
                              "label_col": "activity", "block_col": "recording"}, run_dir="runs/mine")
    """
    if isinstance(config, dict):
        config = config_from_dict(config, origin="config", config_dir=Path.cwd())
    with _quiet_lightning():
        run = _train(config, resume=resume, overwrite=overwrite, run_dir=run_dir, progress_bar=progress_bar)
    return Run(run.root)


def load(run_dir: str | Path, device: torch.device | str | None = None, compile: bool | None = None) -> Run:
    """A trained run from its directory (which alone is enough: the training files are not read).

    Example::

        run = tgatunet.load("runs/basicmotions")
        run.channels, run.classes
    """
    return Run(run_dir, device, compile)
