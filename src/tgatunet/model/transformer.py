"""Pre-norm transformer encoder layer over the time axis, with multi-head or multi-query attention.

For ``x [B, T, D]`` with ``H`` query heads of width ``d = D / H`` and ``G`` key/value heads:

.. math::

    [Q \\,\\Vert\\, K \\,\\Vert\\, V] = \\mathrm{LN}_1(x)\\, W_{qkv}, \\qquad
    x \\leftarrow x + \\mathrm{Drop}\\big(\\big\\Vert_h \\mathrm{softmax}(Q_h K_{g(h)}^\\top / \\sqrt{d})\\, V_{g(h)} \\; W_o\\big), \\qquad
    x \\leftarrow x + \\mathrm{Drop}\\big(W_2\\, \\mathrm{Drop}(\\mathrm{GELU}(W_1 \\mathrm{LN}_2(x)))\\big)

With ``G = H`` this is ``nn.TransformerEncoderLayer(norm_first=True, activation="gelu", batch_first=True)`` (tested
against it); the standard model uses it so. The lite model uses ``G = 1``, multi-query attention (Shazeer, 2019):
``W_qkv`` is ``D x (D + 2d)`` instead of ``D x 3D``, and no dropout on the attention weights, so
``scaled_dot_product_attention`` can take a fused kernel whose memory does not grow as ``T^2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tgatunet.model.dropout import Dropout


class TransformerLayer(nn.Module):
    """``[B, T, D] -> [B, T, D]``: pre-norm self-attention and GELU feed-forward.

    Args:
        dim: model width ``D``.
        heads: query heads ``H`` (``D`` divisible by ``H``).
        ff_dim: feed-forward hidden width.
        dropout: on both residual branches and after the GELU.
        kv_heads: key/value heads ``G`` (``H``: multi-head attention; 1: multi-query).
        attention_dropout: dropout on the attention weights (None: ``dropout``).
    """

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float, kv_heads: int | None = None,
                 attention_dropout: float | None = None) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads or heads, dim // heads
        self.attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim + 2 * self.kv_heads * self.head_dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), Dropout(dropout), nn.Linear(ff_dim, dim))
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H, G, d = self.heads, self.kv_heads, self.head_dim
        q, k, v = self.qkv(self.norm1(x)).split([D, G * d, G * d], dim=-1)
        q = q.view(B, T, H, d).transpose(1, 2)  # [B, H, T, d]
        # Each group of H / G query heads shares one key/value head: with G = 1 or H a view, no copy.
        k, v = (t.view(B, T, G, 1, d).permute(0, 2, 3, 1, 4).expand(B, G, H // G, T, d).reshape(B, H, T, d) for t in (k, v))
        p = self.attention_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # [B, H, T, d]
        x = x + self.dropout(self.out(a.transpose(1, 2).reshape(B, T, D)))
        return x + self.dropout(self.ff(self.norm2(x)))
