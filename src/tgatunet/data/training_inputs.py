"""The training split's own input buffer, the only data a run may write.

The dynamic need update feeds the model completed values of the channels a source lacks. Those values must never reach
validation or test windows, so they are not written to :class:`~tgatunet.data.prepared.PreparedData` (which is
read-only) but to a copy of the rows that the training windows of the needing sources cover. Validation and test blocks
are never in that copy: splits are by block, so their rows are disjoint from training rows.

Memory: ``R x C`` float32 values plus two ``R x C`` bool masks, where ``R`` is the number of rows those training windows
span; it is only built when ``dynamic_need_update`` is on.
"""

from __future__ import annotations

import numpy as np
import torch

from tgatunet.data.prepared import PreparedData, WindowDataset
from tgatunet.data.windows import window_span


class TrainingInputs:
    """Copy of the rows under the training windows of sources that lack channels.

    Attributes:
        rows: ``[R]`` absolute rows (into ``PreparedData.values``) held, sorted.
        values: ``[R, C]`` float32 inputs, in shared memory so DataLoader workers see updates.
        observed: ``[R, C]`` bool, the observation mask of those rows (never changes).
        fillable: ``[R, C]`` bool, the only positions :meth:`fill` may write: a ``need``
            channel of the row's source that is not observed there.
        filled: ``[R, C]`` bool, positions holding a completed value (in shared memory).
        window_start: ``[W_train]`` buffer row of each training window's first step,
            -1 for windows of sources that need nothing (they read ``PreparedData``).
    """

    def __init__(self, data: PreparedData) -> None:
        train = data.windows["train"]
        buffered = data.source_need[torch.from_numpy(train.sources)].any(dim=1).numpy()  # [W_train]
        span = window_span(data.window_size, data.downsample)
        # Rows under any buffered window: windows are contiguous row ranges, so a window's
        # rows stay contiguous in the sorted copy and one start index locates it.
        edges = np.zeros(len(data.values) + 1, dtype=np.int64)
        np.add.at(edges, train.starts[buffered], 1)
        np.add.at(edges, train.starts[buffered] + span, -1)
        self.rows = np.flatnonzero(np.cumsum(edges[:-1]) > 0)
        self.window_start = np.where(buffered, np.searchsorted(self.rows, train.starts), -1)
        self.window_size, self.downsample = data.window_size, data.downsample

        row_source = np.searchsorted(data.row_offsets, self.rows, side="right") - 1  # [R]
        self.values = torch.from_numpy(data.values[self.rows]).share_memory_()
        self.observed = torch.from_numpy(data.observed[self.rows])
        self.fillable = data.source_need[torch.from_numpy(row_source)] & ~self.observed
        self.filled = torch.zeros_like(self.observed).share_memory_()

    def __len__(self) -> int:
        return len(self.rows)

    def window_rows(self) -> np.ndarray:
        """``[W_b, T]`` buffer rows of the steps of each buffered window (in training order)."""
        starts = self.window_start[self.window_start >= 0]
        return starts[:, None] + np.arange(self.window_size) * self.downsample

    def fill(self, completed: torch.Tensor, covered: torch.Tensor) -> int:
        """Write ``completed [R, C]`` (normalised units) in the rows it reached (``covered [R]``); returns how many values.

        Only positions in ``fillable`` are written: observed values and channels the source has are never touched.
        """
        write = self.fillable & covered[:, None]
        self.values[write] = completed.to(self.values.dtype)[write]
        self.filled |= write
        return int(write.sum())


class TrainingWindowDataset(WindowDataset):
    """The training windows, read through a :class:`TrainingInputs` buffer.

    Item or batch: as :class:`~tgatunet.data.prepared.WindowDataset`, plus ``filled``
    (``[T, C]`` or ``[B, T, C]`` bool): completed values in ``values``, model inputs, never loss targets.
    """

    def __init__(self, data: PreparedData, inputs: TrainingInputs) -> None:
        super().__init__(data, "train")
        self.inputs = inputs

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = super().__getitems__(indices)
        starts = self.inputs.window_start[np.asarray(indices, dtype=np.int64)]  # [B]
        buffered = torch.from_numpy(starts >= 0)  # [B]
        filled = torch.zeros_like(batch["observed"])  # [B, T, C]
        if buffered.any():
            rows = torch.from_numpy(starts[starts >= 0][:, None] + np.arange(self.data.window_size) * self.data.downsample)  # [B_b, T]
            batch["values"][buffered] = self.inputs.values[rows]
            filled[buffered] = self.inputs.filled[rows]
        batch["filled"] = filled
        return batch
