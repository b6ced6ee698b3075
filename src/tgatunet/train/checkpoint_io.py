"""Checkpoints written atomically: a crash mid-write never leaves a truncated file."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tgatunet.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O whose saves go through :func:`tgatunet.files.atomic_write`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_write(path, lambda handle: torch.save(checkpoint, handle))
