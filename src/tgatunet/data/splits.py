"""Splitting by block, never by window.

Overlapping windows of one block share most of their rows, so a split by window would put the same measurements in
training and test. Blocks are assigned whole: by ``split_col`` when the user fixed them, otherwise by a seeded split
stratified by each block's majority label.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def _allocate(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Blocks for (val, test) out of ``n``, leaving at least one for training."""
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    while n_val + n_test >= n and (n_val or n_test):
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def split_blocks(block_labels: dict[str, int], val_fraction: float, test_fraction: float, seed: int,
                 fixed: dict[str, str] | None = None) -> dict[str, str]:
    """Block key -> ``train``, ``val`` or ``test``, for ``block_labels`` (block key -> majority class, -1: unlabelled).

    ``fixed``: block key -> split given by ``split_col``. Fixed ``test`` and ``val`` blocks are kept; when no block
    is fixed to ``val`` (or to ``test``), that split is drawn from the ``train`` blocks.
    """
    fixed = fixed or {}
    result = {key: fixed[key] for key in block_labels if key in fixed}
    has = {name: any(v == name for v in result.values()) for name in SPLITS}
    draw_val = 0.0 if has["val"] else val_fraction
    draw_test = 0.0 if has["test"] else test_fraction
    free = [k for k in block_labels if result.get(k, "train") == "train"]

    rng = np.random.default_rng(seed)
    by_label: dict[int, list[str]] = {}
    for key in sorted(free):
        by_label.setdefault(block_labels[key], []).append(key)
    # Stratified: each class keeps at least one training block, so a rare class is never
    # lost to val/test; classes too small to give any block are left whole in train.
    for label in sorted(by_label):
        group = by_label[label]
        order = [group[i] for i in rng.permutation(len(group))]
        n_val, n_test = _allocate(len(order), draw_val, draw_test)
        for i, key in enumerate(order):
            result[key] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    # When every class was too small to give a val (or test) block, take one from the class
    # with the most training blocks, as long as it keeps one.
    for name, fraction in (("val", draw_val), ("test", draw_test)):
        if fraction > 0 and not any(v == name for v in result.values()):
            train_by_label = {label: [k for k in keys if result[k] == "train"] for label, keys in by_label.items()}
            label = max(train_by_label, key=lambda lab: (len(train_by_label[lab]), -lab))
            if len(train_by_label[label]) >= 2:
                result[train_by_label[label][int(rng.integers(len(train_by_label[label])))]] = name
    return result
