"""Submanifold-convolution rulebooks of one voxel level, compiled (spec B, decisions 45 and 47).

The rulebook of a k x k x k submanifold convolution lists, offset by offset, every pair (output
point p, input point q) with ``grid[q] = grid[p] + o`` in the same cloud; within an offset the
pairs are in ascending p, and each offset's pairs fill whole groups of ``rows`` pairs, the last
group padded with (n, n) pairs (``train.models.plan.ConvRulebook``).

How the pairs are found without a dense (N, k^3) neighbour table or a hash per lookup: the voxels
are sorted by the packed key (cloud, x, y, z) (``train.models.plan.voxel_pillars``), so the
voxels of one *pillar* (equal cloud, x, y) are a run of ascending z. For a column offset
(dx, dy), the pillar (cloud, x + dx, y + dy) of every pillar is found by one merge-like sweep over
the sorted pillar keys (the targets ascend with the pillars, :func:`pillar_columns`); a voxel's
neighbours in a column are then the z window [z - r, z + r] of that pillar, which slides up it as
the voxels of a pillar ascend in z (:func:`neighbour_lists`). Every lookup is a read of small arrays in order or nearly so, about 1 us per point for
the plan of a 4 x 30,000-point batch (benchmarks/RESULTS.md, group host-work).

Why hand-written: scipy's cKDTree and numpy's sort + searchsorted (the previous form, decision
45) build and scan the dense table; no library builds a grouped rulebook in one pass.
"""
from __future__ import annotations

import numpy as np

from fast.jit import kernel


@kernel
def pillar_columns(pillar_key: np.ndarray, depth: int, kernel_size: int) -> np.ndarray:
    """(P, k * k): for every pillar (``pillar_key`` = (cloud << 2 depth) | (x << depth) | y,
    ascending) and column c = i0 * k + i1, the index of the pillar at (x + i0 - r, y + i1 - r) in
    the same cloud, or -1. One sweep per row offset i0: the first pillar at or after
    (cloud, x + i0 - r, y - r) ascends with the pillars, and the row's k columns are the pillars
    from there on up to y + r."""
    num = pillar_key.shape[0]
    k = kernel_size
    r = k // 2
    side = np.int64(1) << depth
    out = np.empty((num, k * k), dtype=np.int64)
    for i0 in range(k):
        dx = i0 - r
        j = 0
        for p in range(num):
            key = pillar_key[p]
            x = (key >> depth) & (side - 1)
            y = key & (side - 1)
            if x + dx < 0 or x + dx >= side:
                for i1 in range(k):
                    out[p, i0 * k + i1] = -1
                continue
            row = key + dx * side - y  # (cloud, x + dx, 0)
            target = row + max(y - r, np.int64(0))
            while j < num and pillar_key[j] < target:
                j += 1
            while j > 0 and pillar_key[j - 1] >= target:
                j -= 1
            t = j
            for i1 in range(k):
                yy = y + i1 - r
                out[p, i0 * k + i1] = -1
                if yy < 0 or yy >= side:
                    continue
                while t < num and pillar_key[t] < row + yy:
                    t += 1
                if t < num and pillar_key[t] == row + yy:
                    out[p, i0 * k + i1] = t
    return out


@kernel
def neighbour_lists(pillar_start: np.ndarray, sorted_z: np.ndarray, sorted_point: np.ndarray, columns: np.ndarray,
                    kernel_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every voxel's neighbours in the ``kernel_size`` cube, by sorted position: position s owns
    entries ``[start[s], start[s + 1])`` of ``offset`` (int16, o = (i0 * k + i1) * k + i2 for
    (i0 - r, i1 - r, i2 - r)) and ``point`` (int32, the neighbour's point index); ``count`` (k^3,):
    the entries of each offset.

    ``pillar_start``, ``sorted_z``, ``sorted_point``: ``train.models.plan.VoxelPillars``;
    ``columns``: :func:`pillar_columns` for the same kernel size. The pillars are visited in key
    order, the voxels of a pillar in ascending z, so in each column the window [z - r, z + r]
    slides up the neighbour pillar. The lists are written in one pass into arrays sized by a bound
    (a voxel has at most min(k, size) neighbours in a pillar of ``size`` voxels)."""
    n = sorted_z.shape[0]
    k = kernel_size
    r = k // 2
    num_pillars = pillar_start.shape[0] - 1
    bound = np.int64(0)
    for pillar in range(num_pillars):
        size = pillar_start[pillar + 1] - pillar_start[pillar]
        for c in range(k * k):
            q = columns[pillar, c]
            if q >= 0:
                bound += size * min(k, pillar_start[q + 1] - pillar_start[q])
    offset = np.empty(bound, dtype=np.int16)
    point = np.empty(bound, dtype=np.int32)
    start = np.empty(n + 1, dtype=np.int64)
    count = np.empty(k * k * k, dtype=np.int64)
    for o in range(k * k * k):
        count[o] = 0
    window = np.empty(k * k, dtype=np.int64)  # per column: first neighbour-pillar voxel not below z - r
    e = 0
    for pillar in range(num_pillars):
        if pillar_start[pillar + 1] - pillar_start[pillar] == 1:  # a lone voxel (most of a ground surface)
            s = pillar_start[pillar]
            start[s] = e
            z = sorted_z[s]
            for c in range(k * k):
                q = columns[pillar, c]
                if q < 0:
                    continue
                for j in range(pillar_start[q], pillar_start[q + 1]):
                    dz = sorted_z[j] - z
                    if dz > r:
                        break
                    if dz >= -r:
                        o = c * k + dz + r
                        offset[e] = o
                        point[e] = sorted_point[j]
                        count[o] += 1
                        e += 1
            continue
        for c in range(k * k):
            q = columns[pillar, c]
            window[c] = pillar_start[q] if q >= 0 else -1
        for s in range(pillar_start[pillar], pillar_start[pillar + 1]):
            start[s] = e
            z = sorted_z[s]
            for c in range(k * k):
                j = window[c]
                if j < 0:
                    continue
                hi = pillar_start[columns[pillar, c] + 1]
                while j < hi and sorted_z[j] < z - r:
                    j += 1
                window[c] = j
                while j < hi and sorted_z[j] <= z + r:
                    o = c * k + sorted_z[j] - z + r
                    offset[e] = o
                    point[e] = sorted_point[j]
                    count[o] += 1
                    e += 1
                    j += 1
    start[n] = e
    return start, offset, point, count


@kernel
def fill_rulebooks(start: np.ndarray, offset: np.ndarray, point: np.ndarray, sorted_point: np.ndarray,
                   destination: np.ndarray, slot: np.ndarray, gather: np.ndarray, scatter: np.ndarray) -> None:
    """Write the pairs of :func:`neighbour_lists` (``start``, ``offset``, ``point``) into rulebooks:
    the entry of list offset o goes to every rulebook t with ``d = destination[o, t] >= 0``, at
    ``gather[slot[d]]`` (its input point) and ``scatter[slot[d]]`` (its output point p), and
    ``slot[d]`` advances. The points p are visited in ascending order (``sorted_point``: the point
    at each sorted position), so each offset's pairs are in ascending p."""
    n = sorted_point.shape[0]
    rank = np.empty(n, dtype=np.int64)
    for s in range(n):
        rank[sorted_point[s]] = s
    for p in range(n):
        s = rank[p]
        for e in range(start[s], start[s + 1]):
            o = offset[e]
            for t in range(destination.shape[1]):
                d = destination[o, t]
                if d >= 0:
                    gather[slot[d]] = point[e]
                    scatter[slot[d]] = p
                    slot[d] += 1
