"""The Python API: train a run, load it, apply it to DataFrames and arrays.

The same operations as the command line (``tgatunet train``, ``predict``, ``evaluate``), on objects instead of files,
with the same outputs: what :meth:`Run.complete` returns is what ``tgatunet predict`` writes for the same run and data.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tgatunet.config import Config, config_from_dict
from tgatunet.data.timeline import Timing
from tgatunet.errors import ConfigError, DataError, RunError
from tgatunet.infer.outputs import Applied, apply_frame, asked_coverage, complete_array
from tgatunet.infer.predict import given_timing
from tgatunet.infer.rundir import RunDir
from tgatunet.infer.trained import load_trained


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


FILLS = ("all", "need", "grid")


def _content_key(frame: pd.DataFrame) -> tuple:
    """What identifies a frame's content (columns, dtypes with a categorical's categories, index, cells) for reusing
    its result; a frame pandas cannot hash (cells holding lists) gets a key of its own."""
    try:
        cells = pd.util.hash_pandas_object(frame, index=True).to_numpy()
    except TypeError:
        return (id(frame), object())
    return (tuple(map(str, frame.columns)), tuple(map(repr, frame.dtypes)), hashlib.sha256(cells.tobytes()).hexdigest())


def _numeric_array(values: np.ndarray, channels: list[str] | None, run_channels: list[str]) -> np.ndarray:
    """``values`` as float64, checked: ``[N, C]`` or ``[W, T, C]`` with ``channels`` naming the last axis."""
    if channels is None or values.ndim not in (2, 3) or len(channels) != values.shape[-1] or values.size == 0:
        raise DataError(f"an array to complete is [N, C] or [W, T, C] with channels=[...] naming its last axis, and not empty; "
                        f"got shape {values.shape} and channels {channels}. The run's channels are {run_channels}.")
    if not set(channels) & set(run_channels):
        raise DataError(f"the array's channels {channels} include none of the run's channels {run_channels}; name its last "
                        "axis with the channel names the run was trained on.")
    try:
        values = values.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"the array to complete holds values that are not numbers ({err}); give a float array "
                        "with NaN where a value was not observed.") from None
    if np.isinf(values).any():
        where = tuple(int(i) for i in np.argwhere(np.isinf(values))[0])
        raise DataError(f"the array to complete holds {values[where]} at index {where}; a value not observed is NaN, "
                        "not infinite. Replace it (values = np.where(np.isinf(values), np.nan, values)).")
    return values


class Run:
    """A trained run: its model, channels and classes, applied to new data.

    Example::

        import tgatunet
        run = tgatunet.load("runs/basicmotions")
        completed = run.complete(df)          # df: one row per time step, columns named as run.channels
        windows = run.predict(df)             # one row per window: block, first_row, last_row, predicted
    """

    def __init__(self, run_dir: str | Path, device: torch.device | str | None = None, compile: bool | None = None) -> None:
        if not isinstance(run_dir, (str, os.PathLike)):
            raise RunError(f"a run is loaded from its directory, a str or Path, not {type(run_dir).__name__}: "
                           "tgatunet.load('runs/my_run').")
        self.directory = Path(run_dir).expanduser()
        self._run = RunDir(self.directory)
        self._model = load_trained(self._run, torch.device(device) if device else None, compile).windowed()
        self.config: Config = self._run.read_config()
        self.sample_rate_hz: float | None = self._run.read_data()[2].get("sample_rate_hz")  # the model's grid; None: rows are steps
        self._last: tuple[tuple, Applied] | None = None  # the latest frame applied (its content key), and the result

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

    def channel_report(self) -> pd.DataFrame:
        """The verdict on each completed channel, measured on the run's validation recordings: per channel and pattern
        (``need``: the whole channel missing; ``gaps``: drop-outs; ``points``: single values) the completion's MAE,
        the training mean's MAE, Pearson r, the intervals' coverage and width (normalised units), and whether the
        completion was better than the mean (by more than 5%).

        Example::

            report = run.channel_report()
            report[report.verdict == "no better than the mean"]
        """
        return pd.DataFrame(list(self._model.report), columns=["channel", "pattern", "values", "mae", "mean_fill_mae", "mae_vs_mean",
                                                             "pearson", "coverage", "width", "interval_score", "verdict"])

    def apply(self, frame: pd.DataFrame, block_col: str | None = None, fill: str = "all", interval: bool | float = False,
              time_col: str | None = None, rate_hz: float | None = None, max_gap_s: float | None = None) -> Applied:
        """One pass of the model over ``frame``: its ``tables`` ``completed``, ``windows`` and ``blocks``, and what
        was filled. :meth:`complete`, :meth:`predict` and :meth:`predict_proba` are views of it: asked of the same
        frame (same content) one after the other, the model runs once. ``interval``, ``time_col``, ``rate_hz``,
        ``max_gap_s``: as for :meth:`complete`.

        Example::

            applied = run.apply(df)
            applied.tables["completed"], applied.tables["windows"], applied.filled
        """
        if fill not in FILLS:
            raise DataError(f"fill must be one of {list(FILLS)}, not {fill!r}.")
        applied = self._applied(frame, block_col, fill, interval, Timing(time_col, rate_hz, max_gap_s))
        return replace(applied, tables={name: table.copy() for name, table in applied.tables.items()})

    def _applied(self, frame: pd.DataFrame, block_col: str | None, fill: str, interval: bool | float | None = None,
                 timing: Timing | None = None) -> Applied:
        """The pass of :meth:`apply`, kept for the next view of the same frame (the caller gets copies)."""
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(frame).__name__}; for arrays use complete(values, channels=[...]).")
        if block_col is None and self.config.data.block_col in frame.columns:
            block_col = self.config.data.block_col
        coverage = asked_coverage(interval, self.config.evaluation.interval_coverage)
        timing = given_timing(timing or Timing(), self.config, [str(c) for c in frame.columns], self.sample_rate_hz)
        key = (_content_key(frame), block_col, fill, coverage, timing)
        if self._last is None or self._last[0] != key:
            self._last = (key, apply_frame(self._model, frame, block_col=block_col, fill=fill, interval=coverage, timing=timing,
                                           grid_hz=self.sample_rate_hz))
        return self._last[1]

    def complete(self, data: pd.DataFrame | np.ndarray, channels: list[str] | None = None, block_col: str | None = None,
                 fill: str = "all", interval: bool | float = False, time_col: str | None = None, rate_hz: float | None = None,
                 max_gap_s: float | None = None) -> pd.DataFrame | np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The data with its missing values of the run's channels filled.

        A DataFrame gives the completed DataFrame (rows in order, observed cells unchanged, ``<channel>_imputed`` flags,
        per-row ``predicted`` and ``p_<class>``). An array ``[N, C]`` (one recording) or ``[W, T, C]`` (windows, each on
        its own), with NaN where not observed and ``channels`` naming its last axis, gives the completed array.

        ``interval``: also each filled value's interval, calibrated on the run's validation recordings (True: at the
        run's ``interval_coverage``, 0.9 unless set; a number: at that coverage). A DataFrame gets ``<channel>_lower``
        and ``<channel>_upper`` beside each filled channel; an array gives ``(completed, lower, upper)``.

        ``time_col`` (default: the run's ``time_col``, where the frame has it) and/or ``rate_hz``: the frame's rows are
        times, resampled onto the run's grid (``run.sample_rate_hz``) and completed at their own times; ``max_gap_s``:
        a longer jump in time starts a new segment; ``fill="grid"``: slow channels at every row, not only at their own
        sample times.

        Example::

            filled = run.complete(values, channels=["acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z"])
            completed = run.complete(df, interval=0.9)  # gyr_x, gyr_x_lower, gyr_x_upper, ...
        """
        if fill not in FILLS:
            raise DataError(f"fill must be one of {list(FILLS)}, not {fill!r}.")
        coverage = asked_coverage(interval, self.config.evaluation.interval_coverage)
        if isinstance(data, np.ndarray):
            if time_col is not None or rate_hz is not None or max_gap_s is not None:
                raise DataError("an array holds no times: give a DataFrame with its time column for time_col, rate_hz or max_gap_s, "
                                "or an array already on the run's grid without them.")
            return complete_array(self._model, _numeric_array(data, channels, self.channels), list(channels), fill, coverage)
        timing = Timing(time_col, rate_hz, max_gap_s)
        return self._applied(data, block_col, fill, coverage, timing).tables["completed"].copy()  # the caller's to change

    def predict(self, frame: pd.DataFrame, block_col: str | None = None) -> pd.DataFrame:
        """One row per window: ``block``, ``first_row``, ``last_row`` and its ``predicted`` class.

        Example::

            run.predict(df)["predicted"].value_counts()
        """
        return self._applied(frame, block_col, "all").tables["windows"][["block", "first_row", "last_row", "predicted"]]

    def predict_proba(self, frame: pd.DataFrame, block_col: str | None = None) -> pd.DataFrame:
        """One row per window: ``block``, ``first_row``, ``last_row`` and a ``p_<class>`` probability per class.

        Example::

            run.predict_proba(df).filter(like="p_").mean()
        """
        return self._applied(frame, block_col, "all").tables["windows"].drop(columns="predicted")

    def evaluate(self, allow_changed_data: bool = False) -> dict[str, Any]:
        """Completion and classification on the run's test blocks (reads its training sources), as ``metrics.json``.

        Example::

            run.evaluate()["classification"]["accuracy"]
        """
        from tgatunet.evaluate.evaluate import evaluate_run  # the training stack: only where a run is scored

        return evaluate_run(self.directory, allow_changed_data=allow_changed_data)


def train(config: Config | dict | str | Path, run_dir: str | Path | None = None, overwrite: bool = False, resume: bool = False,
          progress_bar: bool = True) -> Run:

    """Train a run and return it, loaded.

    ``config``: a :class:`~tgatunet.config.Config`, a YAML file, or a dict of the file's keys,
    whose sources may give a DataFrame instead of a file (``{"name": ..., "frame": df, "have": [...]}``;
    it is saved into the run directory). Relative paths in a dict resolve against the working directory.

    Example::

        run = tgatunet.train({"sources": [{"name": "watch", "frame": df, "have": ["acc_x"]}],
                              "label_col": "activity", "block_col": "recording"}, run_dir="runs/mine")
    """
    from tgatunet.train.run import train as _train  # Lightning is imported where a run trains, not to load one

    if not isinstance(config, (Config, dict, str, os.PathLike)):
        raise ConfigError(f"train() takes a Config, a dict of config keys or the path of a YAML file, not "
                          f"{type(config).__name__}: tgatunet.train('config.yaml').")
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
