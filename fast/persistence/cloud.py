"""One cloud's persistence: float64 distances, H0 from the spanning tree, H1 read back from the engine.

The per-cloud body of the "Ripser" step of paper Algorithm 1 (line 12) and of the pairing map of
Algorithm 3, shared by the worker processes (``fast.persistence.pool``) and the inline path
(``workers=0``):

* distances in float64 by direct differences, from the cloud's points (decision 1);
* H0 pairs ``(0, length)`` from the edges of a minimum spanning tree, zero-length edges
  (duplicated points) dropped (decision 2): with the native engine, the tree its edge stage
  finds anyway (Kruskal in the reference's edge order, :func:`stage_parts`), otherwise dense Prim
  (``fast.persistence.h0``);
* H1 pairs read from *our* float64 matrix at the critical edges the engine reports (decisions 3
  and 6a), zero-persistence pairs dropped (decision 2);
* the time budget (decision 6c) is the cloud's own: it becomes a deadline (:func:`deadline_after`)
  when the cloud's H1 starts, so time spent waiting in a queue or on TPS and H0 never counts; an
  engine that stops at the deadline returns None. With the native engine H1 starts after its
  edge stage (which H0 shares, and whose cost is bounded by the sort of the kept edges): the
  budget covers the reduction, the one part whose cost can explode.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np

from fast.persistence import ranges
from fast.persistence.contract import CloudPersistence, H1Engine
from fast.persistence.edge_stage import EdgeStage, cpu_edge_stage
from fast.persistence.h0 import prim_mst_edges
from fast.jit import helper, kernel
from fast.persistence.native import native_h1, reduce_stage

H0Part = tuple[np.ndarray, np.ndarray]
"""``(pairs, death_edges)`` of one cloud's H0."""
H1Part = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(pairs, birth_edges, death_edges)`` of one cloud's H1."""

_EMPTY_EDGES = np.empty((0, 2), dtype=np.int64)
_EMPTY_PAIRS = np.empty((0, 2), dtype=np.float64)


def distances(points: np.ndarray, threads: int = 1) -> np.ndarray:
    """Float64 Euclidean distances by direct differences (exact zeros for duplicated points), rows
    on up to ``threads`` threads (``fast.persistence.ranges``; the same matrix for any count).

    Equal bit for bit to ``scipy.spatial.distance.cdist(points, points)``: scipy's kernel sums the
    squared coordinate differences in coordinate order and takes the square root, and
    :func:`_distance_rows` does the same arithmetic, only many pairs at a time.
    """
    points = np.ascontiguousarray(points, dtype=np.float64)
    n = points.shape[0]
    if n < 2:
        return np.zeros((n, n))
    out = np.empty((n, n), np.float64)
    ranges.run(_distance_rows, ranges.split(n, threads, triangular=True), points, np.ascontiguousarray(points.T), out)
    # the mirror reads every upper row, so it starts once they are all written
    ranges.run(_mirror_tiles, ranges.split(-(-n // _TILE), threads, triangular=True), out)
    return out


@helper
def _accumulate(acc: np.ndarray, column: np.ndarray, x: float) -> None:
    """``acc[j] += (x - column[j])**2`` for every ``j``: one loop the compiler turns into SIMD."""
    for j in range(acc.shape[0]):
        t = x - column[j]
        acc[j] += t * t


_TILE = 32  # square tiles of the mirroring pass: both triangles' entries read from cache


@kernel
def _distance_rows(points: np.ndarray, columns: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    """Rows ``lo..hi-1`` of the upper triangle and diagonal of the (N, N) matrix ``out`` of the
    (N, C) ``points`` (``columns`` = their C-contiguous transpose).

    Row ``i`` keeps one running sum per later point ``j`` and adds coordinate after coordinate,
    so every sum is scipy's sequential one (``(x_i - x_j)**2`` is ``(x_j - x_i)**2`` exactly).
    Why not ``pdist``: its one-pair kernel is not vectorised across pairs; measured here at
    N=1024, C=64: ~7 ms against ~20 ms with ``squareform``.
    """
    n, c = points.shape
    acc = np.empty(n, np.float64)
    for i in range(lo, hi):
        out[i, i] = 0.0
        row = acc[i + 1 :]
        for j in range(row.shape[0]):
            row[j] = 0.0
        for k in range(c):
            _accumulate(row, columns[k, i + 1 :], points[i, k])
        target = out[i, i + 1 :]
        for j in range(row.shape[0]):
            target[j] = np.sqrt(row[j])


@kernel
def _mirror_tiles(out: np.ndarray, lo: int, hi: int) -> None:
    """The lower triangle of ``out`` from its upper one, for the rows of tiles ``lo..hi-1``."""
    n = out.shape[0]
    for i0 in range(lo * _TILE, min(hi * _TILE, n), _TILE):
        for j0 in range(i0, n, _TILE):
            for i in range(i0, min(i0 + _TILE, n)):
                for j in range(max(j0, i + 1), min(j0 + _TILE, n)):
                    out[j, i] = out[i, j]


def _sorted_by_death_birth(pairs: np.ndarray, *edges: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.lexsort((pairs[:, 0], pairs[:, 1]))
    return (pairs[order],) + tuple(e[order] for e in edges)


def h0_part(dist: np.ndarray) -> H0Part:
    """H0 pairs and death edges from the MST, zero-length edges (duplicated points) dropped."""
    edges = prim_mst_edges(dist)
    deaths = dist[edges[:, 0], edges[:, 1]]
    keep = deaths > 0
    pairs = np.stack([np.zeros(int(keep.sum())), deaths[keep]], axis=1)
    return _sorted_by_death_birth(pairs, edges[keep])


def tree_h0_part(dist: np.ndarray, stage: EdgeStage) -> H0Part:
    """H0 pairs and death edges from the native edge stage's spanning tree (the reference's edges
    and order, ties included), zero-length edges dropped."""
    edges = np.stack([stage.u[stage.tree], stage.v[stage.tree]], axis=1).astype(np.int64).reshape(-1, 2)
    deaths = dist[edges[:, 0], edges[:, 1]]
    keep = deaths > 0
    pairs = np.stack([np.zeros(int(keep.sum())), deaths[keep]], axis=1)
    return _sorted_by_death_birth(pairs, edges[keep])


def stage_h1_part(dist: np.ndarray, stage: EdgeStage, deadline: Optional[float], threads: int = 1) -> Optional[H1Part]:
    """H1 of one cloud by the native reduction of its edge stage (a later try's stage on up to
    ``threads`` threads); None once ``deadline`` passed."""
    if deadline is not None and time.monotonic() >= deadline:
        return None
    diagram = reduce_stage(dist, stage, deadline, threads)
    return None if diagram is None else (diagram.pairs, diagram.birth_edges, diagram.death_edges)


def uses_stage(engine: H1Engine, with_h1: bool, points: int) -> bool:
    """Whether a cloud's H0 and H1 come from one native edge stage (:func:`stage_parts`)."""
    return with_h1 and engine is native_h1 and points >= 3


def stage_parts(dist: np.ndarray, time_budget: Optional[float],
                threads: int = 1) -> tuple[H0Part, Callable[[], Optional[H1Part]]]:
    """The native engine's edge stage of ``dist`` (on up to ``threads`` threads, decision 89): its H0
    part now, and a call that reduces its H1 within ``time_budget`` seconds from the moment it is
    made (so a caller can ship H0 first)."""
    stage = cpu_edge_stage(dist, truncate=True, threads=threads)
    return tree_h0_part(dist, stage), lambda: stage_h1_part(dist, stage, deadline_after(time_budget), threads)


def _h1_read_back(dist: np.ndarray, birth: np.ndarray, death: np.ndarray) -> H1Part:
    """H1 pairs read from ``dist`` at the engine's critical edges; zero persistence dropped."""
    birth = np.asarray(birth, dtype=np.int64).reshape(-1, 2)
    death = np.asarray(death, dtype=np.int64).reshape(-1, 2)
    pairs = np.stack([dist[birth[:, 0], birth[:, 1]], dist[death[:, 0], death[:, 1]]], axis=1)
    keep = pairs[:, 1] > pairs[:, 0]
    return _sorted_by_death_birth(pairs[keep], birth[keep], death[keep])


def deadline_after(time_budget: Optional[float]) -> Optional[float]:
    """The deadline ``time_budget`` seconds from now, as an absolute ``time.monotonic()`` value (None: none).

    The one place where a time budget (seconds, checked by ``fast.persistence.check_time_budget``
    when the cloud is submitted) becomes a deadline; the engines take the deadline itself.
    ``time.monotonic`` is system-wide, so a pool's thread compares its own clock with the same value.
    """
    return None if time_budget is None else time.monotonic() + time_budget


def h1_part(dist: np.ndarray, engine: H1Engine, time_budget: Optional[float]) -> Optional[H1Part]:
    """H1 of one cloud by ``engine`` within ``time_budget`` seconds from now; None if it gave up.

    A budget of 0 gives None without calling the engine.
    """
    deadline = deadline_after(time_budget)
    if deadline is not None and time.monotonic() >= deadline:
        return None
    result = engine(dist, deadline)
    return None if result is None else _h1_read_back(dist, *result)


def assemble(h0: H0Part, h1: Optional[H1Part], over_budget: bool = True) -> CloudPersistence:
    """The cloud's result; without ``h1`` it has H0 only, flagged ``h1_over_budget=over_budget``."""
    if h1 is None:
        return CloudPersistence(h0[0], h0[1], _EMPTY_PAIRS, _EMPTY_EDGES, _EMPTY_EDGES, over_budget)
    return CloudPersistence(h0[0], h0[1], *h1, False)


def cloud_persistence(
    points: np.ndarray, engine: H1Engine, time_budget: Optional[float], with_h1: bool, threads: int = 1
) -> CloudPersistence:
    """One cloud in the calling process (``workers=0``), its row-parallel parts on up to ``threads``
    threads; an engine that cannot stop itself (giotto-ph) is not interrupted here."""
    dist = distances(points, threads)
    if uses_stage(engine, with_h1, len(points)):
        h0, h1 = stage_parts(dist, time_budget, threads)
        return assemble(h0, h1())
    h0 = h0_part(dist)
    if not with_h1:
        return assemble(h0, None, over_budget=False)
    return assemble(h0, h1_part(dist, engine, time_budget))
