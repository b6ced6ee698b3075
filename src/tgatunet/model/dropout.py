"""Dropout whose random mask costs a quarter of a random draw per element on CPU.

Inverted dropout (Srivastava et al., 2014): each element of ``x`` is zeroed with probability ``p``, the others are
scaled so the expectation is unchanged,

.. math::

    y_i = x_i \\, m_i / (1 - p), \\qquad m_i \\sim \\mathrm{Bernoulli}(1 - p).

Why not ``torch.nn.functional.dropout`` on CPU: it draws each element's Bernoulli sample separately, the largest cost
of a CPU training step after the matrix products (docs/PERFORMANCE.md has the measured effect). Here one 64-bit draw
of torch's generator decides four elements: element ``i`` is dropped when its 16-bit share ``u_i`` (uniform on
``0 .. 65535``) is below ``round(65536 p)``. The drop rate is therefore ``p`` rounded to a multiple of ``2^-16`` (off
by at most ``7.6e-6``), and kept values are scaled by the exact ``1 / (1 - p')`` of that rate, so ``E[y] = x`` holds
exactly. The draws come from torch's default generator: seeding (``torch.manual_seed``, Lightning's
``seed_everything``) and gradient checkpointing's saved RNG state apply as to any torch random op.

On other devices, for 16-bit floats (which cannot hold the 16-bit shares exactly) and inside ``torch.compile``,
torch's own dropout is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 2**16  # one decision per 16 random bits


def draws_shares(x: torch.Tensor) -> bool:
    """Whether :func:`dropout` masks ``x`` with 16-bit shares of 64-bit draws (else torch's dropout)."""
    # 16-bit shares compared in bfloat16/float16 would be rounded (a biased rate): torch's dropout there.
    # Under torch.compile, torch's dropout: the compiler draws its numbers inside the fused kernel,
    # while random_ breaks the graph, and a break inside a checkpointed block runs that block eagerly.
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not torch.compiler.is_compiling()


def _shares_mask(x: torch.Tensor, dropped_levels: int) -> torch.Tensor:
    """Scaled keep-mask of ``x``'s shape and dtype: 0 at rate ``dropped_levels / 2^16``, else ``1 / (1 - rate)``."""
    n = x.numel()
    # random_(int64 min, None) fills the full 64-bit range; each int16 view is then uniform on [-2^15, 2^15).
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    shares = words.view(torch.int16)[:n].view(x.shape)
    # Compared in x's dtype, in place: int16 -> float and float >= float are vectorised on CPU,
    # while a bool result and its conversion to float cost several times more.
    return shares.to(x.dtype).ge_(dropped_levels - _LEVELS // 2).mul_(_LEVELS / (_LEVELS - dropped_levels))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``x`` with elements zeroed at rate ``p`` (rounded to ``2^-16`` on CPU) and the rest scaled.

    ``x`` itself when not training, or when ``p`` rounds to 0 (``p < 2^-17``).
    """
    dropped_levels = round(p * _LEVELS)
    if not training or dropped_levels == 0:
        return x
    if not draws_shares(x) or dropped_levels >= _LEVELS:
        return F.dropout(x, p, training=True)
    return x * _shares_mask(x, dropped_levels)


class Dropout(nn.Module):
    """:func:`dropout` as a module, a drop-in for ``nn.Dropout(p)``; any shape in, the same shape out."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
