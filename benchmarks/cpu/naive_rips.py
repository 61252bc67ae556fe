"""Naive differentiable Vietoris-Rips persistence in pure PyTorch: the baseline of paper Table 6.

Decision 21 (``docs/decisions.md``) defines the "naive" implementation the paper compares
against (App. B.4, Table 6): enumerate every edge and triangle of the Rips complex, sort them by
filtration value, build the dense Z2 boundary matrix, reduce it with the standard column algorithm
(Edelsbrunner-Letscher-Zomorodian; no clearing, no cohomology, no apparent/emergent pairs), and get
gradients by autograd through the filtration values gathered at the critical simplices.

Storage. The boundary matrix of a complex truncated at dimension 2 is non-zero only in the blocks
``d1`` (vertices x edges) and ``d2`` (edges x triangles), and the standard algorithm only ever adds a
column to another column of the same dimension, so the two blocks are reduced one after the other.
Both blocks are dense ``torch.bool`` tensors stored column-major (one row of the tensor per column
of the matrix): ``d2`` holds ``C(N,2) * C(N,3)`` bytes, ~N^5/12 (61 MB at N=60, 0.8 GB at N=100,
26 GB at N=200). That growth, not a cap we impose, is what makes the baseline infeasible past
N of about 100-200, as in the paper.

Filtration order (the one of ``reference.persistence``): vertices; edges by (length, i, j); triangles
by (diameter, position of their longest edge in the edge order, sorted vertex triple). A triangle's
"position of its longest edge" is the largest edge rank among its three edges, so a stable sort of
the lexicographically enumerated triangles by that rank gives exactly this order.

Diagrams follow decisions 2-3: finite pairs only, zero-persistence pairs dropped, pairs ordered by
(death, birth). The loss on top (``naive_topo_loss``) is Algorithm 1 for one cloud with the same
normalisation and PWCD as the project's fast path, so the three Table 6 rows compute the same number.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from fast.normalize import normalize as normalize_clouds
from fast.pwcd import pwcd


@dataclass(frozen=True)
class NaiveDiagrams:
    """Differentiable H0 and H1 diagrams of one distance matrix.

    ``pairs0`` (K0, 2) and ``pairs1`` (K1, 2) hold (birth, death) as gathered entries of the input
    distance tensor (autograd flows back to it). ``death_edges0`` (K0, 2), ``birth_edges1`` (K1, 2) and
    ``death_triangles1`` (K1, 3) are the critical simplices (int64, sorted vertex indices).
    """

    pairs0: torch.Tensor
    pairs1: torch.Tensor
    death_edges0: torch.Tensor
    birth_edges1: torch.Tensor
    death_triangles1: torch.Tensor


def _edge_index(i: torch.Tensor, j: torch.Tensor, n: int) -> torch.Tensor:
    """Position of edge (i, j), i < j, in the lexicographic enumeration of all C(n, 2) edges."""
    return i * n - i * (i + 1) // 2 + (j - i - 1)


def _check_deadline(deadline: float | None, where: str) -> None:
    if deadline is not None and time.perf_counter() > deadline:
        raise TimeoutError(f"naive Rips persistence ran past its deadline while {where}")


def _reduce_columns(
    columns: torch.Tensor, deadline: float | None, where: str
) -> list[int]:
    """Standard Z2 column reduction of a dense boundary block, in place.

    ``columns`` is (n_cols, n_rows) bool, one tensor row per matrix column, columns in filtration
    order and row indices in filtration order of the faces. Returns ``low`` per column (-1 where the
    column reduces to zero). Column j is repeatedly added (XOR) to the earlier column owning its
    lowest one, the textbook algorithm with no clearing or other shortcut.
    """
    n_cols, n_rows = columns.shape
    owner = [-1] * n_rows  # row -> column whose reduced low is that row
    low = [-1] * n_cols
    for j in range(n_cols):
        if j % 256 == 0:
            _check_deadline(deadline, where)
        col = columns[j]
        while True:
            nz = torch.nonzero(col)
            if nz.numel() == 0:
                break
            pivot = int(nz[-1, 0])
            k = owner[pivot]
            if k < 0:
                owner[pivot] = j
                low[j] = pivot
                break
            col ^= columns[k]
    return low


def naive_rips_diagrams(dist: torch.Tensor, deadline: float | None = None) -> NaiveDiagrams:
    """H0 and H1 persistence of the Rips filtration of ``dist`` by dense boundary-matrix reduction.

    Args:
        dist: (N, N) symmetric distance tensor with zero diagonal, N >= 2 (may require grad).
        deadline: ``time.perf_counter()`` value after which a ``TimeoutError`` is raised.

    Returns:
        ``NaiveDiagrams`` whose pairs are differentiable functions of ``dist``.
    """
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1] or dist.shape[0] < 2:
        raise ValueError(f"dist must be a square (N, N) tensor with N >= 2, got shape {tuple(dist.shape)}")
    if not bool(torch.isfinite(dist).all()):
        raise ValueError("dist contains NaN/Inf; pass a finite distance matrix")
    n = dist.shape[0]
    dev = dist.device
    edges = torch.combinations(torch.arange(n, device=dev), 2)  # (E, 2), lexicographic
    tris = torch.combinations(torch.arange(n, device=dev), 3)  # (T, 3), lexicographic
    n_edges, n_tris = edges.shape[0], tris.shape[0]
    edge_val = dist[edges[:, 0], edges[:, 1]]
    # Edge order by (length, i, j): stable sort of the lexicographic enumeration by length.
    edge_order = torch.sort(edge_val.detach(), stable=True).indices
    edge_rank = torch.empty_like(edge_order)
    edge_rank[edge_order] = torch.arange(n_edges, device=dev)
    tri_edges = torch.stack(
        [
            _edge_index(tris[:, 0], tris[:, 1], n),
            _edge_index(tris[:, 0], tris[:, 2], n),
            _edge_index(tris[:, 1], tris[:, 2], n),
        ],
        dim=1,
    )  # (T, 3) lexicographic edge indices
    tri_ranks = edge_rank[tri_edges]
    tri_max_rank = tri_ranks.max(dim=1).values  # rank of the longest edge = position in edge order
    tri_order = torch.sort(tri_max_rank, stable=True).indices
    _check_deadline(deadline, "enumerating simplices")

    # d1: vertices x edges; column e (in edge order) has ones at its two vertices (vertex order = id).
    d1 = torch.zeros((n_edges, n), dtype=torch.bool, device=dev)
    sorted_edges = edges[edge_order]
    cols = torch.arange(n_edges, device=dev)
    d1[cols, sorted_edges[:, 0]] = True
    d1[cols, sorted_edges[:, 1]] = True
    low1 = _reduce_columns(d1, deadline, "reducing the vertex-edge block")
    del d1

    # d2: edges x triangles; rows indexed by edge rank, columns in triangle order.
    d2 = torch.zeros((n_tris, n_edges), dtype=torch.bool, device=dev)
    rows = tri_ranks[tri_order]  # (T, 3) ranks of the faces of each sorted triangle
    tcols = torch.arange(n_tris, device=dev)
    for f in range(3):
        d2[tcols, rows[:, f]] = True
    low2 = _reduce_columns(d2, deadline, "reducing the edge-triangle block")
    del d2

    # H0: edge column (edge order) e with a low is a death at its length; birth 0.
    h0_cols = torch.tensor([e for e, lo in enumerate(low1) if lo >= 0], dtype=torch.long, device=dev)
    h0_edge = edge_order[h0_cols]
    death0 = edge_val[h0_edge]
    pairs0 = torch.stack([torch.zeros_like(death0), death0], dim=1)
    dedges0 = edges[h0_edge]
    # H1: triangle column t (triangle order) with low = edge rank r: (length of r, diameter of t).
    h1 = [(t, lo) for t, lo in enumerate(low2) if lo >= 0]
    h1_tri = tri_order[torch.tensor([t for t, _ in h1], dtype=torch.long, device=dev)]
    h1_birth_edge = edge_order[torch.tensor([lo for _, lo in h1], dtype=torch.long, device=dev)]
    birth1 = edge_val[h1_birth_edge]
    death1 = edge_val[tri_edges[h1_tri]].max(dim=1).values
    pairs1 = torch.stack([birth1, death1], dim=1)
    bedges1 = edges[h1_birth_edge]
    dtris1 = tris[h1_tri]

    keep0 = (pairs0[:, 1] > pairs0[:, 0]).detach()
    keep1 = (pairs1[:, 1] > pairs1[:, 0]).detach()
    pairs0, dedges0 = pairs0[keep0], dedges0[keep0]
    pairs1, bedges1, dtris1 = pairs1[keep1], bedges1[keep1], dtris1[keep1]
    o0 = _death_birth_order(pairs0.detach())
    o1 = _death_birth_order(pairs1.detach())
    return NaiveDiagrams(pairs0[o0], pairs1[o1], dedges0[o0], bedges1[o1], dtris1[o1])


def _death_birth_order(pairs: torch.Tensor) -> torch.Tensor:
    """Permutation sorting (birth, death) pairs by (death, birth) ascending (a stable two-key sort)."""
    by_birth = torch.sort(pairs[:, 0], stable=True).indices
    by_death = torch.sort(pairs[by_birth, 1], stable=True).indices
    return by_birth[by_death]


def naive_topo_loss(
    student_feats: torch.Tensor,
    teacher_feats: torch.Tensor,
    normalize: str = "scale",
    eps_w: float = 1e-8,
    deadline: float | None = None,
) -> torch.Tensor:
    """Algorithm 1 for one cloud with the naive persistence: PWCD(H0) + PWCD(H1), differentiable.

    Uses every point (Table 6 clouds have N <= M = 1024, where TPS keeps them all, decision 14).
    Normalisation and PWCD are the project's (``fast.normalize``, ``fast.pwcd``); distances by
    ``torch.cdist`` without the matrix-product shortcut, so the diagonal is exactly 0.
    """
    if student_feats.ndim != 2 or teacher_feats.ndim != 2 or student_feats.shape[0] != teacher_feats.shape[0]:
        raise ValueError(
            f"student_feats {tuple(student_feats.shape)} and teacher_feats {tuple(teacher_feats.shape)} "
            "must be (N, C) feature matrices of the same N points"
        )
    one_cloud = [student_feats.shape[0]]
    s_n = normalize_clouds(student_feats, one_cloud, normalize)
    with torch.no_grad():
        t_n = normalize_clouds(teacher_feats, one_cloud, normalize)
        teacher = naive_rips_diagrams(distances(t_n), deadline)
    student = naive_rips_diagrams(distances(s_n), deadline)
    return pwcd(teacher.pairs0, student.pairs0, eps_w) + pwcd(teacher.pairs1, student.pairs1, eps_w)


def distances(x: torch.Tensor) -> torch.Tensor:
    """Exact Euclidean distance matrix (no matrix-product shortcut: zero diagonal, no cancellation)."""
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
