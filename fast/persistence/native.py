"""Native exact H1 engine: births found by a parallel test, only the remaining columns reduced.

The H1 part of the "Ripser" step of paper Algorithm 1 (line 12) and of the pairing map of
Algorithm 3 (birth edge, death triangle and its longest edge, decision 3), behind the
:data:`~fast.persistence.contract.H1Engine` interface (:func:`native_h1`, ``engine="native"``, the
default), plus a batched form (:func:`native_h1_batch`) whose first stage runs on the tensors'
device. The stages live in their own modules: steps 1-3 per cloud on the CPU in
``fast.persistence.edge_stage``, batched on a device in ``fast.persistence.device_stage``, step 4
in ``fast.persistence.reduction``.

Filtration (exactly ``reference.persistence``'s total order, ties included): vertices; edges by
``(length, i, j)``, i.e. by their *rank*; triangles by the key ``rank(max edge) * N + k`` (``k``
the vertex opposite the max edge), which is the reference's ``(diameter, rank of the maximal
edge, sorted triple)``. With a total order the persistence pairing is unique, so any correct
reduction returns the reference's pairs and critical simplices, with or without equal distances.

Algorithm (cohomology with clearing, apparent pairs, threshold = enclosing radius):

1. Enclosing radius ``r = min_i max_j D[i, j]``: at any value ``t >= r`` the complex is a cone
   over the vertex attaining ``r``, so its H1 is zero; every class born below ``r`` dies by ``r``
   and classes born later have zero persistence. Only edges and triangles of diameter ``<= r``
   are built (a filtration prefix, whose reduction equals the full one's on its columns), and
   no column of the prefix stays essential. On the CPU shorter prefixes are tried first, each
   kept only when certified equal, each try longer than the one before (decisions 36 and 83,
   ``fast.persistence.edge_stage.cpu_edge_stage``).
2. Ranks of the kept edges (one stable radix sort of the lengths listed in ``(i, j)`` order) and every
   vertex's neighbours in rank order (``fast.persistence.edge_stage.build_edge_order``).
3. Apparent pairs. An edge ``e = {a, b}`` with some ``k`` whose edges to ``a`` and ``b`` are
   both earlier has the earliest coface ``{a, b, k*}`` (``k*`` the lowest such ``k``) and is that
   triangle's latest face: an apparent pair, which is a persistence pair in any simplexwise
   filtration (the apparent-pair lemma of Bauer 2021, "Ripser: efficient computation of
   Vietoris-Rips persistence barcodes"), of zero persistence. This holds for the total
   order, ties or not, because it uses ranks, never raw lengths. The edges with *no* such ``k``
   (an empty lune: the relative-neighbourhood graph of the order) contain the minimum spanning
   tree; Kruskal over them alone gives the tree, whose columns are cleared (they are H0 deaths,
   so their coboundary columns reduce to zero). What remains, the empty-lune edges outside the
   tree, are the only columns that need reducing: each gives one finite pair, the H1 births
   (their cofaces all have a later max edge, so the pair's death edge is later than its birth;
   with equal lengths the persistence can still be zero, and such pairs are dropped).
   The test is embarrassingly parallel: on a CUDA device it runs batched over all clouds and
   edges with PyTorch (``fast.persistence.device_stage``); on a CPU a compiled scan with early exit is far
   cheaper than the O(N^3) batched form (``fast.persistence.edge_stage.lune_empty``; measured on the 2-core
   CPU here, one clustered 64-d cloud of N=512: 11 ms for the whole compiled stage against 2.0 s
   for the PyTorch stage on the CPU).
4. Reduction (``fast.persistence.reduction.reduce_columns``), columns in reverse filtration order, over
   Z2: the pivot of a column is its earliest coface. A pivot that is the apparent coface of its
   max edge belongs to that apparent column, whose column is its plain coboundary (apparent
   columns are never reduced). Any other owned pivot belongs to an earlier reduced column, kept
   as the enumerations of the coboundaries that sum to it, each as it stands just after that
   pivot (it is only ever added there; decision 88). A free pivot pairs the column with it
   (when it is the column's very first coface, this is Ripser's emergent pair: only that coface
   is ever enumerated).
   Apparent columns that never become pivots of a reduced column are never touched, and no
   pivot of a column can be the apparent coface of a *later-processed* (earlier) edge, since
   all faces of that triangle precede the column's edge, so handling every apparent pair up
   front changes nothing. Coboundaries are enumerated lazily in key order (the cofaces whose
   max edge is ``e`` itself by increasing ``k``, then a merge of the endpoints' neighbour lists)
   into a heap, so a column only pays for the cofaces up to its pivot; an edge's coboundary is
   in the heap at most once (added again, the copy there is dropped: over Z2 the two cancel).

Why exact: steps 1-4 are the standard persistent cohomology algorithm restricted to a prefix,
with clearing and apparent pairs, both of which leave the pairing unchanged; the values are
read from the float64 matrix given, so the pairs equal the reference's on *every* input (the
tests also compare with it on matrices with equal distances and duplicated points, and the
diagrams with gudhi's).

Deadline (decision 6c): the reduction reads the monotonic clock at every column and every 1024
heap operations and gives up once the deadline passed; the engine then returns ``None``.
(POSIX systems: the clock is ``clock_gettime(CLOCK_MONOTONIC)``.)
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from fast.persistence.cores import available_cores
from fast.persistence.edge_stage import EdgeStage, as_distance_matrix, cpu_edge_stage
from fast.persistence.reduction import CLOCK_MASK, STATUS_DEADLINE, STATUS_OUTLIVED, deadline_ns, reduce_columns


@dataclass(frozen=True)
class H1Diagram:
    """Finite H1 pairs of positive persistence of one cloud and their critical simplices.

    Attributes (K pairs, ordered by ``(death, birth, rank of the birth edge)`` like
    ``reference.persistence.Diagram``):
        pairs: (K, 2) float64 ``(birth, death)`` read from the distance matrix.
        birth_edges: (K, 2) int64 edge creating each cycle, ``i < j``.
        death_edges: (K, 2) int64 longest edge (in the edge order) of the filling triangle.
        death_triangles: (K, 3) int64 the filling triangle, sorted vertices.
    """

    pairs: np.ndarray
    birth_edges: np.ndarray
    death_edges: np.ndarray
    death_triangles: np.ndarray


_EMPTY = H1Diagram(
    np.empty((0, 2), np.float64), np.empty((0, 2), np.int64), np.empty((0, 2), np.int64), np.empty((0, 3), np.int64)
)


def reduce_stage(dist: np.ndarray, stage: EdgeStage, deadline: Optional[float] = None,
                 threads: int = 1) -> Optional[H1Diagram]:
    """Step 4 for one cloud: reduce the stage's columns; None if ``deadline`` passed first.

    ``dist`` is the cloud's float64 matrix (the values of the pairs are read from it);
    ``deadline`` an absolute ``time.monotonic()`` value or None; ``threads`` those of the next
    try's edge stage, when a class outlives a truncated prefix (the reduction itself is serial:
    decisions 88 and 89).
    """
    n = dist.shape[0]
    if deadline is not None and time.monotonic() > deadline:
        return None
    deaths, status = reduce_columns(
        stage.columns, stage.u, stage.v, stage.rank, stage.nbr, stage.deg, stage.pu, stage.pv, stage.partner,
        deadline_ns(deadline), time.CLOCK_MONOTONIC, CLOCK_MASK, stage.truncated,
    )
    if status == STATUS_DEADLINE:
        return None
    if status == STATUS_OUTLIVED:  # a class outlives the truncated prefix: the next try, or the radius
        next_try = cpu_edge_stage(dist, truncate=True, attempt=stage.attempt + 1, threads=threads)
        return reduce_stage(dist, next_try, deadline, threads)
    found = deaths >= 0
    birth_r = stage.columns[found]
    top_r, third = np.divmod(deaths[found], n)
    birth = np.stack([stage.u[birth_r], stage.v[birth_r]], axis=1).astype(np.int64).reshape(-1, 2)
    death = np.stack([stage.u[top_r], stage.v[top_r]], axis=1).astype(np.int64).reshape(-1, 2)
    values = np.stack([dist[birth[:, 0], birth[:, 1]], dist[death[:, 0], death[:, 1]]], axis=1).reshape(-1, 2)
    live = values[:, 1] > values[:, 0]
    order = np.lexsort((birth_r[live], values[live, 0], values[live, 1]))
    birth, death, values, third = birth[live][order], death[live][order], values[live][order], third[live][order]
    triangles = np.sort(np.concatenate([death, third[:, None]], axis=1), axis=1).reshape(-1, 3)
    return H1Diagram(values, birth, death, triangles)


def h1_persistence(dist: np.ndarray, deadline: Optional[float] = None) -> Optional[H1Diagram]:
    """Exact finite H1 diagram of the Rips filtration of ``dist`` (M, M), or None past ``deadline``.

    Raises ValueError when ``dist`` is not a square, finite, non-negative, symmetric matrix with
    a zero diagonal. Clouds of fewer than 3 points have no H1 and give an empty diagram.
    """
    d = as_distance_matrix(dist, "dist")
    if d.shape[0] < 3:
        return _EMPTY
    return reduce_stage(d, cpu_edge_stage(d, truncate=True), deadline)


def native_h1(dist: np.ndarray, deadline: Optional[float] = None) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """:data:`~fast.persistence.contract.H1Engine` backed by this module: ``(birth_edges, death_edges)`` or None.

    Both (K, 2) int64 (``i < j``), one row per finite H1 pair of positive persistence, ordered by
    ``(death, birth)``; None once ``deadline`` (absolute ``time.monotonic()``) has passed.
    """
    result = h1_persistence(dist, deadline)
    return None if result is None else (result.birth_edges, result.death_edges)


def native_h1_batch(
    dists: Union["torch.Tensor", Sequence[np.ndarray], None] = None,  # noqa: F821 (torch imported lazily)
    deadline: Optional[float] = None,
    threads: Optional[int] = None,
    device_stage: Optional[bool] = None,
    points: Optional["torch.Tensor"] = None,  # noqa: F821
) -> list[Optional[H1Diagram]]:
    """H1 diagrams of a batch of clouds: the parallel stage batched, then one reduction per thread.

    Args:
        dists: a (B, M, M) float64 tensor (CPU or CUDA) or a sequence of (M_b, M_b) arrays.
        points: instead of ``dists``, a (B, M, C) tensor of points; their distances are computed
            on its device (``fast.persistence.device_stage.batched_distances``).
        deadline: absolute ``time.monotonic()`` value or None; clouds not done by then give None.
        threads: reduction threads (default: the cores available); the kernels release the GIL.
        device_stage: run steps 1-3 batched with PyTorch on the tensors' device (default: only
            for a CUDA tensor; on a CPU the compiled per-cloud scan is faster).

    Returns:
        one :class:`H1Diagram` (or None past the deadline) per cloud, in batch order.
    """
    if (dists is None) == (points is None):
        raise ValueError("native_h1_batch: pass exactly one of dists (B, M, M) or points (B, M, C)")
    if points is not None:
        from fast.persistence.device_stage import batched_distances

        dists = batched_distances(points)
    is_tensor = hasattr(dists, "is_cuda")
    if device_stage is None:
        device_stage = bool(is_tensor and dists.is_cuda)
    if device_stage:
        import torch

        from fast.persistence.device_stage import device_edge_stages

        batch = (dists if is_tensor else _stack_tensor(dists)).detach().to(torch.float64)
        stages = device_edge_stages(batch)
        matrices = list(batch.cpu().numpy())
    else:
        matrices = [
            as_distance_matrix(m.detach().cpu().numpy() if hasattr(m, "detach") else m, f"dists[{b}]")
            for b, m in enumerate(dists)
        ]
        stages = None

    workers = max(1, min(threads or available_cores(), len(matrices)))

    def run(b: int) -> Optional[H1Diagram]:
        d = np.ascontiguousarray(matrices[b], dtype=np.float64)
        if d.shape[0] < 3:
            return _EMPTY
        stage = stages[b] if stages is not None else cpu_edge_stage(d, f"dists[{b}]", truncate=True)
        return reduce_stage(d, stage, deadline)

    if workers == 1:
        return [run(b) for b in range(len(matrices))]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, range(len(matrices))))


def _stack_tensor(dists: Sequence[np.ndarray]) -> "torch.Tensor":  # noqa: F821
    import torch

    return torch.as_tensor(np.stack([np.asarray(d, dtype=np.float64) for d in dists]))
