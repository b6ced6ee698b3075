"""Graphs over the time steps of a window, in the fixed-degree form the batched GAT consumes.

* :mod:`~tgatunet.graph.temporal`: the temporal graph (structure only, in-process LRU);
* :mod:`~tgatunet.graph.knn`: the knn graph (temporal edges plus similar steps, data-dependent);
* :mod:`~tgatunet.graph.cache`: knn graphs by content, in memory and on disk;
* :mod:`~tgatunet.graph.precompute`: a dataset's knn graphs built ahead of training, in parallel.
"""

from tgatunet.graph.knn import KnnGraph
from tgatunet.graph.temporal import temporal_neighbors

__all__ = ["KnnGraph", "temporal_neighbors"]
