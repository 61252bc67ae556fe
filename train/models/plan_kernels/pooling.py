"""Stride-2 serialized pooling of one voxel level, compiled (spec A6, decisions 40 and 47).

Clusters are the points of equal ``code >> 3`` (equal cloud and ``grid >> 1``), numbered in the
order of the first curve; every curve keeps each cluster contiguous (the prefix property of the
codes), so a curve's coarse order is its fine order's clusters, each taken once. The NumPy form
(gathers of the four curves, boolean compaction, ``put_along_axis``) made a dozen passes over the
level's arrays; these loops make one or two.
"""
from __future__ import annotations

import numpy as np

from fast.jit import kernel


@kernel
def pool_clusters(code0: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``cluster`` (n,) of every point, ``head`` (m,) the first point of each cluster in curve 0,
    the coarse ``order`` (k, m) of every curve and its ``inverse`` (k, m), from the first curve's
    codes ``code0`` (n,) and the fine orders ``order`` (k, n). Raises ValueError if a curve splits
    a cluster (codes without the prefix property)."""
    k, n = order.shape
    cluster = np.empty(n, dtype=np.int64)
    m = 0
    previous = np.int64(-1)
    for j in range(n):
        key = code0[order[0, j]] >> 3
        if j == 0 or key != previous:
            m += 1
            previous = key
        cluster[order[0, j]] = m - 1
    head = np.empty(m, dtype=np.int64)
    last = -1
    for j in range(n):
        c = cluster[order[0, j]]
        if c != last:
            head[c] = order[0, j]
            last = c
    coarse = np.empty((k, m), dtype=np.int64)
    inverse = np.empty((k, m), dtype=np.int64)
    for row in range(k):
        w = 0
        last = -1
        for j in range(n):
            c = cluster[order[row, j]]
            if c != last:
                if w == m:
                    raise ValueError("a serialization curve splits a pooling cluster: codes lack the prefix property")
                coarse[row, w] = c
                inverse[row, c] = w
                w += 1
                last = c
    return cluster, head, coarse, inverse


@kernel
def cluster_members(cluster: np.ndarray, num_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """(num_clusters, S) members of each cluster in ascending order, padded with ``len(cluster)``
    (a -inf row), S = the largest cluster (a counting sort); and the slot (n,) of every member
    in that table, flattened (``row * S + column``)."""
    n = cluster.shape[0]
    size = np.empty(num_clusters, dtype=np.int64)
    for c in range(num_clusters):
        size[c] = 0
    for p in range(n):
        size[cluster[p]] += 1
    widest = 0
    for c in range(num_clusters):
        widest = max(widest, size[c])
        size[c] = 0
    table = np.empty((num_clusters, widest), dtype=np.int64)
    for c in range(num_clusters):
        for s in range(widest):
            table[c, s] = n
    slot = np.empty(n, dtype=np.int64)
    for p in range(n):
        c = cluster[p]
        table[c, size[c]] = p
        slot[p] = c * widest + size[c]
        size[c] += 1
    return table, slot
