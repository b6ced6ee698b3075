"""Batched graph attention over the time steps of a window.

Computes the function of ``torch_geometric.nn.GATConv`` (Velickovic et al., 2018) for a batch of windows that share a
node count, without a loop over samples or edges:

.. math::

    h_i = W x_i, \\qquad
    e_{ij} = \\mathrm{LeakyReLU}\\big(a_{src}^\\top h_j + a_{dst}^\\top h_i\\big), \\qquad
    \\alpha_{ij} = \\mathrm{softmax}_{j \\in N(i)}(e_{ij}), \\qquad
    x'_i = \\big\\Vert_{h=1}^{H} \\sum_{j \\in N(i)} \\alpha^h_{ij} h^h_j + b

(heads concatenated, or averaged with ``concat=False``).

The graph is either the temporal graph of radius ``r`` (an ``int``: ``N(i)`` is ``i - r .. i + r``) or a neighbour
table ``(index, valid)`` of shape ``[T, K]`` or ``[B, T, K]``. On the temporal graph neighbour slot ``j`` of every
node is the sequence shifted by ``j - r``, so the layer reads shifted slices (:class:`BandedSum`) instead of gathering
a ``[B, T, K, H, F]`` copy; slots beyond the window get score ``-inf`` and weight 0, as invalid table slots do. The
per-head scores ``a^T W x`` are linear in ``x``: they are ``2H`` more output columns of the projection instead of a
product and a sum over ``[B, T, H, F]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tgatunet.model.dropout import dropout

# The graph a layer attends over: the temporal graph's radius, or a table ``(index, valid)``.
Graph = int | tuple[torch.Tensor, torch.Tensor]


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
        x: ``[B, T, F_in]``; graph: ``int`` or ``(index, valid)`` ``[T, K]`` / ``[B, T, K]``;
        output: ``[B, T, H * F]`` or ``[B, T, F]``.
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, concat: bool = True, negative_slope: float = 0.2,
                 dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.heads, self.out_channels, self.concat = heads, out_channels, concat
        self.negative_slope, self.dropout = negative_slope, dropout
        self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        self.bias = nn.Parameter(torch.zeros(heads * out_channels if concat else out_channels)) if bias else None
        for weight in (self.lin.weight, self.att_src, self.att_dst):
            nn.init.xavier_uniform_(weight)

    def forward(self, x: torch.Tensor, graph: Graph) -> torch.Tensor:
        B, T, _ = x.shape
        H, Fh = self.heads, self.out_channels
        W = self.lin.weight  # [H*F, F_in]
        att = torch.cat([self.att_src, self.att_dst])  # [2, H, F]
        score_weight = (att[..., None] * W.view(1, H, Fh, -1)).sum(2).reshape(2 * H, -1)  # [2H, F_in]: a^T W_h
        h, score_src, score_dst = F.linear(x, torch.cat([W, score_weight])).split([H * Fh, H, H], dim=-1)
        h = h.view(B, T, H, Fh)  # scores [B, T, H]

        if isinstance(graph, int):
            src_nb = banded_scores(score_src, graph)  # [B, T, K, H]
        else:
            flat, valid = flat_neighbors(graph, B, T)
            src_nb = score_src.reshape(B * T, H)[flat].view(B, T, -1, H)
            src_nb = src_nb.masked_fill(~valid[..., None], float("-inf"))
        e = F.leaky_relu(src_nb + score_dst[:, :, None, :], self.negative_slope)
        alpha = dropout(torch.softmax(e, dim=2), self.dropout, self.training)  # [B, T, K, H]

        if isinstance(graph, int):
            out = banded_aggregate(alpha, h)  # [B, T, H*F]
        else:
            h_nb = h.reshape(B * T, H, Fh)[flat].view(B, T, -1, H, Fh)  # [B, T, K, H, F]
            out = (alpha[..., None] * h_nb).sum(dim=2).reshape(B, T, H * Fh)
        if not self.concat:
            out = out.view(B, T, H, Fh).mean(dim=2)  # [B, T, F]
        return out if self.bias is None else out + self.bias


def flat_neighbors(table: tuple[torch.Tensor, torch.Tensor], B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, valid)`` ``[T, K]`` or ``[B, T, K]`` -> rows ``[B*T*K]`` into ``[B*T, ...]`` and ``valid [B, T, K]``."""
    index, valid = table
    if index.dim() == 2:  # one table for the batch
        index, valid = index.expand(B, -1, -1), valid.expand(B, -1, -1)
    offset = (torch.arange(B, device=index.device) * T)[:, None, None]
    return (index + offset).reshape(-1), valid


def _shifts(steps: int, radius: int):
    """``(slot, out_steps, h_steps)`` of every off-centre slot whose shifted range is not empty."""
    for j in range(2 * radius + 1):
        shift = j - radius
        lo, hi = max(0, -shift), steps - max(0, shift)
        if shift != 0 and lo < hi:
            yield j, slice(lo, hi), slice(lo + shift, hi + shift)


def banded_scores(score_src: torch.Tensor, radius: int) -> torch.Tensor:
    """``[B, T, H]`` source scores -> ``[B, T, K, H]``: slot ``j`` of step ``t`` holds step ``t + j - r``'s.

    Slots beyond the window hold ``-inf`` (LeakyReLU keeps it), so a softmax gives them weight 0.
    """
    T = score_src.shape[1]
    padded = F.pad(score_src, (0, 0, radius, radius), value=float("-inf"))  # [B, T+2r, H]
    return torch.stack([padded[:, j : j + T] for j in range(2 * radius + 1)], dim=2)


def banded_sum(alpha: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``out[b, t] = sum_j alpha[b, t, j] * h[b, t + j - r]`` over the slots ``j`` whose step is in the window.

    ``alpha [B, T, K, H]`` (``K = 2r + 1``), ``h [B, T, H, F]`` -> ``[B, T, H * F]``:
    ``K`` multiply-adds on shifted slices.
    """
    B, T, H, Fh = h.shape
    radius = alpha.shape[2] // 2
    out = alpha[:, :, radius, :, None] * h
    for j, dst, src in _shifts(T, radius):
        out[:, dst].addcmul_(alpha[:, dst, j, :, None], h[:, src])
    return out.view(B, T, H * Fh)


def banded_aggregate(alpha: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """:func:`banded_sum`, through :class:`BandedSum` when a gradient is needed."""
    if torch.is_grad_enabled() and (alpha.requires_grad or h.requires_grad):
        return BandedSum.apply(alpha, h)
    return banded_sum(alpha, h)


class BandedSum(torch.autograd.Function):
    """:func:`banded_sum` with a backward of ``K`` multiply-adds on shifted slices too.

    Autograd of the plain expression would keep a padded copy of ``h`` and one product per
    slot, and its backward would zero-fill and add a padded gradient per slot.
    """

    @staticmethod
    def forward(ctx, alpha: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(alpha, h)
        return banded_sum(alpha, h)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha, h = ctx.saved_tensors
        grad = grad.reshape(h.shape)  # [B, T, H * F] -> [B, T, H, F]
        radius = alpha.shape[2] // 2
        grad_alpha = torch.zeros_like(alpha)
        grad_alpha[:, :, radius] = (grad * h).sum(-1)
        grad_h = alpha[:, :, radius, :, None] * grad
        for j, dst, src in _shifts(h.shape[1], radius):
            grad_alpha[:, dst, j] = (grad[:, dst] * h[:, src]).sum(-1)
            grad_h[:, src].addcmul_(alpha[:, dst, j, :, None], grad[:, dst])
        return grad_alpha, grad_h
