"""Vietoris-Rips persistence (H0 and H1) with critical simplices, from a distance matrix.

Implements the persistence computation the paper treats as a black box (Sec. 3.2.1, Theorem 1,
Algorithm 1 step 4 "DiffRipser", Algorithm 3 lines 5-8): for every finite pair of the H0 and H1
diagrams it returns the birth and death values and the simplices that create and destroy the
class, so that ``reference.routing`` can send diagram gradients to the critical edges (Eq. 1).
Decisions 1-3 (``docs/decisions.md``) fix the conventions: Rips on the given distances,
finite pairs only, zero-persistence pairs and essential classes dropped.

Total filtration order
----------------------
Persistence pairs are only well defined for a *total* order of the simplices; ties in filtration
value are broken as follows (the compiled engines of ``fast/`` reproduce this order on tie-free
inputs, and on inputs with ties this is the order the reference's critical simplices refer to):

1. Vertices ``0 .. N-1`` (all at value 0), in index order.
2. Edges ``{i, j}`` with ``i < j``, sorted by ``(D[i, j], i, j)`` ascending. The position of an
   edge in this order is its *rank*.
3. Triangles ``{a, b, c}``, sorted by ``(diameter, rank of the maximal edge, sorted vertex
   triple)`` ascending, where the *maximal edge* is the face edge with the largest rank (i.e. the
   longest edge, length ties broken by ``(i, j)``). Since the rank already decides the diameter,
   and two triangles sharing their maximal edge ``{i, j}`` differ only in the third vertex ``k``
   (whose sorted triples compare like ``k``), this is the order of the integer key
   ``rank(maximal edge) * N + k``; the code uses that key.

All vertices precede all edges, which precede all triangles that contain them, so this is a
filtration (every face comes before its cofaces).

Critical simplices
------------------
- H0: birth = 0 at a vertex, death at the edge that merges two components (a minimum spanning
  tree edge; Kruskal under the total order). Elder rule: the component whose oldest (lowest
  index) vertex is younger dies, and that vertex is the birth simplex.
- H1: birth at the edge that closes a cycle; death at the triangle that fills it; the death edge
  is the maximal edge of that triangle (the argmax of Theorem 1's ``E_d(k)`` with length ties
  broken by the edge order).

Algorithms (why they are fast enough in numpy; why hand-written: the reference must expose the
pairing and critical simplices under *our* documented order, which no installed engine does)
------------------------------------------------------------------------------------------------
- H0: Kruskal with union-find over the edges in rank order, stopping after N - 1 merges.
- H1: persistent *cohomology* (reduction of the coboundary matrix over Z2, columns = edges in
  reverse filtration order, pivot of a column = its earliest coface triangle). It yields the same
  pairs as the boundary-matrix reduction (de Silva, Morozov, Vejdemo-Johansson 2011) but only
  about N^2/2 columns instead of N^3/6, and three shortcuts remove almost all of them:

  * Enclosing radius. With ``r = min_i max_j D[i, j]``, the complex at any value ``t >= r`` is a
    cone with apex ``argmin_i max_j D[i, j]`` (adding that vertex to any simplex of diameter
    ``<= t`` keeps the diameter ``<= t``), hence contractible. So every H1 class born at a value
    below ``r`` dies at a value ``<= r``, and classes born at ``>= r`` die at the same value
    (zero persistence). Reducing only the filtration prefix of simplices with diameter
    ``<= min(threshold, r)`` therefore gives every reported pair; prefix reductions give the
    same pairs as the full one because a column's reduction only involves earlier columns.
  * Clearing. An edge paired in dimension 0 (an MST edge) has a coboundary column that reduces
    to zero, so it is skipped.
  * Apparent pairs. If an edge ``e = {i, j}`` has a vertex ``k`` with both ``{i, k}`` and
    ``{j, k}`` earlier than ``e``, its earliest coface is ``{i, j, k*}`` (``k*`` the lowest such
    ``k``), whose maximal face is ``e`` itself; then ``(e, {i, j, k*})`` is a persistence pair
    (the apparent-pair lemma, Bauer 2021) of zero persistence. Finding them is a min-max matrix
    product, done vectorised in numpy. Their columns never need reducing, and they are used as
    they are (their coboundary) when another column meets their pivot.

  Only the remaining edges (non-MST, non-apparent, within the radius; a few per H1 class) are
  reduced explicitly, each column a sorted int64 array of triangle keys, added with
  ``np.setxor1d`` (addition over Z2 is the symmetric difference). A column that needs many
  additions switches to a dense 0/1 array over triangle keys (see ``_reduce_column``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True, eq=False)
class Diagram:
    """Finite persistence pairs of one homology dimension and their critical simplices.

    Attributes (K = number of finite pairs with positive persistence; arrays are read-only):
        dim: homology dimension (0 or 1).
        pairs: (K, 2) float64 ``(birth, death)``, ordered by ``(death, birth)`` ascending (then
            by the rank of the death edge for H0 and of the birth edge for H1).
        birth_simplices: (K, dim + 1) int64. H0: the vertex whose component dies; H1: the birth
            edge ``(i, j)``, ``i < j``.
        death_simplices: (K, dim + 2) int64. H0: the merging edge ``(i, j)``, ``i < j``; H1: the
            death triangle, sorted vertices.
        death_edges: (K, 2) int64, the maximal edge of the death simplex, ``i < j``.
        birth_edges: (K, 2) int64. H1: the birth edge; H0: -1 everywhere (births are 0).
    """

    dim: int
    pairs: np.ndarray
    birth_simplices: np.ndarray
    death_simplices: np.ndarray
    death_edges: np.ndarray
    birth_edges: np.ndarray

    def __post_init__(self) -> None:
        for name in ("pairs", "birth_simplices", "death_simplices", "death_edges", "birth_edges"):
            getattr(self, name).setflags(write=False)

    def __len__(self) -> int:
        return int(self.pairs.shape[0])


def validate_distance_matrix(dist: np.ndarray, name: str = "dist") -> np.ndarray:
    """Return ``dist`` as float64 after checking it is a valid distance matrix.

    Raises ``ValueError`` naming ``name``, the problem and the fix for: non-square or non-2-D
    input, N < 2, NaN/Inf, negative entries, a nonzero diagonal, or asymmetry (exact equality
    ``D == D.T`` is required so the diagram is a function of one well-defined matrix).
    """
    d = np.asarray(dist, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(
            f"{name} must be a square (N, N) distance matrix, got shape {d.shape}; compute it "
            "with reference.pairwise_distances(feats)"
        )
    if d.shape[0] < 2:
        raise ValueError(
            f"{name} has N={d.shape[0]} points; persistence needs at least 2 points (skip "
            "clouds with fewer points)"
        )
    if not np.all(np.isfinite(d)):
        raise ValueError(
            f"{name} contains NaN/Inf entries; check the features for NaN/Inf (finite features "
            "give finite distances) and pass `threshold` instead of Inf entries"
        )
    if np.any(d < 0):
        raise ValueError(f"{name} has negative entries (min {d.min()!r}); distances must be >= 0")
    if np.any(np.diag(d) != 0):
        raise ValueError(
            f"{name} has a nonzero diagonal (max |D[i, i]| = {np.abs(np.diag(d)).max()!r}); "
            "set the diagonal to exactly 0"
        )
    if not np.array_equal(d, d.T):
        raise ValueError(
            f"{name} is not symmetric (max |D - D.T| = {np.abs(d - d.T).max()!r}); pass "
            "(D + D.T) / 2 or compute it with reference.pairwise_distances(feats)"
        )
    return d


class _EdgeOrder:
    """Edges ``i < j`` sorted by ``(length, i, j)``, cut at a threshold (filtration item 2).

    ``u[r], v[r], length[r]`` describe the edge of rank ``r``; ``n_kept`` edges have
    ``length <= threshold``. ``rank[i, j]`` is the rank of edge ``{i, j}`` for kept edges and the
    sentinel ``n_kept`` (meaning "not in the complex") for dropped edges and on the diagonal.
    """

    def __init__(self, dist: np.ndarray, threshold: float) -> None:
        n = dist.shape[0]
        iu, ju = np.triu_indices(n, 1)
        length = dist[iu, ju]
        order = np.lexsort((ju, iu, length))
        self.n = n
        self.u = iu[order].astype(np.int64)
        self.v = ju[order].astype(np.int64)
        self.length = length[order]
        self.n_kept = int(np.searchsorted(self.length, threshold, side="right"))
        self.rank = np.full((n, n), self.n_kept, dtype=np.int64)
        kept = np.arange(self.n_kept, dtype=np.int64)
        self.rank[self.u[: self.n_kept], self.v[: self.n_kept]] = kept
        self.rank[self.v[: self.n_kept], self.u[: self.n_kept]] = kept


def _h0(edges: _EdgeOrder) -> tuple[list[int], list[int], np.ndarray]:
    """Kruskal + elder rule. Returns (birth vertices, death edge ranks, MST mask over kept ranks)."""
    # Union-find whose root is always the oldest (lowest index) vertex of its component, so the
    # elder rule reads directly off the two roots.
    parent = list(range(edges.n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    births: list[int] = []
    deaths: list[int] = []
    mst = np.zeros(edges.n_kept, dtype=bool)
    u, v = edges.u.tolist(), edges.v.tolist()
    for r in range(edges.n_kept):
        a, b = find(u[r]), find(v[r])
        if a == b:
            continue
        elder, younger = (a, b) if a < b else (b, a)
        parent[younger] = elder
        births.append(younger)
        deaths.append(r)
        mst[r] = True
        if len(deaths) == edges.n - 1:
            break
    return births, deaths, mst


def _apparent_cofaces(edges: _EdgeOrder) -> np.ndarray:
    """For each kept edge rank r: the vertex k* of its apparent coface {u, v, k*}, else -1.

    ``k`` qualifies when ``max(rank[u, k], rank[v, k]) < r``; the lowest such ``k`` gives the
    earliest coface (filtration item 3). Vectorised over all edges of one lower vertex at a time,
    an (N - i - 1, N) min-max block per vertex, O(N^3) numpy work in total.
    """
    n, rank = edges.n, edges.rank
    k_star = np.full(edges.n_kept, -1, dtype=np.int64)
    for i in range(n - 1):
        r_ij = rank[i, i + 1 :]
        inside = r_ij < edges.n_kept
        if not inside.any():
            continue
        js = np.nonzero(inside)[0] + i + 1
        block = np.maximum(rank[i][None, :], rank[js])  # [jj, k] = max(rank[i,k], rank[j,k])
        earlier = block < rank[i, js][:, None]
        has = earlier.any(axis=1)
        k_star[rank[i, js[has]]] = earlier[has].argmax(axis=1)
    return k_star


def _coboundary(edges: _EdgeOrder, r: int) -> np.ndarray:
    """Sorted triangle keys ``rank(max edge) * N + opposite vertex`` of the cofaces of edge r."""
    n, rank = edges.n, edges.rank
    i, j = int(edges.u[r]), int(edges.v[r])
    r_ik, r_jk = rank[i], rank[j]
    top = np.maximum(np.maximum(r_ik, r_jk), r)
    # The sentinel on the diagonal and for dropped edges also removes k in {i, j}.
    present = top < edges.n_kept
    k = np.arange(n, dtype=np.int64)
    opposite = np.where(top == r, k, np.where(top == r_ik, j, i))
    return np.sort(top[present] * n + opposite[present])


# Column reduction. A column (the working cocycle of one edge) is a sorted int64 array of triangle
# keys, added to with np.setxor1d. Almost every column needs only a few additions. A few need
# thousands (e.g. the single long-lived cycle of points on a circle), while their column grows to
# O(N^2) entries, which would make every sorted-array addition O(N^2). Such a column switches to a
# dense 0/1 array indexed by key: an addition is then O(N) (flip the entries of the added
# column), and because the pivot never moves backwards (everything added is >= the pivot it
# cancels) the next pivot is found by scanning forward from the current one.
_SPARSE_ADDITIONS = 64
_SCAN_WINDOW = 1 << 14
_DENSE_MAX_BYTES = 1 << 28


def _reduce_sparse(
    column: np.ndarray, column_with_pivot: Callable[[int], np.ndarray | None], limit: int | None
) -> tuple[np.ndarray, bool]:
    """Add earlier columns with the same pivot, at most ``limit`` times (None: no limit).

    Returns the column and whether it is finished (empty, or its pivot owned by no column)."""
    additions = 0
    while column.size and (limit is None or additions < limit):
        other = column_with_pivot(int(column[0]))
        if other is None:
            return column, True
        column = np.setxor1d(column, other, assume_unique=True)
        additions += 1
    return column, column.size == 0


def _reduce_column(
    edges: _EdgeOrder, r: int, column_with_pivot: Callable[[int], np.ndarray | None]
) -> tuple[int, np.ndarray] | None:
    """Reduce the coboundary column of edge r; return (pivot key, reduced column) or None if it
    reduces to zero. ``column_with_pivot(key)`` gives the earlier column owning that pivot."""
    # Every key in this column is >= r * N (its cofaces' maximal edges come at or after r).
    dense_size = (edges.n_kept - r) * edges.n
    limit = _SPARSE_ADDITIONS if dense_size <= _DENSE_MAX_BYTES else None
    column, finished = _reduce_sparse(_coboundary(edges, r), column_with_pivot, limit)
    if finished:
        return (int(column[0]), column) if column.size else None
    base = r * edges.n
    dense = np.zeros(dense_size, dtype=np.uint8)
    dense[column - base] = 1
    cursor = int(column[0]) - base
    while cursor < dense_size:
        window = dense[cursor : cursor + _SCAN_WINDOW]
        first = int(window.argmax())
        if not window[first]:
            cursor += window.size
            continue
        cursor += first
        pivot = base + cursor
        other = column_with_pivot(pivot)
        if other is None:
            return pivot, np.flatnonzero(dense[cursor:]).astype(np.int64) + pivot
        dense[other - base] ^= 1
    return None


def _h1(edges: _EdgeOrder, mst: np.ndarray) -> list[tuple[int, int]]:
    """Cohomology reduction with clearing and apparent pairs: list of (birth edge rank, triangle key)."""
    n = edges.n
    k_star = _apparent_cofaces(edges)
    # MST edges are never apparent (their endpoints are not yet connected by earlier edges).
    to_reduce = np.nonzero(~mst & (k_star < 0))[0]

    apparent_columns: dict[int, np.ndarray] = {}
    reduced_by_pivot: dict[int, np.ndarray] = {}

    def column_with_pivot(pivot: int) -> np.ndarray | None:
        owner_rank, owner_k = divmod(pivot, n)
        if k_star[owner_rank] == owner_k:  # pivot of an apparent pair: its column is unreduced
            if owner_rank not in apparent_columns:
                apparent_columns[owner_rank] = _coboundary(edges, owner_rank)
            return apparent_columns[owner_rank]
        return reduced_by_pivot.get(pivot)

    found: list[tuple[int, int]] = []
    for r in to_reduce[::-1].tolist():  # reverse filtration order
        result = _reduce_column(edges, r, column_with_pivot)
        # A column reduced to zero is an essential class of the thresholded complex: not reported.
        if result is not None:
            reduced_by_pivot[result[0]] = result[1]
            found.append((r, result[0]))
    return found


def _enclosing_radius(dist: np.ndarray) -> float:
    return float(dist.max(axis=1).min())


def rips_persistence(dist: np.ndarray, maxdim: int = 1, threshold: float = np.inf) -> list[Diagram]:
    """Finite Vietoris-Rips persistence pairs of dimensions 0..maxdim with critical simplices.

    Args:
        dist: (N, N) symmetric distance matrix, zero diagonal, finite, non-negative, N >= 2.
        maxdim: 0 (H0 only) or 1 (H0 and H1).
        threshold: simplices with diameter ``<= threshold`` form the complex; classes still alive
            at the threshold are essential and dropped.

    Returns:
        ``[H0, H1]`` (or ``[H0]``): ``Diagram`` objects, see its docstring. Finite pairs only,
        zero-persistence pairs dropped (decisions 2-3), order ``(death, birth)`` ascending.

    Raises:
        ValueError: invalid ``dist`` (see ``validate_distance_matrix``), ``maxdim`` not in
            {0, 1}, or ``threshold`` NaN or negative.
    """
    d = validate_distance_matrix(dist)
    if isinstance(maxdim, bool) or not isinstance(maxdim, (int, np.integer)) or maxdim not in (0, 1):
        raise ValueError(f"maxdim must be 0 or 1 (H0 / H0+H1), got {maxdim!r}")
    threshold = float(threshold)
    if np.isnan(threshold) or threshold < 0:
        raise ValueError(f"threshold must be >= 0 or np.inf, got {threshold!r}")
    edges = _EdgeOrder(d, min(threshold, _enclosing_radius(d)))

    births, death_ranks, mst = _h0(edges)
    birth_v = np.asarray(births, dtype=np.int64)
    death_r = np.asarray(death_ranks, dtype=np.int64)
    # Kruskal emits merges in rank order, i.e. (death, rank) ascending already.
    live = edges.length[death_r] > 0
    birth_v, death_r = birth_v[live], death_r[live]
    death_edge = np.stack([edges.u[death_r], edges.v[death_r]], axis=1).reshape(-1, 2)
    h0 = Diagram(
        dim=0,
        pairs=np.stack([np.zeros(death_r.size), edges.length[death_r]], axis=1).reshape(-1, 2),
        birth_simplices=birth_v.reshape(-1, 1),
        death_simplices=death_edge.copy(),
        death_edges=death_edge,
        birth_edges=np.full((death_r.size, 2), -1, dtype=np.int64),
    )
    if maxdim == 0:
        return [h0]

    found = _h1(edges, mst)
    birth_r = np.asarray([b for b, _ in found], dtype=np.int64)
    keys = np.asarray([t for _, t in found], dtype=np.int64)
    top_r, third = keys // edges.n, keys % edges.n
    birth_val, death_val = edges.length[birth_r], edges.length[top_r]
    live = death_val > birth_val
    birth_r, top_r, third = birth_r[live], top_r[live], third[live]
    birth_val, death_val = birth_val[live], death_val[live]
    order = np.lexsort((birth_r, birth_val, death_val))
    birth_r, top_r, third = birth_r[order], top_r[order], third[order]
    birth_edge = np.stack([edges.u[birth_r], edges.v[birth_r]], axis=1).reshape(-1, 2)
    death_edge = np.stack([edges.u[top_r], edges.v[top_r]], axis=1).reshape(-1, 2)
    triangle = np.sort(np.concatenate([death_edge, third[:, None]], axis=1), axis=1).reshape(-1, 3)
    h1 = Diagram(
        dim=1,
        pairs=np.stack([birth_val[order], death_val[order]], axis=1).reshape(-1, 2),
        birth_simplices=birth_edge.copy(),
        death_simplices=triangle,
        death_edges=death_edge,
        birth_edges=birth_edge,
    )
    return [h0, h1]
