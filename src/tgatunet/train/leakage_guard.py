"""The leakage guard: proof that a run left its validation and test inputs as they were.

Validation and test inputs are read-only by construction (read-only NumPy arrays); the guard checks the
result, whatever path a write might have taken. At the start and at the end of fitting it hashes (SHA-256) the
values and observation mask of each split's windows, in order, as the model reads them (from memory or from a
data store); ``held`` is True when both hashes of both splits are equal.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import lightning.pytorch as pl
import numpy as np

from tgatunet.data.prepared import PreparedData
from tgatunet.data.store_windows import StoreData, window_dataset

log = logging.getLogger(__name__)

GUARDED_SPLITS = ("val", "test")


def split_fingerprint(data: PreparedData | StoreData, split: str, chunk: int = 4096) -> str:
    """SHA-256 hex digest of what ``split``'s windows feed the model: each window's values and mask, in order."""
    dataset = window_dataset(data, split)
    digest = hashlib.sha256()
    for first in range(0, len(dataset), chunk):
        batch = dataset.__getitems__(list(range(first, min(first + chunk, len(dataset)))))
        for key in ("values", "observed"):
            digest.update(np.ascontiguousarray(batch[key].numpy()).tobytes())
    return digest.hexdigest()


class LeakageGuard(pl.Callback):
    """Fingerprints the validation and test inputs when fitting starts and ends."""

    def __init__(self, data: PreparedData | StoreData) -> None:
        self.data = data
        self.start: dict[str, str] = {}
        self.end: dict[str, str] = {}

    def fingerprints(self) -> dict[str, str]:
        return {split: split_fingerprint(self.data, split) for split in GUARDED_SPLITS}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = self.fingerprints()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.end = self.fingerprints()
        if not self.held:
            changed = [s for s in GUARDED_SPLITS if self.start[s] != self.end[s]]
            log.error("leakage guard: the %s inputs changed during training", " and ".join(changed))

    @property
    def held(self) -> bool:
        return bool(self.start) and self.start == self.end

    def summary(self) -> dict[str, Any]:
        """What ``metrics.json`` records as ``leakage_guard``."""
        return {"held": self.held, "start": self.start, "end": self.end}
