"""Batched graph attention over a fixed-degree neighbour table.

Computes the function of ``torch_geometric.nn.GATConv`` (Velickovic et al.,
2018) for a batch of windows that share a node count, without a loop over
samples or edges:

.. math::

    h_i = W x_i, \\qquad
    e_{ij} = \\mathrm{LeakyReLU}\\big(a_{src}^\\top h_j + a_{dst}^\\top h_i\\big), \\qquad
    \\alpha_{ij} = \\mathrm{softmax}_{j \\in N(i)}(e_{ij}), \\qquad
    x'_i = \\big\\Vert_{h=1}^{H} \\sum_{j \\in N(i)} \\alpha^h_{ij} h^h_j + b

(heads concatenated, or averaged with ``concat=False``). ``N(i)`` is row ``i``
of a neighbour table ``[T, K]`` shared by the batch, or ``[B, T, K]`` per
window, with a validity mask of the same shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BatchedGATConv(nn.Module):
    """Multi-head graph attention on ``[B, T, F_in]`` node features.

    Args:
        in_channels: node feature width ``F_in``.
        out_channels: width per head ``F``.
        heads: number of attention heads ``H``.
        concat: concatenate heads (output ``H * F``) or average them (output ``F``).
        negative_slope: LeakyReLU slope of the attention scores.
        dropout: dropout on the attention coefficients (training only).
        bias: add a learnable bias to the output.

    Shapes:
        x: ``[B, T, F_in]``; index, valid: ``[T, K]`` or ``[B, T, K]``;
        output: ``[B, T, H * F]`` or ``[B, T, F]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.heads, self.out_channels, self.concat = heads, out_channels, concat
        self.negative_slope, self.dropout = negative_slope, dropout
        self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        self.bias = nn.Parameter(torch.zeros(heads * out_channels if concat else out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.xavier_uniform_(self.att_src)
        nn.init.xavier_uniform_(self.att_dst)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H, Fh = self.heads, self.out_channels
        h = self.lin(x).view(B, T, H, Fh)  # [B, T, H, F]
        score_src = (h * self.att_src).sum(-1)  # [B, T, H]
        score_dst = (h * self.att_dst).sum(-1)  # [B, T, H]

        if index.dim() == 2:  # one table for the batch: plain indexing along time
            h_nb = h[:, index]  # [B, T, K, H, F]
            src_nb = score_src[:, index]  # [B, T, K, H]
            mask = valid[None, :, :, None]  # [1, T, K, 1]
        else:  # per-window tables: gather from the flattened batch
            offset = (torch.arange(B, device=x.device) * T)[:, None, None]
            flat = (index + offset).reshape(-1)  # [B*T*K]
            h_nb = h.reshape(B * T, H, Fh)[flat].view(B, T, -1, H, Fh)
            src_nb = score_src.reshape(B * T, H)[flat].view(B, T, -1, H)
            mask = valid[..., None]  # [B, T, K, 1]

        e = F.leaky_relu(src_nb + score_dst[:, :, None, :], self.negative_slope)  # [B, T, K, H]
        e = e.masked_fill(~mask, float("-inf"))
        alpha = torch.softmax(e, dim=2)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        out = torch.einsum("btkh,btkhf->bthf", alpha, h_nb)  # [B, T, H, F]
        out = out.reshape(B, T, H * Fh) if self.concat else out.mean(dim=2)
        return out if self.bias is None else out + self.bias
