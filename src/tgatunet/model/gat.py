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

How it is computed (the same function, in fewer and cheaper operations; on CPU
the step is bound by memory traffic and per-operation overhead, not by FLOPs):

* **scores from the projection**: ``a^T (W x)`` is linear in ``x``, so the
  per-head source and destination scores are ``2H`` extra output columns of the
  projection (``[a^T W] x``), not a product and a sum over ``[B, T, H, F]``;
* **no gather on the temporal graph**: for the temporal table
  (:func:`~tgatunet.graph.temporal.band_radius`), neighbour slot ``j`` of every
  node is the feature sequence shifted by ``j - time_k``: a view of the padded
  features. Slots beyond the window hold zeros with score ``-inf`` (weight 0),
  exactly as invalid slots of the table do. Other tables are gathered.
* **aggregation as ``K`` multiply-adds** ``sum_j alpha_j * h_j`` on ``[B, T, H, F]``
  instead of ``B * T * H`` matrix products of shape ``[1, K] x [K, F]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tgatunet.graph.temporal import band_radius
from tgatunet.model.dropout import dropout


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

    def forward(self, x: torch.Tensor, index: torch.Tensor, valid: torch.Tensor, radius: int | None = None) -> torch.Tensor:
        """``radius``: the caller's word that ``(index, valid)`` is the temporal table of that
        ``time_k`` (None: recognised by :func:`~tgatunet.graph.temporal.band_radius`, which compares
        the table's values when it is not the cached one: a graph break under ``torch.compile``)."""
        B, T, _ = x.shape
        H, Fh = self.heads, self.out_channels
        W = self.lin.weight  # [H*F, F_in]
        att = torch.cat([self.att_src, self.att_dst])  # [2, H, F]
        score_weight = (att[..., None] * W.view(1, H, Fh, -1)).sum(2).reshape(2 * H, -1)  # [2H, F_in]: a^T W_h
        h, score_src, score_dst = F.linear(x, torch.cat([W, score_weight])).split([H * Fh, H, H], dim=-1)
        h = h.view(B, T, H, Fh)  # [B, T, H, F]; scores [B, T, H]

        if radius is None:
            radius = band_radius(index, valid)
        if radius is not None:
            src_nb = banded_scores(score_src, radius)  # [B, T, K, H]
        else:
            if index.dim() == 2:  # one table for the batch
                index, valid = index.expand(B, -1, -1), valid.expand(B, -1, -1)
            offset = (torch.arange(B, device=x.device) * T)[:, None, None]
            flat = (index + offset).reshape(-1)  # [B*T*K]
            src_nb = score_src.reshape(B * T, H)[flat].view(B, T, -1, H)  # [B, T, K, H]
            src_nb = src_nb.masked_fill(~valid[..., None], float("-inf"))

        e = F.leaky_relu(src_nb + score_dst[:, :, None, :], self.negative_slope)  # [B, T, K, H]
        alpha = torch.softmax(e, dim=2)
        alpha = dropout(alpha, self.dropout, self.training)
        # With heads concatenated, the bias starts the banded multiply-adds: no pass of its own.
        folded = radius is not None and self.concat and self.bias is not None
        if radius is not None:
            out = banded_aggregate(alpha, h, self.bias.view(H, Fh) if folded else None)  # [B, T, H*F]
        else:
            h_nb = h.reshape(B * T, H, Fh)[flat].view(B, T, -1, H, Fh)  # [B, T, K, H, F]
            out = (alpha[..., None] * h_nb).sum(dim=2).reshape(B, T, H * Fh)  # [B, T, H*F]
        if not self.concat:
            out = out.view(B, T, H, Fh).mean(dim=2)  # [B, T, F]
        return out if self.bias is None or folded else out + self.bias


def _shifts(steps: int, radius: int):
    """``(slot, out_steps, h_steps)`` of every off-centre slot whose shifted range is not empty."""
    for j in range(2 * radius + 1):
        shift = j - radius
        lo, hi = max(0, -shift), steps - max(0, shift)
        if shift != 0 and lo < hi:
            yield j, slice(lo, hi), slice(lo + shift, hi + shift)


def banded_sum(alpha: torch.Tensor, h: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``out[b, t] = bias + sum_j alpha[b, t, j] * h[b, t + j - r]`` over the slots ``j`` whose step is in the window.

    ``alpha [B, T, K, H]`` (``K = 2r + 1``, weight 0 on slots beyond the window, as the
    temporal graph's softmax gives them), ``h [B, T, H, F]``, optional ``bias [H, F]``
    -> ``[B, T, H * F]`` (heads concatenated): ``K`` multiply-adds on shifted slices.
    Differentiable through :class:`BandedSum`.

    The result is allocated with its heads already concatenated, so it is not a view: an
    in-place operation on it (the GAT block's ELU) then needs no copy of it in the backward
    pass, as one on a reshaped ``[B, T, H, F]`` result would.
    """
    B, T, H, F_ = h.shape
    radius = alpha.shape[2] // 2
    flat = torch.empty(B, T, H * F_, dtype=torch.promote_types(alpha.dtype, h.dtype), device=h.device)
    out = flat.view(B, T, H, F_)
    centre = alpha[:, :, radius, :, None]
    if bias is None:
        torch.mul(centre, h, out=out)
    else:
        torch.addcmul(bias, centre, h, out=out)
    for j, dst, src in _shifts(T, radius):
        out[:, dst].addcmul_(alpha[:, dst, j, :, None], h[:, src])
    return flat


def banded_scores(score_src: torch.Tensor, radius: int) -> torch.Tensor:
    """``[B, T, H]`` source scores -> ``[B, T, K, H]``: slot ``j`` of step ``t`` holds step ``t + j - r``'s.

    Slots beyond the window hold ``-inf`` (LeakyReLU keeps it), so a softmax gives them weight 0.
    """
    T = score_src.shape[1]
    padded = F.pad(score_src, (0, 0, radius, radius), value=float("-inf"))  # [B, T+2r, H]
    return torch.stack([padded[:, j : j + T] for j in range(2 * radius + 1)], dim=2)


def banded_aggregate(alpha: torch.Tensor, h: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`banded_sum`, through :class:`BandedSum` when a gradient is needed (else no autograd bookkeeping)."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (alpha, h, bias)):
        return BandedSum.apply(alpha, h, bias)
    return banded_sum(alpha, h, bias)


class BandedSum(torch.autograd.Function):
    """:func:`banded_sum` with its own backward.

    Autograd of the plain expression would keep a padded copy of ``h`` and one product per
    slot, and its backward would zero-fill and add a padded gradient per slot; here the
    backward is, like the forward, ``K`` multiply-adds on shifted slices (and ``K`` dot
    products over ``F`` for the weights).
    """

    @staticmethod
    def forward(ctx, alpha: torch.Tensor, h: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        ctx.save_for_backward(alpha, h)
        ctx.has_bias = bias is not None
        return banded_sum(alpha, h, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        alpha, h = ctx.saved_tensors
        grad = grad.reshape(h.shape)  # [B, T, H * F] -> [B, T, H, F]
        radius = alpha.shape[2] // 2
        grad_alpha = torch.zeros_like(alpha)
        grad_alpha[:, :, radius] = (grad * h).sum(-1)
        grad_h = alpha[:, :, radius, :, None] * grad
        for j, dst, src in _shifts(h.shape[1], radius):
            grad_alpha[:, dst, j] = (grad[:, dst] * h[:, src]).sum(-1)
            grad_h[:, src].addcmul_(alpha[:, dst, j, :, None], grad[:, dst])
        grad_bias = grad.sum((0, 1)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_alpha, grad_h, grad_bias
