"""Graphs over the time steps of a window, in the fixed-degree form the batched GAT consumes.

* :mod:`~tgatunet.graph.temporal`: the temporal graph;
* :mod:`~tgatunet.graph.knn`: the knn graph (temporal edges plus similar steps, data-dependent);
* :mod:`~tgatunet.graph.cache`: knn graphs by content, on disk;
* :mod:`~tgatunet.graph.precompute`: a dataset's knn graphs built ahead of evaluation and completion.
"""
