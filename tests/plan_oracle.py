"""Readable NumPy definitions of the batch plan's compiled parts (decision 47), the tests' oracle;
they were the plan's own code before.

``neighbour_table``: the dense (N, k^3) neighbour table of a level (spec B), by sorting the voxel
keys once and one binary search per (dx, dy) column; ``conv_rulebook``: that table compacted
offset by offset; ``pool_level`` / ``pool_table``: the stride-2 pooling of a level (spec A6) and
the members of each cluster.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from train.models.plan import ConvRulebook, HostLevel
from train.models.serialization import inverse_permutation


def neighbour_table(grid: np.ndarray, batch: np.ndarray, kernel_size: int) -> np.ndarray:
    """``table[p, o]`` is the point at voxel ``grid[p] + o`` in p's cloud, or n (a zero row) when
    there is none; o = (i0 * k + i1) * k + i2 is the offset (i0 - r, i1 - r, i2 - r), r = k // 2.

    Voxel keys (cloud, x, y, z) in mixed radix, sorted once; one binary search per (dx, dy) column
    (z is the last digit, so with unique sorted keys the insertion point of key + 1 is that of key
    plus one if key was found). Only offsets before the centre are searched: p + o = q gives
    q - o = p, the mirrored entry. Raises ValueError on duplicate voxels or an even kernel."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd for a submanifold conv, got {kernel_size}")
    r = kernel_size // 2
    n = len(batch)
    k3 = kernel_size**3
    centre = k3 // 2
    side = int(grid.max()) + 1 + 2 * r
    shifted = grid + r
    keys = ((batch * side + shifted[:, 0]) * side + shifted[:, 1]) * side + shifted[:, 2]
    perm = np.argsort(keys)
    sorted_keys = keys[perm]
    if n > 1 and (sorted_keys[1:] == sorted_keys[:-1]).any():
        raise ValueError("grid_coord holds duplicate voxels inside a cloud (apply grid sampling before the model)")
    table = np.full((n, k3), n, dtype=np.int64)
    table[:, centre] = np.arange(n)
    for col in range(kernel_size * kernel_size // 2 + 1):
        i0, i1 = divmod(col, kernel_size)
        query = sorted_keys + (((i0 - r) * side + (i1 - r)) * side - r)
        pos = np.searchsorted(sorted_keys, query)
        for i2 in range(kernel_size):
            o = col * kernel_size + i2
            if o >= centre:
                break
            found = sorted_keys[np.minimum(pos, n - 1)] == query
            dst, src = perm[found], perm[pos[found]]
            table[dst, o] = src
            table[src, k3 - 1 - o] = dst
            pos = pos + found
            query = query + 1
    return table


def conv_rulebook(table: np.ndarray) -> ConvRulebook:
    """The pairs of a neighbour table (N, K), offset-major with ascending points within an offset,
    padded to whole groups of ``rows`` = max(16, ceil(P / 8K)) pairs (decision 45)."""
    n, k = table.shape
    offset, point = np.nonzero(table.T != n)
    counts = np.bincount(offset, minlength=k)
    rows = max(16, -(-len(point) // (8 * k)))
    groups = -(-counts // rows)
    starts = np.repeat((np.cumsum(groups) - groups) * rows - (np.cumsum(counts) - counts), counts)
    slot = starts + np.arange(len(point))
    gather = np.full(int(groups.sum()) * rows, n, dtype=np.int64)
    scatter = gather.copy()
    gather[slot] = table[point, offset]
    scatter[slot] = point
    return ConvRulebook(gather, scatter, np.repeat(np.arange(k), groups), rows)


def pool_level(level: HostLevel) -> HostLevel:
    """The stride-2 pooling of ``level`` (spec A6) with NumPy: clusters = points with equal
    ``code >> 3`` (equal cloud and ``grid >> 1``), numbered in the order of the first curve. A
    level of depth 0 (one voxel per cloud) pools into itself, each point its own cluster."""
    if level.depth == 0:
        return dataclasses.replace(level, cluster=np.arange(level.num_points))
    order0 = level.order[0]
    key = level.code[0, order0] >> 3
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    cluster = np.empty(len(key), dtype=np.int64)
    cluster[order0] = np.cumsum(first) - 1
    head = order0[first]
    code = level.code[:, head] >> 3
    # Every curve keeps each cluster contiguous (prefix property): the coarse order of a curve is its
    # fine order's clusters, each taken once.
    fine_clusters = cluster[level.order]
    starts = np.ones(level.order.shape, dtype=bool)
    starts[:, 1:] = fine_clusters[:, 1:] != fine_clusters[:, :-1]
    order = fine_clusters[starts].reshape(len(code), len(head))
    batch = level.batch[head]
    return HostLevel(
        depth=level.depth - 1, grid=level.grid[head] >> 1, batch=batch,
        offset=np.cumsum(np.bincount(batch, minlength=len(level.offset))), code=code, order=order,
        inverse=inverse_permutation(order), cluster=cluster, index=cluster[level.index],
    )


def pool_table(cluster: np.ndarray, num_clusters: int) -> np.ndarray:
    """(M, S) members of each cluster in ascending order, padded with ``len(cluster)``."""
    members = np.argsort(cluster, kind="stable")
    sizes = np.bincount(cluster, minlength=num_clusters)
    rank = np.arange(len(cluster)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    table = np.full((num_clusters, int(sizes.max())), len(cluster), dtype=np.int64)
    table[cluster[members], rank] = members
    return table
