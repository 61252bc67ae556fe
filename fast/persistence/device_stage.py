"""Batched device stage of the native H1 engine: radius, edge ranks, neighbour lists, apparent pairs.

Steps 1-3 of the algorithm documented in ``fast/persistence/native.py`` (the H1 part of the
"Ripser" step of paper Algorithm 1, line 12), for a whole batch of clouds at once with PyTorch,
so that on a CUDA device they cost one batched launch per stage instead of a per-cloud loop:

* enclosing radius ``r_b = min_i max_j D_b[i, j]`` and the kept edges ``D_b[i, j] <= r_b``;
* edge ranks under the reference's total order ``(length, i, j)`` (a stable sort of the edges
  listed in ``(i, j)`` order);
* each vertex's neighbours in rank order (a stable sort of each rank row) and their positions;
* for every edge ``{i, j}`` its apparent coface vertex: the lowest ``k`` with
  ``max(rank[i, k], rank[j, k]) < rank[i, j]`` (a min-max product, O(B N^3) work, chunked over
  rows to bound memory), -1 when the lune is empty.

It produces exactly what ``fast.persistence.edge_stage`` computes per cloud on a CPU (the tests
compare the two), plus the apparent partner of *every* edge (the apparent-pair lemma of Bauer
2021), which the CPU path computes lazily. Only the spanning tree (Kruskal over the few
empty-lune edges, sequential by nature) runs afterwards on the CPU, in
``fast.persistence.edge_stage.columns_to_reduce``. Also here: :func:`batched_distances`, the
distances of a batch of clouds on their device.
"""
from __future__ import annotations

import numpy as np
import torch

from fast.persistence.edge_stage import EdgeStage, columns_to_reduce

_BLOCK_ELEMENTS = 1 << 27
"""Largest (B, rows, N, N) block of the apparent-pair search (elements), about 0.5 GB of int32."""


def batched_distances(points: torch.Tensor) -> torch.Tensor:
    """(B, M, C) points -> (B, M, M) float64 Euclidean distances on the points' device.

    Direct differences (no ``|x|^2 + |y|^2 - 2 x.y`` expansion, whose cancellation would break
    exact zeros for duplicated points), then symmetrised and given an exact zero diagonal, as
    the engine requires.
    """
    if points.ndim != 3 or points.shape[1] < 1 or points.shape[2] < 1:
        raise ValueError(f"points must be a (B, M, C) batch of clouds, got shape {tuple(points.shape)}")
    x = points.detach().to(torch.float64)
    d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    d = (d + d.transpose(1, 2)) / 2
    d.diagonal(dim1=1, dim2=2).zero_()
    return d


def _check_batch(dists: torch.Tensor) -> None:
    if dists.ndim != 3 or dists.shape[1] != dists.shape[2]:
        raise ValueError(f"dists must be a (B, M, M) batch of distance matrices, got shape {tuple(dists.shape)}")
    if dists.shape[1] < 3:
        raise ValueError(f"dists has M={dists.shape[1]} points per cloud; the batched stage needs M >= 3 (fewer points have no H1)")
    if not torch.isfinite(dists).all() or (dists < 0).any():
        raise ValueError("dists contains NaN/Inf or negative entries; pass finite Euclidean distances")
    if not torch.equal(dists, dists.transpose(1, 2)) or (torch.diagonal(dists, dim1=1, dim2=2) != 0).any():
        raise ValueError("dists must be symmetric with a zero diagonal; pass (D + D^T) / 2 with the diagonal set to 0")


def apparent_partners(rank: torch.Tensor, sentinel: torch.Tensor, block_elements: int = _BLOCK_ELEMENTS) -> torch.Tensor:
    """(B, N, N) int64: for each kept edge ``{i, j}`` the lowest ``k`` with both edges to it earlier.

    ``rank`` is (B, N, N) integer with ``sentinel[b]`` outside the complex and on the diagonal.
    Entries are -1 where no such ``k`` exists (empty lune) and for edges outside the complex.
    """
    bsz, n, _ = rank.shape
    rows = max(1, block_elements // max(1, bsz * n * n))
    out = torch.empty((bsz, n, n), dtype=torch.int64, device=rank.device)
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        # block[b, i, j, k] = max(rank[i, k], rank[j, k]) < rank[i, j]
        block = torch.maximum(rank[:, i0:i1, None, :], rank[:, None, :, :]) < rank[:, i0:i1, :, None]
        has = block.any(dim=-1)
        first = block.to(torch.uint8).argmax(dim=-1)  # index of the first True
        out[:, i0:i1] = torch.where(has, first, torch.full_like(first, -1))
    inside = rank < sentinel[:, None, None]
    return torch.where(inside, out, torch.full_like(out, -1))


def device_edge_stages(dists: torch.Tensor, block_elements: int = _BLOCK_ELEMENTS) -> list[EdgeStage]:
    """Steps 1-3 for a (B, M, M) float64 batch on its device; one :class:`EdgeStage` per cloud.

    Raises ValueError for a batch that is not (B, M, M) with M >= 3 finite, non-negative,
    symmetric matrices with zero diagonals.
    """
    _check_batch(dists)
    bsz, n, _ = dists.shape
    device = dists.device
    radius = dists.amax(dim=2).amin(dim=1)
    iu, ju = torch.triu_indices(n, n, 1, device=device)
    lengths = dists[:, iu, ju]
    kept = lengths <= radius[:, None]
    n_kept = kept.sum(dim=1)
    order = torch.sort(torch.where(kept, lengths, torch.full_like(lengths, np.inf)), dim=1, stable=True).indices
    flat_rank = torch.empty_like(order)
    flat_rank.scatter_(1, order, torch.arange(order.shape[1], device=device).expand(bsz, -1).contiguous())
    flat_rank = torch.where(kept, flat_rank, n_kept[:, None].expand_as(flat_rank))
    rank = n_kept[:, None, None].expand(bsz, n, n).clone()
    rank[:, iu, ju] = flat_rank
    rank[:, ju, iu] = flat_rank
    rank = rank.to(torch.int32)
    nbr = torch.sort(rank, dim=2, stable=True).indices
    deg = (rank < n_kept[:, None, None].to(torch.int32)).sum(dim=2)
    pos = torch.empty_like(nbr)
    pos.scatter_(2, nbr, torch.arange(n, device=device).expand(bsz, n, -1).contiguous())
    pos = torch.where(rank < n_kept[:, None, None].to(torch.int32), pos, torch.full_like(pos, -1))
    partner = apparent_partners(rank, n_kept.to(torch.int32), block_elements)
    # Everything per edge rank is gathered on the device, so the host only slices and copies.
    u_all, v_all = iu[order], ju[order]
    uv, vu = u_all * n + v_all, v_all * n + u_all
    by_rank = partner.reshape(bsz, n * n).gather(1, uv)
    pu = pos.reshape(bsz, n * n).gather(1, uv)  # index of v in nbr[u]
    pv = pos.reshape(bsz, n * n).gather(1, vu)  # index of u in nbr[v]

    def host(t: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
        return t.to(dtype).cpu().numpy()

    rank_h, nbr_h, deg_h = host(rank, torch.int32), host(nbr, torch.int32), host(deg, torch.int32)
    u_h, v_h, pu_h, pv_h = (host(t, torch.int32) for t in (u_all, v_all, pu, pv))
    by_rank_h, kept_h = host(by_rank, torch.int64), host(n_kept, torch.int64)
    stages = []
    for b in range(bsz):
        e = int(kept_h[b])
        u, v, partner_b = u_h[b, :e].copy(), v_h[b, :e].copy(), by_rank_h[b, :e].copy()
        columns, tree = columns_to_reduce(u, v, n, partner_b < 0)
        stages.append(EdgeStage(u, v, rank_h[b], nbr_h[b], deg_h[b], pu_h[b, :e].copy(), pv_h[b, :e].copy(),
                                columns, tree, partner_b))
    return stages
