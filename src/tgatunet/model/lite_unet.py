"""The lightweight T-GAT-UNet (``use_optimized_model: true``).

Same inputs, outputs and U-Net layout as :class:`tgatunet.model.tgat_unet.TGATUNet`
(``(values [B, T, C], visible [B, T, C], neighbors) -> (recon [B, T, C], logits [B, K])``,
encoder levels pooled by 2, transformer bottleneck, decoder levels with skips,
reconstruction plus a local linear path, classification from the pooled
bottleneck), built from cheaper parts.

Where the standard model's training step goes (profiled on CPU at the medium
preset, window 128): of the activations kept for backward, 69% belong to the GAT
blocks (46% to the two full-resolution ones), 14% to the transformer layer, 8%
to the skip fusion; of the time, the GAT neighbour aggregation (``bmm`` over the
gathered ``[B, T, K, H, F]`` neighbours and the ``permute`` copy it needs) ~33%,
linear layers ~11%, the neighbour gather and its scatter-add backward ~7%,
dropout masks ~7%. What replaces each part here:

* **GAT layers** (most of the time and activation memory, at full resolution):
  :class:`~tgatunet.model.lite_gat.LiteGATConv` shares one value projection
  across heads and fuses the attention scores into it (``D * (D/H + 2H)``
  weights instead of ``D * D``; ``H`` times smaller neighbour features), and on
  the temporal graph it reads neighbours as shifted views instead of a gathered
  ``[B, T, K, H, F]`` copy.
* **Skip fusion**: the standard ``Linear(2D, D)`` over ``concat(up, skip)``
  (``2D^2`` weights, a ``[B, T, 2D]`` concat kept for backward) becomes a sum
  ``up + skip``; the GAT block that follows mixes them.
* **Bottleneck**: :class:`~tgatunet.model.mqa_transformer.MultiQueryTransformerLayer`
  (fused QKV with one shared key/value head: ``D * (D + 2D/H)`` weights instead
  of ``3D^2``; a feed-forward of 3/4 of the standard width; fused attention
  kernel in training too).
* **Pooling / upsampling** stay in the ``[B, T, D]`` layout (pairwise mean and
  repeat) instead of transposing to ``[B, D, T]`` and back.

Gradient checkpointing (``spec.gradient_checkpoint``) recomputes each GAT block
and transformer layer in the backward pass, except the last two decoder blocks,
as in the standard model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tgatunet.model.compile import uncached_when_compiling
from tgatunet.model.dropout import Dropout
from tgatunet.model.lite_gat import LiteGATConv
from tgatunet.model.mqa_transformer import MultiQueryTransformerLayer
from tgatunet.model.resample import pool_pairs, upsample_to
from tgatunet.model.tgat_unet import ModelSpec, TGATUNet, local_linear, sinusoidal_positions

Neighbors = tuple[torch.Tensor, torch.Tensor]


class LiteGATBlock(nn.Module):
    """Post-norm residual block ``LayerNorm(x + ELU(LiteGAT(x)))``, ``[B, T, D] -> [B, T, D]``.

    Dropout acts inside the GAT, on its ``[B, T, D/H]`` shared values and its
    attention coefficients, rather than on the ``[B, T, D]`` output: the random
    mask is ``H`` times smaller, and drawing it is a large share of a CPU step.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.gat = LiteGATConv(dim, dim // heads, heads=heads, dropout=dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, time_k: int, neighbors: Neighbors | None = None) -> torch.Tensor:
        return self.norm(x + F.elu(self.gat(x, time_k, neighbors), inplace=True))


class LiteTGATUNet(nn.Module):
    """Lightweight T-GAT-UNet: ``(values [B, T, C], visible [B, T, C], neighbors) -> (recon [B, T, C], logits [B, K])``.

    ``neighbors``: optional ``(index, valid)`` table ``[B, T, K]`` (or ``[T, K]``) for the
    full-resolution levels; None: the temporal graph of ``time_k``. Pooled levels
    always use the temporal graph of their length.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        D, H, C = spec.hidden_channels, spec.attention_heads, spec.in_channels
        self.input = nn.Linear(2 * C, D)
        self.encoder = nn.ModuleList(LiteGATBlock(D, H, spec.dropout) for _ in range(spec.encoder_layers))
        ff_dim = max(1, 3 * spec.ff_multiplier * D // 4)
        self.bottleneck = nn.ModuleList(
            MultiQueryTransformerLayer(D, H, ff_dim, spec.dropout) for _ in range(spec.transformer_layers)
        )
        self.decoder = nn.ModuleList(LiteGATBlock(D, H, spec.dropout) for _ in range(spec.decoder_layers))
        self.reconstruct = nn.Linear(D, C)
        self.local = nn.Conv1d(2 * C, C, spec.local_kernel, padding=spec.local_kernel // 2, padding_mode="replicate")
        self.classify = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, D), nn.GELU(), Dropout(spec.dropout), nn.Linear(D, spec.num_classes))

    # Gradient checkpointing as in the standard model: every block but the last two decoder blocks.
    _run = TGATUNet._run

    def forward(
        self, values: torch.Tensor, visible: torch.Tensor, neighbors: Neighbors | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = values.shape
        k = self.spec.time_k
        vis = visible.to(values.dtype)
        x = torch.cat([values * vis, vis], dim=-1)  # [B, T, 2C]
        h = self.input(x)  # [B, T, D]
        h = h + uncached_when_compiling(sinusoidal_positions, T, h.shape[-1], h.device).to(h.dtype)

        skips = []
        for level, block in enumerate(self.encoder):
            h = self._run(block, h, k, neighbors if level == 0 else None)  # [B, T_l, D]
            skips.append(h)
            h = pool_pairs(h)  # [B, ceil(T_l/2), D]

        for layer in self.bottleneck:
            h = self._run(layer, h)  # [B, T_E, D]
        logits = self.classify(h.mean(dim=1))  # [B, K]

        for i, block in enumerate(self.decoder):
            # Decoder level i pairs with encoder level E-1-i; extra levels reuse full resolution.
            level = len(skips) - 1 - i if i < len(skips) else 0
            h = upsample_to(h, skips[level].shape[1]) + skips[level]
            h = self._run(block, h, k, neighbors if level == 0 else None)  # [B, T_l, D]
        h = upsample_to(h, T)
        local = local_linear(self.local, x)  # [B, T, C]
        return self.reconstruct(h) + local, logits
