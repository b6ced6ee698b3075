"""Graph attention with one value projection shared by all heads, and fused scores.

The lightweight counterpart of :class:`tgatunet.model.gat.BatchedGATConv`. For
node features ``x_i`` (width ``F_in``), ``H`` heads of width ``F``:

.. math::

    [v_i \\,\\Vert\\, s_i \\,\\Vert\\, d_i] = W x_i, \\qquad
    e^h_{ij} = \\mathrm{LeakyReLU}(s^h_j + d^h_i), \\qquad
    \\alpha^h_{ij} = \\mathrm{softmax}_{j \\in N(i)}(e^h_{ij}), \\qquad
    x'_i = \\big\\Vert_{h=1}^{H} \\sum_{j \\in N(i)} \\alpha^h_{ij} v_j + b

with ``W`` of shape ``F_in x (F + 2H)``. What makes it cheaper than GATConv:

* **values shared across heads** (as keys/values in multi-query attention):
  one ``F``-wide value per node instead of ``H * F``, so the projection has
  ``F_in * F`` weights instead of ``F_in * H * F`` and the neighbour features
  that are aggregated are ``H`` times smaller. Heads still differ: each has its
  own attention over the neighbours.
* **fused scores**: GATConv's ``a^T (W_h x)`` is a linear function of ``x``, so
  the source/destination scores come out of the same matrix product as the
  values instead of an ``[B, T, H, F]`` product and sum.
* **no gather on the temporal graph**: the neighbours of step ``t`` are
  ``t - k .. t + k``, so neighbour ``j`` of every node is the value sequence
  shifted by ``j - k``: a view of the padded values, not a gathered
  ``[B, T, K, F]`` copy that autograd would keep. An explicit neighbour table
  (``[T, K]`` or ``[B, T, K]``) is gathered as in GATConv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tgatunet.model.dropout import dropout
from tgatunet.model.gat import banded_aggregate, banded_scores


class LiteGATConv(nn.Module):
    """Shared-value multi-head graph attention on ``[B, T, F_in]`` node features.

    Args:
        in_channels: node feature width ``F_in``.
        out_channels: width ``F`` of the shared value (and of each head's output).
        heads: number of attention heads ``H``.
        negative_slope: LeakyReLU slope of the attention scores.
        dropout: dropout on the attention coefficients and on the shared values (training only).

    Shapes:
        x: ``[B, T, F_in]``; neighbors: None (temporal graph of radius ``time_k``)
        or ``(index, valid)`` of shape ``[T, K]`` or ``[B, T, K]``; output: ``[B, T, H * F]``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, heads: int = 1, negative_slope: float = 0.2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.heads, self.out_channels = heads, out_channels
        self.negative_slope, self.dropout = negative_slope, dropout
        self.lin = nn.Linear(in_channels, out_channels + 2 * heads, bias=False)
        self.bias = nn.Parameter(torch.zeros(heads * out_channels))
        nn.init.xavier_uniform_(self.lin.weight)

    def forward(
        self,
        x: torch.Tensor,
        time_k: int = 1,
        neighbors: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        H, Fv = self.heads, self.out_channels
        value, score_src, score_dst = self.lin(x).split([Fv, H, H], dim=-1)  # [B,T,F], [B,T,H], [B,T,H]
        value = dropout(value, self.dropout, self.training)
        if neighbors is None:
            out = self._banded(value, score_src, score_dst, time_k)
        else:
            out = self._tabled(value, score_src, score_dst, *neighbors)
        return out.reshape(B, T, H * Fv) + self.bias

    def _attention(self, e: torch.Tensor, dim: int) -> torch.Tensor:
        e = F.leaky_relu(e, self.negative_slope)
        return dropout(torch.softmax(e, dim=dim), self.dropout, self.training)

    def _banded(self, value: torch.Tensor, score_src: torch.Tensor, score_dst: torch.Tensor, time_k: int) -> torch.Tensor:
        alpha = self._attention(banded_scores(score_src, time_k) + score_dst[:, :, None, :], dim=2)  # [B, T, K, H]
        # Every head reads the same value row: a stride-0 view, no copy.
        shared = value[:, :, None, :].expand(-1, -1, self.heads, -1)  # [B, T, H, F]
        return banded_aggregate(alpha, shared)  # K multiply-adds on shifted slices

    def _tabled(
        self, value: torch.Tensor, score_src: torch.Tensor, score_dst: torch.Tensor, index: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        B, T, Fv = value.shape
        H = score_src.shape[-1]
        if index.dim() == 2:
            index, valid = index.expand(B, -1, -1), valid.expand(B, -1, -1)
        K = index.shape[-1]
        offset = (torch.arange(B, device=value.device) * T)[:, None, None]
        flat = (index + offset).reshape(-1)  # [B*T*K]
        value_nb = value.reshape(B * T, Fv)[flat].view(B, T, K, Fv)
        src_nb = score_src.reshape(B * T, H)[flat].view(B, T, K, H)
        e = (src_nb + score_dst[:, :, None, :]).masked_fill(~valid[..., None], float("-inf"))
        alpha = self._attention(e, dim=2)  # [B, T, K, H]
        return alpha.transpose(2, 3) @ value_nb  # [B, T, H, K] @ [B, T, K, F] -> [B, T, H, F]
