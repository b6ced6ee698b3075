"""Attention across the channels of each time step: the sensors as tokens.

The T-GAT-UNet's graph links time steps; this layer mixes the channels of one step
before that, so a channel that is hidden can be read off the channels that are visible
at the same instant (a gyroscope axis from the accelerometer, say) with weights that
depend on which ones are visible. For values ``x [B, T, C]`` and visibility ``m``:

.. math::

    z_{tc} = m_{tc}\\, x_{tc}\\, u_c + e_c + m_{tc}\\, v, \\qquad
    z \\leftarrow z + \\mathrm{MHA}\\big(\\mathrm{LN}(z)\\big)_{\\text{keys: } m_{t\\cdot}}, \\qquad
    z \\leftarrow z + \\mathrm{FF}(\\mathrm{LN}(z)), \\qquad
    h_t = W\\, [z_{t1} \\Vert \\dots \\Vert z_{tC}]

(``u_c``, ``e_c`` learnt per channel, ``v`` a learnt "visible" vector). Only visible
channels are keys, so no hidden value reaches the output through this layer; a step
with no visible channel attends to nothing and keeps its embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelAttention(nn.Module):
    """``(values, visible [B, T, C]) -> [B, T, D]``: one transformer layer over the ``C`` channel tokens of every step.

    Args:
        channels: ``C``.
        dim: output width ``D``.
        token_dim: width of a channel token ``d``.
        heads: attention heads (``d`` divisible by it).
    """

    def __init__(self, channels: int, dim: int, token_dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.token_dim = heads, token_dim
        self.value_weight = nn.Parameter(torch.randn(channels, token_dim) / token_dim**0.5)  # u_c
        self.channel_embedding = nn.Parameter(torch.randn(channels, token_dim) * 0.02)  # e_c
        self.visible_embedding = nn.Parameter(torch.zeros(token_dim))  # v
        self.norm1 = nn.LayerNorm(token_dim)
        self.qkv = nn.Linear(token_dim, 3 * token_dim)
        self.out = nn.Linear(token_dim, token_dim)
        self.norm2 = nn.LayerNorm(token_dim)
        self.ff = nn.Sequential(nn.Linear(token_dim, 2 * token_dim), nn.GELU(), nn.Linear(2 * token_dim, token_dim))
        self.project = nn.Linear(channels * token_dim, dim)

    def forward(self, values: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        B, T, C = values.shape
        H, d = self.heads, self.token_dim
        vis = visible.to(values.dtype)[..., None]  # [B, T, C, 1]
        z = (values[..., None] * vis) * self.value_weight + self.channel_embedding + vis * self.visible_embedding
        z = z.reshape(B * T, C, d)  # a sequence of C tokens per step
        q, k, v = self.qkv(self.norm1(z)).view(B * T, C, 3, H, d // H).permute(2, 0, 3, 1, 4)  # each [BT, H, C, d/H]
        keys = visible.reshape(B * T, 1, 1, C)  # attend to visible channels only
        # A step with no visible channel would give a softmax over nothing (NaN): it attends to nothing instead.
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keys | ~keys.any(dim=-1, keepdim=True))
        a = a * keys.any(dim=-1, keepdim=True)  # [BT, H, C, d/H]
        z = z + self.out(a.transpose(1, 2).reshape(B * T, C, d))
        z = z + self.ff(self.norm2(z))
        return self.project(z.reshape(B, T, C * d))  # [B, T, D]
