"""Pairwise Euclidean distances of a feature cloud (paper Theorem 1: ``D_ij = ||h_i - h_j||_2``).

The Vietoris-Rips filtration of the topological loss (paper Sec. 3.2.1, Algorithm 1 step 3,
decisions 1) is built on these distances, not their squares. The reference computes every entry
from the coordinate differences (never through ``|a|^2 + |b|^2 - 2 a.b``), so the diagonal is
exactly zero, duplicated points are at distance exactly zero and ``D`` is exactly symmetric.
"""
from __future__ import annotations

import numpy as np


def check_finite_matrix(array: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` if ``array`` holds NaN or Inf."""
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(
            f"{name} contains {bad} NaN/Inf entries; clean or mask the input before computing "
            "distances (persistence needs finite values)"
        )


def pairwise_distances(feats: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix of the rows of ``feats``.

    Args:
        feats: (N, C) real array (converted to float64), N >= 1, C >= 1, all finite.

    Returns:
        (N, N) float64 array ``D`` with ``D[i, j] = ||feats[i] - feats[j]||_2``, ``D[i, i] == 0``
        and ``D == D.T`` exactly.

    Raises:
        ValueError: ``feats`` is not 2-D, is empty, or holds NaN/Inf.
    """
    h = np.asarray(feats, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] < 1 or h.shape[1] < 1:
        raise ValueError(
            f"feats must be a non-empty (N, C) array, got shape {h.shape}; reshape a single "
            "point cloud to (num_points, num_channels)"
        )
    check_finite_matrix(h, "feats")
    n = h.shape[0]
    dist = np.zeros((n, n), dtype=np.float64)
    # Row by row keeps memory at O(N*C) per step instead of an (N, N, C) difference tensor.
    # Only j > i is computed and mirrored, which makes the matrix exactly symmetric.
    for i in range(n - 1):
        diff = h[i + 1 :] - h[i]
        row = np.sqrt(np.einsum("jc,jc->j", diff, diff))
        dist[i, i + 1 :] = row
        dist[i + 1 :, i] = row
    return dist
