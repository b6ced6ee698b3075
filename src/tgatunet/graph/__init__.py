"""Graphs over the time steps of a window, in the fixed-degree form the batched GAT consumes."""

from tgatunet.graph.temporal import temporal_neighbors

__all__ = ["temporal_neighbors"]
