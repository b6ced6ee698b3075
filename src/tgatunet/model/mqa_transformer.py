"""Pre-norm transformer layer with multi-query attention and a fused QKV projection.

The lightweight counterpart of ``nn.TransformerEncoderLayer(norm_first=True,
activation="gelu")``, for ``x [B, T, D]`` with ``H`` query heads of width
``d = D / H``:

.. math::

    [Q \\,\\Vert\\, K \\,\\Vert\\, V] = \\mathrm{LN}(x)\\, W_{qkv}, \\qquad
    x \\leftarrow x + \\mathrm{Drop}\\big(\\big\\Vert_h \\mathrm{softmax}(Q_h K^\\top / \\sqrt{d})\\, V \\; W_o\\big), \\qquad
    x \\leftarrow x + \\mathrm{Drop}\\big(W_2\\, \\mathrm{GELU}(W_1 \\mathrm{LN}(x))\\big)

What makes it cheaper than the standard layer:

* **multi-query attention** (Shazeer, 2019): one key and one value head shared by
  all query heads, so ``W_qkv`` is ``D x (D + 2d)`` instead of ``D x 3D``;
* **fused QKV**: one matrix product for queries, keys and values;
* **narrower feed-forward**: the caller picks the hidden width (the lite U-Net
  uses 3/4 of the standard one);
* **no dropout on the attention probabilities**, so
  ``scaled_dot_product_attention`` can use a fused kernel (flash attention on
  CPU and GPU) in training too, and memory does not grow as ``T^2``; dropout
  stays on both residual branches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tgatunet.model.dropout import Dropout


class MultiQueryTransformerLayer(nn.Module):
    """``[B, T, D] -> [B, T, D]``: pre-norm multi-query self-attention and feed-forward.

    Args:
        dim: model width ``D``.
        heads: query heads ``H`` (``D`` divisible by ``H``).
        ff_dim: feed-forward hidden width.
        dropout: dropout on the attention output and the feed-forward output.
    """

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim + 2 * self.head_dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Linear(ff_dim, dim))
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H, d = self.heads, self.head_dim
        q, k, v = self.qkv(self.norm1(x)).split([D, d, d], dim=-1)
        q = q.view(B, T, H, d).transpose(1, 2)  # [B, H, T, d]
        k = k.view(B, 1, T, d).expand(B, H, T, d)  # one key head, broadcast (a view)
        v = v.view(B, 1, T, d).expand(B, H, T, d)
        attn = F.scaled_dot_product_attention(q, k, v)  # [B, H, T, d]
        x = x + self.dropout(self.out(attn.transpose(1, 2).reshape(B, T, D)))
        return x + self.dropout(self.ff(self.norm2(x)))
