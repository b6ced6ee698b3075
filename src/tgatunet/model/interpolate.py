"""Linear interpolation of each channel between its visible steps, batched: the base the network corrects.

For ``values, visible [B, T, C]``, step ``t`` of channel ``c`` with visible neighbours
``p <= t <= n`` (the nearest visible steps before and after) gets

.. math::

    \\hat x_t = x_p + \\frac{t - p}{n - p}\\,(x_n - x_p),

the nearest visible value where only one side has one, and 0 (the training mean, in
normalised units) where the channel shows nothing in the window. Visible steps keep
their value. Only visible values are read, so nothing hidden reaches the result.
"""

from __future__ import annotations

import torch


def interpolate_visible(values: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """``[B, T, C]`` linear interpolation of ``values`` between the ``visible`` steps of each window and channel."""
    B, T, C = values.shape
    steps = torch.arange(T, device=values.device)[None, :, None].expand(B, T, C)
    # Index of the last visible step at or before t (-1: none), and of the first at or after t (T: none).
    before = torch.where(visible, steps, -1).cummax(dim=1).values
    after = torch.where(visible, steps, T).flip(1).cummin(dim=1).values.flip(1)
    x_before = values.gather(1, before.clamp(0, T - 1))
    x_after = values.gather(1, after.clamp(0, T - 1))
    has_before, has_after = before >= 0, after < T
    span = (after - before).clamp_min(1).to(values.dtype)
    weight = ((steps - before).to(values.dtype) / span).clamp(0, 1)
    between = x_before + weight * (x_after - x_before)
    out = torch.where(has_before & has_after, between, torch.where(has_before, x_before, x_after))
    return torch.where(has_before | has_after, out, torch.zeros_like(out))
