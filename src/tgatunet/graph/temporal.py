"""The temporal graph: every time step linked to the steps within ``time_k``.

Representation: a fixed-degree neighbour table instead of an edge list. Node ``t`` has ``K = 2 * time_k + 1`` neighbour
slots ``t - time_k ... t + time_k`` (its self loop included); slots that fall outside the window are marked invalid. The
model's layers never need this table: on the temporal graph, neighbour slot ``j`` of every node is the sequence shifted
by ``j - time_k``, so they read shifted slices (:class:`~tgatunet.model.gat.BandedSum`) given just ``time_k``. The table
is the first ``K`` slots of every knn graph (:mod:`tgatunet.graph.knn`), and what the layers are tested against.

Cost: ``O(T * K)`` time and memory.
"""

from __future__ import annotations

import torch


def temporal_neighbors(num_steps: int, time_k: int, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbour table of the temporal graph: ``index [T, K]`` long, each slot's step (clamped into range), and
    ``valid [T, K]`` bool, whether the slot is a real edge."""
    offsets = torch.arange(-time_k, time_k + 1, device=device)  # [K]
    raw = torch.arange(num_steps, device=device)[:, None] + offsets[None, :]  # [T, K]
    valid = (raw >= 0) & (raw < num_steps)
    return raw.clamp(0, num_steps - 1), valid


def neighbors_to_edge_index(index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``[T, K]`` table -> PyG-style ``edge_index [2, E]`` (row 0 source, row 1 target)."""
    target = torch.arange(index.shape[0], device=index.device)[:, None].expand_as(index)
    return torch.stack([index[valid], target[valid]])
