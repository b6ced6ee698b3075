"""SAITS (Du et al., 2023) from PyPOTS as the completion peer: ``tgatunet evaluate --baselines saits``.

Trained on the run's training windows (normalised, NaN where not observed, every source together) two ways, as
docs/PERFORMANCE.md describes: ``saits_default`` hides 20% of the observed values at random, ``saits_task`` hides what
tgatunet hides (:func:`tgatunet.train.objective.sample_hidden`). Both are stopped on the run's validation MAE
(``saits_patience``; ``saits_epochs`` is a cap) and keep their best epoch. Architecture: 2 layers, ``d_model`` 256, 4
heads of 64, feed-forward 128, dropout 0.1, batch 32, PyPOTS's defaults otherwise. Each imputes exactly the windows
the model completes, averaged per row the same way, so all are scored on the same values.

PyPOTS is an optional extra: ``pip install "tgatunet[baselines]"``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from tgatunet.errors import RunError
from tgatunet.train.objective import sample_hidden

log = logging.getLogger(__name__)

INSTALL = 'pip install "tgatunet[baselines]" (PyPOTS)'


def available() -> bool:
    try:
        # PyPOTS prints a banner on import (and reads stdout's encoding to draw it).
        with open(os.devnull, "w", encoding="utf-8") as sink, contextlib.redirect_stdout(sink):
            import pypots  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Hiding:
    """tgatunet's training hiding of one window: ``observed [T, C]`` bool -> ``hidden [T, C]`` bool."""

    patterns: torch.Tensor  # [P, C] bool channel sets that sources need
    pattern_prob: float
    channel_prob: float
    step_prob: float
    gap_prob: float
    gap_max: float

    @classmethod
    def of_training(cls, training, patterns: torch.Tensor) -> Hiding:
        """The hiding of a run's ``training`` config section."""
        t = training
        return cls(patterns.cpu(), t.mask_pattern_prob, t.mask_channel_prob, t.mask_step_prob, t.mask_gap_prob, t.mask_gap_max)

    def __call__(self, observed: torch.Tensor) -> torch.Tensor:
        probs = self.pattern_prob, self.channel_prob, self.step_prob
        return sample_hidden(observed[None], self.patterns, *probs, None, self.gap_prob, self.gap_max)[0]


def _task_dataset(windows: dict, hiding: Hiding):
    """PyPOTS's SAITS training set with ``hiding`` as its masked-imputation task instead of random values."""
    from pygrinder import fill_and_get_mask_torch
    from pypots.imputation.saits.data import DatasetForSAITS

    class TaskHidingDataset(DatasetForSAITS):
        def _fetch_data_from_array(self, idx: int) -> list[torch.Tensor]:
            x_ori = self.X[idx]  # [T, C], NaN where not observed
            x = x_ori.masked_fill(hiding(~torch.isnan(x_ori)), float("nan"))
            x, visible = fill_and_get_mask_torch(x)
            x_ori, observed = fill_and_get_mask_torch(x_ori)
            return [torch.tensor(idx), x, visible, x_ori, (observed - visible).to(torch.float32)]

    return TaskHidingDataset(windows, return_X_ori=False, return_y=False, file_type="hdf5")


class SaitsImputer:
    """SAITS fitted on training windows, selected on validation windows; imputes windows as the stream asks.

    Args:
        train: ``[W, T, C]`` training windows, normalised, NaN where not observed.
        val: ``(x, x_ori)`` ``[V, T, C]`` validation windows with the selection's hidden values NaN in ``x``
            and every observed value in ``x_ori``.
        hiding: tgatunet's hiding (``saits_task``), or None for PyPOTS's own (``saits_default``).
        epochs, patience: the epoch cap and the epochs without a lower validation MAE that end training.
        device: where SAITS trains and imputes (the evaluated model's device).
    """

    def __init__(self, train: np.ndarray, val: tuple[np.ndarray, np.ndarray], hiding: Hiding | None, epochs: int, patience: int,
                 seed: int, device: torch.device) -> None:
        if not available():
            raise RunError(f"the SAITS baseline needs PyPOTS, which is not installed: {INSTALL}")
        from pypots.imputation import SAITS
        from pypots.nn.modules.loss import MAE
        from pypots.utils.random import set_random_seed
        from torch.utils.data import DataLoader

        set_random_seed(seed)
        _, T, C = train.shape
        train_set = {"X": train.astype(np.float32)}
        val_set = {"X": val[0].astype(np.float32), "X_ori": val[1].astype(np.float32)}
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            self.saits = SAITS(n_steps=T, n_features=C, n_layers=2, d_model=256, n_heads=4, d_k=64, d_v=64, d_ffn=128, dropout=0.1,
                               epochs=epochs, patience=patience, batch_size=32, validation_metric=MAE, device=str(device),
                               saving_path=scratch, verbose=False)

            if hiding is None:
                self.saits.fit(train_set, val_set)
            else:
                # SAITS.fit with the task's training set; its validation and selection are PyPOTS's own.
                from pypots.imputation.saits.data import DatasetForSAITS

                loader = DataLoader(_task_dataset(train_set, hiding), batch_size=32, shuffle=True)
                val_loader = DataLoader(DatasetForSAITS(val_set, return_X_ori=True, return_y=False), batch_size=32)
                self.saits._train_model(loader, val_loader)
                self.saits.model.load_state_dict(self.saits.best_model_dict)
        self.seconds = time.perf_counter() - start
        self.best_epoch = int(self.saits.best_epoch)
        # PyPOTS stops `patience` epochs after the best one, unless the cap comes first.
        self.epochs = min(epochs, self.best_epoch + patience)
        self.stopped_by = "cap" if self.best_epoch + patience > epochs else "early_stopping"
        self.best_val_mae = float(self.saits.best_loss)
        log.info("SAITS (%s): best epoch %d of %d (%s), validation MAE %.4f, %d windows, %.0f s",
                 "task hiding" if hiding else "PyPOTS default", self.best_epoch, self.epochs, self.stopped_by,
                 self.best_val_mae, len(train), self.seconds)

    def summary(self) -> dict:
        return {"seconds": self.seconds, "best_epoch": self.best_epoch, "epochs": self.epochs,
                "stopped_by": self.stopped_by, "best_val_mae": self.best_val_mae}

    def predict_windows(self, values: torch.Tensor, visible: torch.Tensor, batch_size: int = 256):
        """``(imputation [W, T, C], no logits, no spread)`` for windows whose invisible values are to be filled."""
        x = np.where(visible.numpy(), values.numpy(), np.nan).astype(np.float32)
        imputed = self.saits.predict({"X": x})["imputation"]
        return np.asarray(imputed, dtype=np.float32), np.zeros((len(x), 1), dtype=np.float32), None
