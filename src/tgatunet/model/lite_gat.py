"""Graph attention with one value projection shared by all heads (the lite model's GAT layer).

The lightweight counterpart of :class:`tgatunet.model.gat.BatchedGATConv`. For node features ``x_i`` (width ``F_in``),
``H`` heads of width ``F``:

.. math::

    [v_i \\,\\Vert\\, s_i \\,\\Vert\\, d_i] = W x_i, \\qquad
    e^h_{ij} = \\mathrm{LeakyReLU}(s^h_j + d^h_i), \\qquad
    \\alpha^h_{ij} = \\mathrm{softmax}_{j \\in N(i)}(e^h_{ij}), \\qquad
    x'_i = \\big\\Vert_{h=1}^{H} \\sum_{j \\in N(i)} \\alpha^h_{ij} v_j + b

with ``W`` of shape ``F_in x (F + 2H)``: the values are shared across heads (as keys and values in multi-query
attention), so the projection has ``F_in * F`` weights instead of ``F_in * H * F`` and the aggregated neighbour
features are ``H`` times smaller; each head still has its own attention over the neighbours. Graphs as in
:class:`~tgatunet.model.gat.BatchedGATConv`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tgatunet.model.dropout import dropout
from tgatunet.model.gat import Graph, banded_aggregate, banded_scores, flat_neighbors


class LiteGATConv(nn.Module):
    """Shared-value multi-head graph attention on ``[B, T, F_in]`` node features.

    Args:
        in_channels: node feature width ``F_in``.
        out_channels: width ``F`` of the shared value (and of each head's output).
        heads: number of attention heads ``H``.
        negative_slope: LeakyReLU slope of the attention scores.
        dropout: dropout on the attention coefficients and on the shared values (training only).

    Shapes:
        x: ``[B, T, F_in]``; graph: ``int`` or ``(index, valid)``; output: ``[B, T, H * F]``.
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, negative_slope: float = 0.2, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.out_channels = heads, out_channels
        self.negative_slope, self.dropout = negative_slope, dropout
        self.lin = nn.Linear(in_channels, out_channels + 2 * heads, bias=False)
        self.bias = nn.Parameter(torch.zeros(heads * out_channels))
        nn.init.xavier_uniform_(self.lin.weight)

    def forward(self, x: torch.Tensor, graph: Graph) -> torch.Tensor:
        B, T, _ = x.shape
        H, Fv = self.heads, self.out_channels
        value, score_src, score_dst = self.lin(x).split([Fv, H, H], dim=-1)  # [B,T,F], [B,T,H], [B,T,H]
        value = dropout(value, self.dropout, self.training)
        if isinstance(graph, int):
            e = banded_scores(score_src, graph)  # [B, T, K, H]
        else:
            flat, valid = flat_neighbors(graph, B, T)
            e = score_src.reshape(B * T, H)[flat].view(B, T, -1, H).masked_fill(~valid[..., None], float("-inf"))
        e = F.leaky_relu(e + score_dst[:, :, None, :], self.negative_slope)
        alpha = dropout(torch.softmax(e, dim=2), self.dropout, self.training)  # [B, T, K, H]
        if isinstance(graph, int):
            # Every head reads the same value row: a stride-0 view, no copy.
            out = banded_aggregate(alpha, value[:, :, None, :].expand(-1, -1, H, -1))
        else:
            value_nb = value.reshape(B * T, Fv)[flat].view(B, T, -1, Fv)  # [B, T, K, F]
            out = alpha.transpose(2, 3) @ value_nb  # [B, T, H, K] @ [B, T, K, F] -> [B, T, H, F]
        return out.reshape(B, T, H * Fv) + self.bias
