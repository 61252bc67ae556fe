"""H0 persistence of a Vietoris-Rips filtration as a minimum spanning tree (dense Prim).

Paper Sec. 3.2.1 / Algorithm 3 lines 15-17, decisions 2-3: every finite H0 pair of a Rips
filtration is born at 0 and dies at the length of one edge of a minimum spanning tree (the edge
that merges two components, in Kruskal's order); the single essential class is dropped. On a
tie-free distance matrix the minimum spanning tree is unique, so the edges found here are exactly
the death edges the reference (``reference.persistence``, a union-find over sorted edges) reports.

Why hand-written and not a general persistence engine: measured on this machine, dense Prim in
numpy takes ~7 ms at N=1024 while giotto-ph's H0 takes ~150 ms; and scipy's
``minimum_spanning_tree`` treats zero distances (duplicated points) as missing edges, which
would change the tree. Prim on a dense matrix is O(N^2) time with an O(N) frontier.
"""
from __future__ import annotations

import numpy as np


def prim_mst_edges(dist: np.ndarray) -> np.ndarray:
    """Edges of a minimum spanning tree of the complete graph weighted by ``dist``.

    Args:
        dist: (N, N) float64 symmetric distance matrix (zero diagonal; zeros off the diagonal
            are legitimate edges of length 0, e.g. duplicated points).

    Returns:
        (N-1, 2) int64 array of edges ``(i, j)`` with ``i < j``, in the order Prim adds them
        (an empty (0, 2) array for N <= 1). Ties between equal keys go to the lowest vertex
        index; on a tie-free matrix the tree is the unique MST whatever the tie rule.
    """
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"prim_mst_edges: dist must be a square (N, N) matrix, got shape {dist.shape}")
    n = dist.shape[0]
    edges = np.empty((max(n - 1, 0), 2), dtype=np.int64)
    if n <= 1:
        return edges
    in_tree = np.zeros(n, dtype=bool)
    in_tree[0] = True
    key = dist[0].astype(np.float64, copy=True)  # best edge length from the tree to each vertex
    parent = np.zeros(n, dtype=np.int64)
    key[0] = np.inf
    for step in range(n - 1):
        v = int(np.argmin(key))  # first minimum: lowest index among equal keys
        u = int(parent[v])
        edges[step] = (u, v) if u < v else (v, u)
        in_tree[v] = True
        key[v] = np.inf
        row = dist[v]
        closer = (row < key) & ~in_tree
        key[closer] = row[closer]
        parent[closer] = v
    return edges
