"""The knn graph: the temporal graph plus links between similar time steps.

Every step ``t`` of a window keeps its temporal neighbours (the steps within ``time_k``, self loop included, as in
:func:`temporal_neighbors`) and is also linked to the ``k`` steps ``j`` outside that range with the smallest masked
distance

.. math::

    d(t, j) = \\frac{\\sum_c v_{tc} v_{jc} (x_{tc} - x_{jc})^2}{\\sum_c v_{tc} v_{jc}}

over the channels ``c`` visible at both steps (``v`` is the visibility mask the model receives). Only what the model
is allowed to see enters the graph: a hidden or unobserved value changes nothing, so it cannot leak through the
graph's structure. A pair with no channel visible at both steps is never linked; a step with nothing visible keeps
only its temporal edges. Edges point from ``j`` to ``t`` (``j`` is in ``t``'s neighbourhood); the graph is directed.

Representation: the fixed-degree table :class:`tgatunet.model.gat.BatchedGATConv` gathers from, ``index [B, T, K]``
with ``valid [B, T, K]``, ``K = 2 * time_k + 1 + k``: the temporal slots first, then the ``k`` nearest steps, nearest
first (slots with no candidate are invalid).

Cost per window: time ``O(T^2 * C)`` for two matrix products (``[T, 3C] x [3C, T]`` and ``[T, C] x [C, T]``), then
three in-place passes and a top-k over the ``[T, T]`` distances; memory ``O(T^2)``: two ``[T, T]`` float32 matrices (T
= 128: 64 KiB each, T = 1024: 4 MiB each). Windows are processed in chunks of at most ``chunk_elements / T^2``
windows, which bounds each matrix at ``4 * chunk_elements`` bytes (16 MiB by default) whatever the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tgatunet.graph.temporal import temporal_neighbors


@dataclass(frozen=True)
class KnnGraph:
    """Builder of knn graphs with ``k`` similar steps per node on top of the temporal graph of ``time_k``."""

    k: int
    time_k: int
    chunk_elements: int = 2**22

    @classmethod
    def from_config(cls, config) -> KnnGraph:
        return cls(k=config.model.graph_knn, time_k=config.model.time_k)

    @property
    def degree(self) -> int:
        """Slots per node: temporal neighbours, then knn neighbours."""
        return 2 * self.time_k + 1 + self.k

    @property
    def signature(self) -> str:
        """Everything the graph depends on besides the window's data (part of every cache key)."""
        return f"knn/k={self.k}/time_k={self.time_k}"

    @torch.no_grad()
    def build(self, values: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Neighbour tables ``index [B, T, K]`` long and ``valid [B, T, K]`` bool, on ``values``' device.

        ``values [B, T, C]`` may hold anything where ``visible [B, T, C]`` (what the model may see) is False.
        """
        B, T, _ = values.shape
        if self.k > T:
            raise ValueError(f"knn graph: k ({self.k}) exceeds the window's {T} steps")
        chunk = max(1, self.chunk_elements // (T * T))
        # Distances decide which edges exist: compute them in float32 whatever autocast says.
        with torch.autocast(device_type=values.device.type, enabled=False):
            parts = [self._build(values[lo : lo + chunk], visible[lo : lo + chunk]) for lo in range(0, B, chunk)]
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _build(self, values: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = values.shape
        v = visible.float()  # [B, T, C]
        x = torch.where(visible, values.float(), 0.0)  # [B, T, C]
        sq = x * x
        shared = v @ v.mT  # [B, T, T] channels visible at both steps
        # sum_c v_tc v_jc (x_tc - x_jc)^2 = sum_c (x_tc^2 v_jc + v_tc x_jc^2 - 2 x_tc x_jc), since x is 0
        # where v is: one matrix product of [x^2, v, x] with [v, x^2, -2x] over 3C features.
        dist = torch.cat([sq, v, x], dim=2) @ torch.cat([v, sq, -2.0 * x], dim=2).mT  # [B, T, T]
        # Mean over shared channels; rounding can leave tiny negatives. A pair sharing nothing has
        # every term exactly 0, so 0 / 0 = NaN marks it, and it becomes +inf: never a neighbour.
        dist = dist.clamp_(min=0.0).div_(shared).nan_to_num_(nan=float("inf"))
        t_index, t_valid = temporal_neighbors(T, self.time_k, str(values.device))  # [T, K0]
        t_index, t_valid = t_index.expand(B, -1, -1), t_valid.expand(B, -1, -1)
        # Temporal neighbours are linked already; clamped slots point at steps inside the range too.
        dist.scatter_(2, t_index, float("inf"))
        nearest, knn_index = dist.topk(self.k, dim=2, largest=False)  # [B, T, k], nearest first
        index = torch.cat([t_index, knn_index], dim=2)
        valid = torch.cat([t_valid, nearest.isfinite()], dim=2)
        return index, valid
