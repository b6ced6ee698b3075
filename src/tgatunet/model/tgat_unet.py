"""The Temporal Graph Attention U-Net, standard and lightweight.

A window is a graph whose nodes are its time steps. For a batch ``[B, T, C]`` of values with their visibility mask:

1. input projection of ``[values * mask, mask]`` (``2C -> D``) plus sinusoidal positions;
2. encoder: ``encoder_layers`` levels, each a GAT block on the graph of its
   length, kept as a skip, then average-pooled to half the length;
3. bottleneck: ``transformer_layers`` pre-norm transformer layers over time;
4. decoder: ``decoder_layers`` levels, each upsampling to the matching encoder
   length and fusing the encoder skip (U-Net), then a GAT block;
5. heads: per-step reconstruction of all ``C`` channels (plus a linear path from the visible inputs of nearby steps),
   window logits from the time-pooled bottleneck, and the log of each reconstruction's expected absolute error
   (its spread: the scale of the completion intervals, :mod:`tgatunet.infer.intervals`).

Graphs: the full-resolution levels use the window's own graph when one is given (``neighbors``, e.g. a knn graph from
:mod:`tgatunet.graph.knn`), else the temporal graph of ``time_k``; pooled levels always use the temporal graph. A
data-dependent edge links two steps whose *values* were similar; a pooled node averages two steps, so such an edge
would not carry over.

The lightweight variant (``ModelSpec.lite``, config ``use_optimized_model``) has the same inputs, outputs and layout,
built from cheaper parts: :class:`~tgatunet.model.lite_gat.LiteGATConv` (one value projection shared by the heads,
dropout on its values instead of the block output), skips added instead of fused by a ``Linear(2D, D)``, and a
multi-query transformer with a feed-forward of 3/4 of the standard width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts

from tgatunet.model.dropout import Dropout
from tgatunet.model.gat import BatchedGATConv, Graph
from tgatunet.model.lite_gat import LiteGATConv
from tgatunet.model.transformer import TransformerLayer

Neighbors = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of a T-GAT-UNet; built from a :class:`tgatunet.config.Config` by :meth:`from_config`."""

    in_channels: int
    num_classes: int
    hidden_channels: int = 64
    encoder_layers: int = 2
    decoder_layers: int = 2
    transformer_layers: int = 1
    attention_heads: int = 2
    time_k: int = 1
    dropout: float = 0.1
    ff_multiplier: int = 2
    gradient_checkpoint: bool = False
    checkpoint_mode: str = "full"
    local_kernel: int = 7
    lite: bool = False

    @classmethod
    def from_config(cls, config, in_channels: int, num_classes: int) -> ModelSpec:
        m, perf = config.model, config.performance
        return cls(in_channels=in_channels, num_classes=num_classes, hidden_channels=m.hidden_channels, encoder_layers=m.encoder_layers,
                   decoder_layers=m.decoder_layers, transformer_layers=m.transformer_layers, attention_heads=m.attention_heads,
                   time_k=m.time_k, dropout=m.dropout, ff_multiplier=m.ff_multiplier, gradient_checkpoint=perf.use_gradient_checkpoint,
                   checkpoint_mode=perf.checkpoint_mode, lite=m.use_optimized_model)


def sinusoidal_positions(steps: int, dim: int, device: torch.device) -> torch.Tensor:
    """``[T, D]`` fixed sinusoidal position encoding (Vaswani et al., 2017)."""
    pos = torch.arange(steps, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = pos * freq  # [T, ceil(D/2)]
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, :dim]


def pool_pairs(h: torch.Tensor) -> torch.Tensor:
    """``[B, T, D] -> [B, ceil(T/2), D]``: mean of steps ``2t, 2t+1`` (an odd last step stays as it is).

    ``avg_pool1d(kernel_size=2, ceil_mode=True)`` along time, without transposing to ``[B, D, T]`` and back.
    """
    if h.shape[1] % 2:
        h = torch.cat([h, h[:, -1:]], dim=1)
    B, T, D = h.shape
    return h.view(B, T // 2, 2, D).mean(dim=2)


def upsample_to(h: torch.Tensor, steps: int) -> torch.Tensor:
    """``[B, T, D] -> [B, steps, D]`` by nearest neighbour: ``interpolate(mode="nearest")`` along time.

    The inverse of :func:`pool_pairs` (``ceil(steps / 2) == T``) is a broadcast copy of each step,
    whose backward is a sum over each pair instead of ``interpolate``'s index scatter.
    """
    B, T, D = h.shape
    if steps == T:
        return h
    if (steps + 1) // 2 == T:
        return h[:, :, None].expand(B, T, 2, D).reshape(B, 2 * T, D)[:, :steps]
    return F.interpolate(h.transpose(1, 2), size=steps, mode="nearest").transpose(1, 2)


class GATBlock(nn.Module):
    """Post-norm residual GAT block ``LayerNorm(x + Dropout(ELU(GAT(x, graph))))``, ``[B, T, D] -> [B, T, D]``.

    The lite block's GAT drops its shared values and weights itself, so the block adds no dropout.
    """

    def __init__(self, dim: int, heads: int, dropout: float, lite: bool) -> None:
        super().__init__()
        if lite:
            self.gat = LiteGATConv(dim, dim // heads, heads=heads, dropout=dropout)
        else:
            self.gat = BatchedGATConv(dim, dim // heads, heads=heads, concat=True, dropout=dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = Dropout(0.0 if lite else dropout)

    def forward(self, x: torch.Tensor, graph: Graph) -> torch.Tensor:
        # In place on the GAT's fresh output: autograd keeps ELU's result, so its backward needs no exponential.
        return self.norm(x + self.dropout(F.elu(self.gat(x, graph), inplace=True)))


# Selective checkpointing keeps what the matrix products computed and recomputes the element-wise work
# around them: the products are most of a block's FLOPs, their outputs a minority of its activations.
_MATRIX_PRODUCTS = [torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default]


def _keep_matrix_products():
    return create_selective_checkpoint_contexts(_MATRIX_PRODUCTS)


class TGATUNet(nn.Module):
    """T-GAT-UNet: ``(values [B, T, C], visible [B, T, C], neighbors) -> (recon [B, T, C], logits [B, classes], log_spread [B, T, C])``.

    ``neighbors``: optional ``(index [B, T, K] long, valid [B, T, K] bool)`` graph of the
    full-resolution levels; None: the temporal graph of ``time_k``.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        D, H, C, p = spec.hidden_channels, spec.attention_heads, spec.in_channels, spec.dropout
        self.input = nn.Linear(2 * C, D)
        self.encoder = nn.ModuleList(GATBlock(D, H, p, spec.lite) for _ in range(spec.encoder_layers))
        ff_dim = spec.ff_multiplier * D * 3 // 4 if spec.lite else spec.ff_multiplier * D
        self.bottleneck = nn.ModuleList(
            TransformerLayer(D, H, ff_dim, p, kv_heads=1 if spec.lite else H, attention_dropout=0.0 if spec.lite else p)
            for _ in range(spec.transformer_layers)
        )
        # The lite model adds the skip to the upsampled features; the GAT block that follows mixes them.
        self.fuse = None if spec.lite else nn.ModuleList(nn.Linear(2 * D, D) for _ in range(spec.decoder_layers))
        self.decoder = nn.ModuleList(GATBlock(D, H, p, spec.lite) for _ in range(spec.decoder_layers))
        self.reconstruct = nn.Linear(D, C)
        # A linear path from the visible inputs of nearby steps straight to the output: the
        # network then only has to learn what a local linear map cannot.
        self.local = nn.Conv1d(2 * C, C, spec.local_kernel, padding=spec.local_kernel // 2, padding_mode="replicate")
        self.classify = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, D), nn.GELU(), Dropout(p), nn.Linear(D, spec.num_classes))
        # Reads the decoder's features without training them (see forward), and starts at zero without drawing from
        # the random generator: adding it leaves the rest of a seeded run's training exactly as it was.
        self.spread = nn.utils.skip_init(nn.Linear, D, C)
        nn.init.zeros_(self.spread.weight)
        nn.init.zeros_(self.spread.bias)

    def network_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the spread head's: those the reconstruction and classification losses train."""
        return [p for name, p in self.named_parameters() if not name.startswith("spread.")]

    def _run(self, module: nn.Module, *args) -> torch.Tensor:
        # With gradient checkpointing every block but the last two decoder blocks is recomputed:
        # backward uses and frees those two first, so recomputing them would mostly cost time.
        last = list(self.decoder)[-2:]
        if self.spec.gradient_checkpoint and self.training and torch.is_grad_enabled() and not any(module is b for b in last):
            selective = {"context_fn": _keep_matrix_products} if self.spec.checkpoint_mode == "selective" else {}
            return checkpoint(module, *args, use_reentrant=False, **selective)
        return module(*args)

    def forward(self, values: torch.Tensor, visible: torch.Tensor,
                neighbors: Neighbors | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = values.shape
        vis = visible.to(values.dtype)
        x = torch.cat([values * vis, vis], dim=-1)  # [B, T, 2C]
        h = self.input(x) + sinusoidal_positions(T, self.spec.hidden_channels, x.device).to(x.dtype)  # [B, T, D]

        def graph(steps: int) -> Graph:
            return neighbors if neighbors is not None and steps == T else self.spec.time_k

        skips = []
        for block in self.encoder:
            h = self._run(block, h, graph(h.shape[1]))  # [B, T_l, D]
            skips.append(h)
            h = pool_pairs(h)  # [B, ceil(T_l/2), D]

        for layer in self.bottleneck:
            h = self._run(layer, h)
        logits = self.classify(h.mean(dim=1))  # [B, classes]

        for i, block in enumerate(self.decoder):
            # Decoder level i pairs with encoder level E-1-i; extra levels reuse full resolution.
            skip = skips[len(skips) - 1 - i] if i < len(skips) else skips[0]
            h = upsample_to(h, skip.shape[1])
            h = h + skip if self.fuse is None else self.fuse[i](torch.cat([h, skip], dim=-1))
            h = self._run(block, h, graph(skip.shape[1]))  # [B, T_l, D]
        h = upsample_to(h, T)
        local = self.local(x.transpose(1, 2)).transpose(1, 2)  # [B, T, C]
        # The spread is learnt from the features as they are: its loss must not bend the reconstruction it judges.
        log_spread = self.spread(h.detach()).clamp(-10.0, 10.0)  # [B, T, C]
        return self.reconstruct(h) + local, logits, log_spread
