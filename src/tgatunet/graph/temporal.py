"""The temporal graph: every time step linked to the steps within ``time_k``.

Representation: a fixed-degree neighbour table instead of an edge list. Node
``t`` has ``K = 2 * time_k + 1`` neighbour slots ``t - time_k ... t + time_k``
(its self loop included); slots that fall outside the window are marked
invalid. This is what :class:`tgatunet.model.gat.BatchedGATConv` gathers from,
for a whole batch at once.

Cost: ``O(T * K)`` time and memory, built once per (T, time_k, device) and
reused, since it depends on nothing but those.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=64)
def temporal_neighbors(num_steps: int, time_k: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbour table of the temporal graph.

    Returns:
        ``index [T, K]`` long: neighbour step of each slot (clamped into range),
        ``valid [T, K]`` bool: whether the slot is a real edge.
    """
    # The tables are cached and shared: one first built under inference mode (evaluation)
    # would be an inference tensor, which a later training step could not save for backward.
    with torch.inference_mode(False):
        offsets = torch.arange(-time_k, time_k + 1, device=device)  # [K]
        steps = torch.arange(num_steps, device=device)[:, None]  # [T, 1]
        raw = steps + offsets[None, :]  # [T, K]
        valid = (raw >= 0) & (raw < num_steps)
        return raw.clamp(0, num_steps - 1), valid


def neighbors_to_edge_index(index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``[T, K]`` table -> PyG-style ``edge_index [2, E]`` (row 0 source, row 1 target)."""
    target = torch.arange(index.shape[0], device=index.device)[:, None].expand_as(index)
    return torch.stack([index[valid], target[valid]])
