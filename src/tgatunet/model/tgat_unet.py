"""The Temporal Graph Attention U-Net.

A window is a graph whose nodes are its time steps. The network, for a batch
``[B, T, C]`` of values with their visibility mask:

1. input projection of ``[values, mask]`` (``2C -> D``) plus sinusoidal positions;
2. encoder: ``encoder_layers`` levels, each a GAT block on the graph of its
   length, saved as a skip, then average-pooled to half the length;
3. bottleneck: ``transformer_layers`` pre-norm transformer layers over time
   (``scaled_dot_product_attention`` underneath);
4. decoder: ``decoder_layers`` levels, each upsampling to the matching encoder
   length, fusing the encoder skip (U-Net), then a GAT block;
5. heads: per-step reconstruction of all ``C`` channels, and window logits from
   the time-pooled bottleneck.

Graphs: the levels at full resolution use the window's own graph when one is
given (``neighbors``, e.g. a knn graph from :mod:`tgatunet.graph.knn`), else
the temporal graph; the pooled levels always use the temporal graph of their
length. A data-dependent edge links two steps whose *values* were similar; a
pooled node averages two steps, so an edge between pooled nodes would mix
similarities measured elsewhere, and at the lowest level the bottleneck's
attention already relates every pair of steps.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tgatunet.graph import temporal_neighbors
from tgatunet.model.compile import uncached_when_compiling
from tgatunet.model.dropout import Dropout
from tgatunet.model.gat import BatchedGATConv
from tgatunet.model.resample import pool_pairs, upsample_to
from tgatunet.model.transformer import TransformerLayer


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of a T-GAT-UNet; built from a :class:`tgatunet.config.Config`."""

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
    local_kernel: int = 7
    lite: bool = False

    @classmethod
    def from_config(cls, config, in_channels: int, num_classes: int) -> ModelSpec:
        return cls(
            in_channels=in_channels,
            num_classes=num_classes,
            hidden_channels=config.hidden_channels,
            encoder_layers=config.encoder_layers,
            decoder_layers=config.decoder_layers,
            transformer_layers=config.transformer_layers,
            attention_heads=config.attention_heads,
            time_k=config.time_k,
            dropout=config.dropout,
            ff_multiplier=config.ff_multiplier,
            gradient_checkpoint=config.use_gradient_checkpoint,
            lite=config.use_optimized_model,
        )


@functools.lru_cache(maxsize=64)
def sinusoidal_positions(steps: int, dim: int, device: torch.device) -> torch.Tensor:
    """``[T, D]`` fixed sinusoidal position encoding (Vaswani et al., 2017); built once per shape and device."""
    # Cached and shared: built outside inference mode, so training can use a table first built in evaluation.
    with torch.inference_mode(False):
        pos = torch.arange(steps, device=device, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(steps, dim, device=device)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
        return table


def local_linear(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` (odd kernel ``k``, replicate padding, stride 1) applied along time to ``x [B, T, C_in]``: ``[B, T, C_out]``.

    The same function as ``conv(x.transpose(1, 2)).transpose(1, 2)``, as one matrix product of
    each step's ``[C_in * k]`` window with the ``[C_out, C_in * k]`` kernel. Convolution kernels
    are slow for so few channels (``2C -> C``), and ``x`` (inputs) needs no gradient, so the
    backward pass is the kernel's gradient alone, one more matrix product.
    """
    k = conv.kernel_size[0]
    B, T, C = x.shape
    edge = k // 2
    padded = torch.cat([x[:, :1].expand(B, edge, C), x, x[:, -1:].expand(B, edge, C)], dim=1)  # replicate: [B, T+k-1, C]
    # Step t's window, rows t .. t+k-1 of ``padded``, is k * C consecutive values: a strided view, tap-major.
    windows = padded.as_strided((B, T, k * C), (padded.stride(0), C, 1)).reshape(B * T, k * C)  # one row copy each
    out = F.linear(windows, conv.weight.transpose(1, 2).flatten(1), conv.bias)  # kernel as [C_out, k * C_in]
    return out.view(B, T, -1)


class GATBlock(nn.Module):
    """Post-norm residual GAT block: ``LayerNorm(x + Dropout(ELU(GAT(x))))``, ``[B, T, D] -> [B, T, D]``."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.gat = BatchedGATConv(dim, dim // heads, heads=heads, concat=True, dropout=dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, index: torch.Tensor, valid: torch.Tensor, radius: int | None = None) -> torch.Tensor:
        """``x [B, T, D]``; ``index, valid``: neighbour table ``[T, K]`` or ``[B, T, K]``; ``radius``:
        ``time_k`` when the table is the temporal graph's (see :class:`BatchedGATConv`)."""
        # In place on the GAT's fresh output, so autograd keeps ELU's result and its backward needs
        # no exponential (the out-of-place ELU recomputes one from its input).
        return self.norm(x + self.dropout(F.elu(self.gat(x, index, valid, radius), inplace=True)))


class TGATUNet(nn.Module):
    """T-GAT-UNet: ``(values [B, T, C], visible [B, T, C], neighbors) -> (recon [B, T, C], logits [B, K])``.

    ``neighbors``: optional ``(index [B, T, K] long, valid [B, T, K] bool)`` graph of the
    full-resolution levels; None: the temporal graph of ``time_k``.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        D = spec.hidden_channels
        self.input = nn.Linear(2 * spec.in_channels, D)
        self.encoder = nn.ModuleList(GATBlock(D, spec.attention_heads, spec.dropout) for _ in range(spec.encoder_layers))
        self.bottleneck = nn.ModuleList(
            TransformerLayer(D, spec.attention_heads, spec.ff_multiplier * D, spec.dropout)
            for _ in range(spec.transformer_layers)
        )
        self.fuse = nn.ModuleList(nn.Linear(2 * D, D) for _ in range(spec.decoder_layers))
        self.decoder = nn.ModuleList(GATBlock(D, spec.attention_heads, spec.dropout) for _ in range(spec.decoder_layers))
        self.reconstruct = nn.Linear(D, spec.in_channels)
        # A linear path from the visible inputs of nearby steps straight to the output: the
        # network then only has to learn what a local linear map cannot.
        self.local = nn.Conv1d(
            2 * spec.in_channels, spec.in_channels, spec.local_kernel, padding=spec.local_kernel // 2, padding_mode="replicate"
        )
        self.classify = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, D), nn.GELU(), Dropout(spec.dropout), nn.Linear(D, spec.num_classes))

    def _run(self, module: nn.Module, *args) -> torch.Tensor:
        # The last two decoder blocks keep their activations: backward uses and frees them first,
        # before it recomputes any other block, so recomputing them would mostly cost time
        # (measured at the guide's presets, window 128: 41-44% less peak memory at 1.3x step
        # time, against 51-53% at 1.5x when every block is recomputed).
        if (
            self.spec.gradient_checkpoint
            and self.training
            and torch.is_grad_enabled()
            and not any(module is block for block in list(self.decoder)[-2:])
        ):
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def _graph(self, steps: int, full: int, neighbors, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int | None]:
        """``(index, valid, radius)`` of a level of ``steps`` steps; ``radius`` is ``time_k`` for the temporal graph."""
        if neighbors is not None and steps == full:
            return (*neighbors, None)
        return (*uncached_when_compiling(temporal_neighbors, steps, self.spec.time_k, str(device)), self.spec.time_k)

    def forward(
        self,
        values: torch.Tensor,
        visible: torch.Tensor,
        neighbors: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = values.shape
        vis = visible.to(values.dtype)
        x = torch.cat([values * vis, vis], dim=-1)  # [B, T, 2C]
        h = self.input(x)  # [B, T, D]
        h = h + uncached_when_compiling(sinusoidal_positions, T, h.shape[-1], h.device).to(h.dtype)

        skips = []
        for block in self.encoder:
            h = self._run(block, h, *self._graph(h.shape[1], T, neighbors, h.device))  # [B, T_l, D]
            skips.append(h)
            h = pool_pairs(h)  # [B, ceil(T_l/2), D]

        for layer in self.bottleneck:
            h = self._run(layer, h)  # [B, T_E, D]
        logits = self.classify(h.mean(dim=1))  # [B, K]

        for i, (fuse, block) in enumerate(zip(self.fuse, self.decoder)):
            # Decoder level i pairs with encoder level E-1-i; extra levels reuse full resolution.
            skip = skips[len(skips) - 1 - i] if i < len(skips) else skips[0]
            h = upsample_to(h, skip.shape[1])
            graph = self._graph(skip.shape[1], T, neighbors, h.device)
            h = self._run(block, fuse(torch.cat([h, skip], dim=-1)), *graph)  # [B, T_l, D]
        h = upsample_to(h, T)
        local = local_linear(self.local, x)  # [B, T, C]
        return self.reconstruct(h) + local, logits
