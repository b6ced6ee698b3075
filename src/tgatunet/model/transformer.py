"""Pre-norm transformer encoder layer: the function and parameters of torch's, in fewer operations.

For ``x [B, T, D]`` with ``H`` heads of width ``d = D / H``:

.. math::

    x \\leftarrow x + \\mathrm{Drop}\\big(\\mathrm{MHA}(\\mathrm{LN}_1(x))\\big), \\qquad
    x \\leftarrow x + \\mathrm{Drop}\\big(W_2\\, \\mathrm{Drop}(\\mathrm{GELU}(W_1 \\mathrm{LN}_2(x)))\\big)

with attention dropout inside ``MHA``: what ``nn.TransformerEncoderLayer(norm_first=True,
activation="gelu", batch_first=True)`` computes, with the same submodules and
parameter names (``self_attn.in_proj_weight``, ``linear1``, ``norm2``, ...), so a
state dict of one loads into the other.

Why not torch's layer: in training it goes through
``F.multi_head_attention_forward``, whose argument checks, sequence-first
transposes and packed-projection copies are several dozen small operations per
call, a visible share of a CPU step at the bottleneck's short length (``T / 4``).
Here: one projection, a view into heads, ``scaled_dot_product_attention``, the
output projection. Dropout on the residual branches is
:class:`~tgatunet.model.dropout.Dropout` (cheap masks on CPU). Attention-weight
dropout is the one ``scaled_dot_product_attention`` applies, except in CPU
training: there the kernel draws a Bernoulli sample per weight (a quarter of
the layer's training time at the medium preset), so the layer computes the
attention weights itself and drops them with :func:`~tgatunet.model.dropout.dropout`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tgatunet.model.dropout import Dropout, draws_shares, dropout


class TransformerLayer(nn.Module):
    """``[B, T, D] -> [B, T, D]``: pre-norm multi-head self-attention and GELU feed-forward.

    Args:
        dim: model width ``D``.
        heads: attention heads ``H`` (``D`` divisible by ``H``).
        ff_dim: feed-forward hidden width.
        dropout: on the attention weights, after the GELU and on both residual branches.
    """

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        # Holds the packed QKV and output projections under torch's names; its forward is not used.
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ff_dim)
        self.linear2 = nn.Linear(ff_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = Dropout(dropout)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        attn = self.self_attn
        H = attn.num_heads
        qkv = F.linear(self.norm1(x), attn.in_proj_weight, attn.in_proj_bias)  # [B, T, 3D]
        q, k, v = qkv.view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each [B, H, T, d]
        a = attention(q, k, v, attn.dropout if self.training else 0.0)  # [B, H, T, d]
        x = x + self.dropout1(attn.out_proj(a.transpose(1, 2).reshape(B, T, D)))
        return x + self.dropout2(self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(x))))))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d))`` with dropout at rate ``p`` on the weights, applied to ``v``.

    ``q, k, v [B, H, T, d] -> [B, H, T, d]``: ``scaled_dot_product_attention``'s function.
    """
    if p == 0.0 or not draws_shares(q):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    weights = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)  # [B, H, T, T]
    return dropout(weights, p, training=True) @ v
