"""Resampling along time for the U-Net levels, in the ``[B, T, D]`` layout.

``avg_pool1d`` and ``interpolate`` work on ``[B, D, T]``: the U-Net would transpose
to that layout and back (two copies each way, in forward and backward) for each
level. These compute the same functions on ``[B, T, D]`` directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pool_pairs(h: torch.Tensor) -> torch.Tensor:
    """``[B, T, D] -> [B, ceil(T/2), D]``: mean of steps ``2t, 2t+1`` (an odd last step stays as it is).

    The function of ``avg_pool1d(kernel_size=2, ceil_mode=True)`` along time.
    """
    if h.shape[1] % 2:
        h = torch.cat([h, h[:, -1:]], dim=1)
    B, T, D = h.shape
    return h.view(B, T // 2, 2, D).mean(dim=2)


def upsample_to(h: torch.Tensor, steps: int) -> torch.Tensor:
    """``[B, T, D] -> [B, steps, D]`` by nearest neighbour; the inverse of :func:`pool_pairs` when ``steps <= 2T``.

    The function of ``interpolate(mode="nearest")`` along time.
    """
    B, T, D = h.shape
    if steps == T:
        return h
    if (steps + 1) // 2 == T:
        # Each step twice: a broadcast copy, whose backward is a sum over the pair (no index scatter).
        return h[:, :, None].expand(B, T, 2, D).reshape(B, 2 * T, D)[:, :steps]
    return F.interpolate(h.transpose(1, 2), size=steps, mode="nearest").transpose(1, 2)
