"""SAITS (Du et al., 2023) from PyPOTS as a completion baseline: ``tgatunet evaluate --baselines saits``.

Trained by ``evaluate`` on the run's own training windows (normalised, NaN where
not observed, every source together), as PyPOTS trains it: its masked-imputation
task hides observed values at random, its reconstruction task scores the rest.
Budget: ``saits_epochs`` epochs (100 by default), batch 32, 2 layers, ``d_model``
256, 4 heads of 64, feed-forward 128, dropout 0.1, PyPOTS' defaults otherwise.
It then imputes windows exactly where the model completes them (the same
windows, averaged per row the same way), so both are scored on the same values.

PyPOTS is an optional extra: ``pip install "tgatunet[baselines]"``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time

import numpy as np
import torch

from tgatunet.errors import RunError

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


class SaitsImputer:
    """SAITS fitted on training windows; imputes windows through the model interface the stream calls.

    Args:
        windows: ``[W, T, C]`` training windows, normalised, NaN where not observed.
        device: where SAITS trains and imputes (the evaluated model's device).
    """

    def __init__(self, windows: np.ndarray, epochs: int, seed: int, device: torch.device) -> None:
        if not available():
            raise RunError(f"the SAITS baseline needs PyPOTS, which is not installed: {INSTALL}")
        from pypots.imputation import SAITS
        from pypots.utils.random import set_random_seed

        set_random_seed(seed)
        _, T, C = windows.shape
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            self.saits = SAITS(
                n_steps=T, n_features=C, n_layers=2, d_model=256, n_heads=4, d_k=64, d_v=64, d_ffn=128,
                dropout=0.1, epochs=epochs, batch_size=32, device=str(device), saving_path=scratch, verbose=False,
            )
            self.saits.fit({"X": windows.astype(np.float32)})
        self.seconds = time.perf_counter() - start
        log.info("SAITS baseline: trained %d epochs on %d windows in %.0f s", epochs, len(windows), self.seconds)

    def predict_windows(self, values: torch.Tensor, visible: torch.Tensor, batch_size: int = 256):
        """``(imputation [W, T, C], no logits)`` for windows whose invisible values are to be filled."""
        x = np.where(visible.numpy(), values.numpy(), np.nan).astype(np.float32)
        imputed = self.saits.predict({"X": x})["imputation"]
        return np.asarray(imputed, dtype=np.float32), np.zeros((len(x), 1), dtype=np.float32)
