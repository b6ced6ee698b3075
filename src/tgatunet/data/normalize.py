"""Per-channel standardisation fitted on training rows only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChannelStats:
    """Mean and standard deviation of each channel, ``[C]`` float64 each."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> ChannelStats:
        """Fit on ``values [N, C]`` (NaN ignored). A channel with no value keeps mean 0, std 1."""
        return cls.fit_chunks(lambda: iter([values]), values.shape[1])

    @classmethod
    def fit_chunks(cls, chunks: Callable[[], Iterator[np.ndarray]], channels: int) -> ChannelStats:
        """Fit on rows too many to hold at once: ``chunks()`` yields ``[n, C]`` blocks of them.

        Two passes (``chunks`` is called twice): the mean first, then the squared deviations from it, as :meth:`fit`
        does on one array (no one-pass ``E[x^2] - E[x]^2``, which loses precision when the mean is large).
        """
        count = np.zeros(channels, dtype=np.int64)
        total = np.zeros(channels)
        for block in chunks():
            observed = ~np.isnan(block)
            count += observed.sum(axis=0)
            total += np.where(observed, block, 0.0).astype(np.float64).sum(axis=0)
        mean = np.divide(total, count, out=np.zeros(channels), where=count > 0)
        sq = np.zeros(channels)
        for block in chunks():
            sq += np.where(~np.isnan(block), (block - mean) ** 2, 0.0).sum(axis=0)
        std = np.sqrt(np.divide(sq, count, out=np.ones(channels), where=count > 0))
        std = np.where(std > 1e-8, std, 1.0)
        return cls(mean=mean, std=std)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """``[N, C]`` raw -> normalised float32 (NaN stays NaN)."""
        return ((values - self.mean) / self.std).astype(np.float32)

    def invert(self, values: np.ndarray) -> np.ndarray:
        """``[..., C]`` normalised -> raw units, float64."""
        return values.astype(np.float64) * self.std + self.mean

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> ChannelStats:
        return cls(mean=np.asarray(data["mean"], dtype=np.float64), std=np.asarray(data["std"], dtype=np.float64))
