"""Per-channel standardisation fitted on training rows only."""

from __future__ import annotations

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
        observed = ~np.isnan(values)
        count = observed.sum(axis=0)
        filled = np.where(observed, values, 0.0).astype(np.float64)
        mean = np.divide(filled.sum(axis=0), count, out=np.zeros(values.shape[1]), where=count > 0)
        sq = np.where(observed, (values - mean) ** 2, 0.0).sum(axis=0)
        std = np.sqrt(np.divide(sq, count, out=np.ones(values.shape[1]), where=count > 0))
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
