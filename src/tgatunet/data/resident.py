"""Training windows kept on the training device, gathered there: no host-to-device copy per step.

When a run trains on CUDA and its prepared arrays fit in :data:`SHARE` of the GPU's free memory, ``values`` and
``observed`` are moved to the GPU once; the DataLoader then yields only the indices (and labels) of a batch, and
:meth:`DeviceWindows.gather` cuts the windows out on the GPU. Otherwise batches are gathered on the host and go through
pinned memory, prefetched by workers.
"""

from __future__ import annotations

import numpy as np
import torch

from tgatunet.data.prepared import PreparedData, WindowDataset

SHARE = 0.25  # of the free GPU memory, at most, for the arrays: the model's activations need the rest


def fits_on_device(data: PreparedData, free_bytes: int, share: float = SHARE) -> bool:
    """Whether ``data``'s arrays take at most ``share`` of ``free_bytes``."""
    return data.values.nbytes + data.observed.nbytes + data.windows["train"].starts.nbytes <= share * free_bytes


class DeviceWindows:
    """The training split's windows on ``device``: ``gather(index [B]) -> values, observed [B, T, C]``."""

    def __init__(self, data: PreparedData, device: torch.device) -> None:
        self.values = torch.from_numpy(np.ascontiguousarray(data.values)).to(device)
        self.observed = torch.from_numpy(np.ascontiguousarray(data.observed)).to(device)
        self.starts = torch.from_numpy(data.windows["train"].starts).to(device)
        self.offsets = torch.arange(data.window_size, device=device) * data.downsample  # [T]

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.starts[index][:, None] + self.offsets  # [B, T]
        return self.values[rows], self.observed[rows]


class IndexDataset(WindowDataset):
    """The training windows without their values: a batch is ``label``, ``source``, ``index`` (``[B]``);
    :class:`DeviceWindows` adds ``values`` and ``observed`` on the device."""

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        return {"label": torch.from_numpy(self.index.labels[index].astype(np.int64)),
                "source": torch.from_numpy(self.index.sources[index].astype(np.int64)), "index": torch.from_numpy(index)}
