"""Topology-preserving sampling (TPS): greedy farthest-point k-center selection, paper Algorithm 5.

Decision 14 (``docs/decisions.md``): the first index is
``numpy.random.default_rng(seed).integers(N)``; every next index is the argmax of the distance to
the selected set, ties going to the lowest index; a cloud with ``N <= m`` uses all its points
(``arange(N)``). Already selected points are excluded from the argmax: they are at distance 0
anyway, and the exclusion only matters when duplicated points leave every remaining candidate at
distance 0, where it keeps the indices unique (the lowest unselected index is taken).

The greedy rule is a 2-approximation of the optimal k-center covering radius
``max_x min_{y in I} ||x - y||`` (Gonzalez, 1985), which bounds the bottleneck distance between the
subset's and the full cloud's Rips diagrams (paper Appendix A.2).

``tps`` takes a batch of concatenated clouds with END offsets, like its twin ``fast.tps``: cloud
``b`` is sampled by ``tps_cloud`` with seed ``seed + b``.

``farthest_point_sample`` is the same greedy rule on a (B, N, C) batch of equal-sized clouds,
every cloud starting at its index 0 (the object backbones' sampler, decision 67): the oracle of
``train.models.objects.neighbourhood.farthest_point_sample``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reference.normalize import as_features, cloud_slices


def tps_cloud(feats: np.ndarray, m: int, seed: int = 0) -> np.ndarray:
    """Indices (``min(m, N)``,) int64 of the TPS subset of the (N, C) ``feats``, in selection order."""
    h = as_features(feats, "feats")
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise ValueError(f"TPS budget m must be an integer >= 1, got {m!r}")
    m = int(m)
    N = h.shape[0]
    if N == 0:
        raise ValueError("feats has no points (N = 0); TPS needs at least one point")
    if N <= m:
        return np.arange(N, dtype=np.int64)
    return _greedy_k_center(h, m, int(np.random.default_rng(seed).integers(N)))


def _greedy_k_center(h: np.ndarray, m: int, first: int) -> np.ndarray:
    """The ``m`` (<= N) greedy k-center indices of the (N, C) ``h`` from index ``first``."""
    idx = np.empty(m, dtype=np.int64)
    idx[0] = first
    d_min = np.linalg.norm(h - h[first], axis=1)
    d_min[first] = -np.inf
    for k in range(1, m):
        i = int(np.argmax(d_min))  # np.argmax returns the first (lowest) maximiser
        idx[k] = i
        d_min = np.minimum(d_min, np.linalg.norm(h - h[i], axis=1))
        d_min[i] = -np.inf
    return idx


def tps(feats: np.ndarray, offsets: Sequence[int] | np.ndarray, m: int, seed: int = 0) -> list[np.ndarray]:
    """TPS indices of every cloud of the concatenated (sumN, C) ``feats`` with END ``offsets``.

    One int64 array per cloud of ``min(m, n_b)`` indices local to that cloud, in selection order;
    cloud ``b`` uses seed ``seed + b``.
    """
    h = as_features(feats, "feats")
    return [tps_cloud(h[rows], m, seed + b) for b, rows in enumerate(cloud_slices(offsets, h.shape[0]))]


def farthest_point_sample(points: np.ndarray, m: int) -> np.ndarray:
    """(B, m) int64 greedy farthest-point indices of every cloud of the (B, N, C) ``points``, each
    cloud starting at its index 0, ties to the lowest index; ``1 <= m <= N``."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 3 or p.shape[1] == 0:
        raise ValueError(f"points must be a (B, N, C) batch with N >= 1, got shape {p.shape}")
    if isinstance(m, bool) or int(m) != m or not 1 <= m <= p.shape[1]:
        raise ValueError(f"farthest-point sample size m must be an integer in [1, N = {p.shape[1]}], got {m!r}")
    return np.stack([_greedy_k_center(as_features(cloud, "points"), int(m), 0) for cloud in p]).reshape(len(p), int(m))
