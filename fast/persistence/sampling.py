"""Topology-preserving sampling (TPS) of one cloud, compiled: paper Algorithm 5 under decision 14.

The farthest-point loop of ``reference.tps_cloud`` with the same float64 arithmetic and the same
tie rule, so it returns the same indices bit for bit (ties included):

* a distance is ``sqrt`` of the sum of the squared coordinate differences, summed in the order
  numpy's ``np.linalg.norm(..., axis=1)`` uses (its pairwise summation: eight interleaved partial
  sums for up to 128 terms, halves above), so every distance equals the reference's;
* the next index is the first maximiser of the running minimum, selected points excluded (their
  minimum is ``-inf``).

What makes it cheaper than the reference's M passes over all N points: the running minimum only
changes where the distance to the *newest* centre ``p`` is smaller, and the triangle inequality
rules that out for most points without computing it. Each point remembers the centre ``c`` that
gave its minimum ``d``; if ``D(c, p) > 2 d`` then ``D(x, p) >= D(c, p) - d > d`` and the minimum
stays ``d``. With rounding: if every computed distance is within a relative ``delta`` of the true
one and the test is ``D^(c, p) > 2 d (1 + m)``, then the computed ``D^(x, p)`` exceeds
``d (2 (1 + m) (1 - delta) / (1 + delta) - 1) ~ d (1 + 2 m - 4 delta) > d`` whenever
``m > 2 delta``, so a skipped update is one the exact loop would not have made: the running
minima, and hence the indices, are the reference's. A sum of C squares has ``delta`` below about
``C`` units of 1.1e-16 (below 1e-10 for any C under a million), and the margin is
``m = _MARGIN = 1e-9``; the test is applied only where ``d`` is a normal number far from under-
and overflow (where ``D^(c, p)`` overflows to inf the true distance is above 1e154, far above
``2 d``, and the skip is still right).
Each point keeps its threshold ``2 d (1 + _MARGIN)`` (or -inf, never computed, or +inf, always
computed), updated only when ``d`` changes, so the N x M test is a single comparison (measured
here, one core, M = 1024 of 4096 points: 7-15% less TPS time on the structured benchmark clouds,
the same on unstructured ones).
The distances from the newest centre to all earlier ones (the test's ``D^(c, p)``) are computed
with the selected points stored as columns, so all centres advance together in SIMD lanes
(:func:`_lanes_dist`). Only the test reads them, so they need the accuracy above, not
:func:`_dist`'s summation order: a plain sum, coordinate after coordinate (decision 41: the
lanes that replayed numpy's pairwise order cost about a CPU-second of every fresh compile).
Measured on this machine (one core, N=4096, 64-d, M=1024): see ``benchmarks/RESULTS.md``.

Used by ``fast.tps`` on the CPU and by the persistence workers (``fast.persistence.pool``),
which run TPS next to the cloud's persistence.
"""
from __future__ import annotations

import numpy as np

from fast.jit import helper, inlined, kernel

_MARGIN = 1e-9  # relative: D(c, p) must exceed 2 d (1 + _MARGIN) for a skip
_SAFE_LOW, _SAFE_HIGH = 1e-100, 1e100  # d outside this range (and not 0) is always recomputed
TPS_SKIP_CONSTANTS = (_MARGIN, _SAFE_LOW, _SAFE_HIGH)
"""The skip test's margin and the range of minima it is applied to (the module docstring), for the
device kernel ``fast.tps_device``, which applies the same test."""
_BLOCK = 128  # numpy's pairwise-summation block (PW_BLOCKSIZE)
_DEPTH = 64  # partial sums held at once while a plan runs: one per level plus one


@helper
def _sq(h: np.ndarray, a: int, b: int, c: int) -> float:
    t = h[a, c] - h[b, c]
    return t * t


@inlined
def _block_sq(h: np.ndarray, a: int, b: int, lo: int, n: int) -> float:
    """Sum of ``(h[a, c] - h[b, c])**2`` over ``c`` in ``[lo, lo + n)``, ``n <= 128``, in numpy's order."""
    if n < 8:
        res = 0.0
        for c in range(lo, lo + n):
            res += _sq(h, a, b, c)
        return res
    r0 = _sq(h, a, b, lo)
    r1 = _sq(h, a, b, lo + 1)
    r2 = _sq(h, a, b, lo + 2)
    r3 = _sq(h, a, b, lo + 3)
    r4 = _sq(h, a, b, lo + 4)
    r5 = _sq(h, a, b, lo + 5)
    r6 = _sq(h, a, b, lo + 6)
    r7 = _sq(h, a, b, lo + 7)
    i = lo + 8
    stop = lo + n - n % 8
    while i < stop:
        r0 += _sq(h, a, b, i)
        r1 += _sq(h, a, b, i + 1)
        r2 += _sq(h, a, b, i + 2)
        r3 += _sq(h, a, b, i + 3)
        r4 += _sq(h, a, b, i + 4)
        r5 += _sq(h, a, b, i + 5)
        r6 += _sq(h, a, b, i + 6)
        r7 += _sq(h, a, b, i + 7)
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < lo + n:
        res += _sq(h, a, b, i)
        i += 1
    return res


def summation_plan(n: int) -> tuple[np.ndarray, np.ndarray]:
    """numpy's pairwise summation over ``n`` columns as a postfix program ``(lo, size)`` (two int64
    arrays): a block of ``size <= 128`` columns from ``lo`` pushes its sum, ``size == -1`` replaces
    the last two sums by theirs. For ``n <= 128`` one block; above, numpy's recursion (halves
    rounded down to multiples of 8, left half first). Plain Python, once per cloud: compiled, it
    cost about a CPU-second in every fresh cache."""
    steps: list[tuple[int, int]] = []

    def visit(lo: int, size: int) -> None:
        if size <= _BLOCK:
            steps.append((lo, size))
            return
        half = size // 2
        half -= half % 8
        visit(lo, half)
        visit(lo + half, size - half)
        steps.append((lo, -1))

    visit(0, n)
    los, sizes = zip(*steps)
    return np.array(los, dtype=np.int64), np.array(sizes, dtype=np.int64)


@inlined
def _dist(h: np.ndarray, a: int, b: int, plan_lo: np.ndarray, plan_n: np.ndarray, held: np.ndarray) -> float:
    """``||h[a] - h[b]||`` as ``np.linalg.norm`` sums it (``plan``: :func:`summation_plan` of the
    columns; ``held``: (_DEPTH,) scratch for the partial sums). C <= 128 (one block) has a copy
    of its own: the plan loop alone, one inlined copy fewer, compiled about a CPU-second faster but
    made TPS 25-30% slower on unstructured clouds (measured here, decision 41)."""
    if plan_lo.shape[0] == 1:
        return np.sqrt(_block_sq(h, a, b, np.int64(0), h.shape[1]))
    top = 0
    for step in range(plan_lo.shape[0]):
        if plan_n[step] < 0:
            top -= 1
            held[top - 1] += held[top]
        else:
            held[top] = _block_sq(h, a, b, plan_lo[step], plan_n[step])
            top += 1
    return np.sqrt(held[0])


@helper
def _lanes_dist(ct: np.ndarray, k: int, x: np.ndarray, out: np.ndarray) -> None:
    """``||ct[:, j] - x||`` for the ``k`` lanes ``j < k`` of ``ct`` (points as columns), into
    ``out[:k]``: squares summed coordinate after coordinate, each coordinate one loop over the lanes
    that the compiler turns into SIMD. Only the skip test reads these (see the module docstring):
    they need its accuracy, not :func:`_dist`'s summation order."""
    o = out[:k]
    for j in range(k):
        o[j] = 0.0
    for c in range(x.shape[0]):
        column = ct[c, :k]
        xc = x[c]
        for j in range(k):
            t = column[j] - xc
            o[j] += t * t
    for j in range(k):
        o[j] = np.sqrt(o[j])


@helper
def _set_column(columns: np.ndarray, k: int, x: np.ndarray) -> None:
    """``columns[:, k] = x`` as a loop: numba compiles an array-to-array slice assignment with its
    shape-mismatch message, about 3 CPU-s more of compilation in a fresh cache (decision 41)."""
    for c in range(x.shape[0]):
        columns[c, k] = x[c]


@kernel
def farthest_point_indices(h: np.ndarray, m: int, first: int, plan_lo: np.ndarray, plan_n: np.ndarray) -> np.ndarray:
    """``m`` TPS indices of the (N, C) float64 C-contiguous ``h`` (``1 <= m < N``), starting at
    ``first``; ``plan_lo, plan_n``: :func:`summation_plan` of the C columns."""
    n = h.shape[0]
    idx = np.empty(m, np.int64)
    d_min = np.empty(n, np.float64)
    owner = np.empty(n, np.int64)  # position in idx of the centre that gave d_min
    # skip[i]: the point's distance to the newest centre is skipped when D(owner, newest) exceeds
    # it (the triangle test above, 2 d (1 + _MARGIN) for a d in the safe range; -inf when d <= 0,
    # which cannot decrease; +inf when d is outside the safe range, always computed): the test
    # of the N x M loop is then one comparison, and the threshold is computed once per new d
    skip = np.empty(n, np.float64)
    for i in range(n):
        d_min[i] = np.inf  # no centre yet: every point's distance to ``first`` is computed below
        owner[i] = 0
        skip[i] = np.inf
    centre_dist = np.empty(m, np.float64)
    for j in range(m):
        centre_dist[j] = 0.0  # read (for no skip) before the first centre distances
    centres = np.empty((h.shape[1], m), np.float64)  # the selected points as columns: D(centre, p) in SIMD lanes
    held = np.empty(_DEPTH, np.float64)
    p = np.int64(first)
    for k in range(m):
        idx[k] = p
        if k > 0:
            _lanes_dist(centres, k, h[p], centre_dist)
        _set_column(centres, k, h[p])
        d_min[p] = -np.inf  # selected: never computed again, never the maximiser
        skip[p] = -np.inf
        # one pass updates the running minima and finds the next centre (their first maximiser);
        # one call site of the inlined distance, which keeps this kernel's compile time down
        best, following = -np.inf, np.int64(0)
        for i in range(n):
            if not centre_dist[owner[i]] > skip[i]:
                e = _dist(h, i, p, plan_lo, plan_n, held)
                if e < d_min[i]:
                    d_min[i] = e
                    owner[i] = k
                    if e <= 0.0:
                        skip[i] = -np.inf
                    elif _SAFE_LOW <= e <= _SAFE_HIGH:
                        skip[i] = 2.0 * e * (1.0 + _MARGIN)
                    else:
                        skip[i] = np.inf
            d = d_min[i]
            if d > best:
                best, following = d, i
        p = following
    return idx


def tps_start(n: int, seed: int) -> int:
    """The first TPS index of a cloud of ``n`` points (decision 14, shared with ``reference.tps``)."""
    return int(np.random.default_rng(seed).integers(n))


def tps_indices(points: np.ndarray, m: int, seed: int) -> np.ndarray:
    """TPS indices (``min(m, N)``,) int64 of the (N, C) float64 ``points``: ``reference.tps_cloud``'s."""
    n = points.shape[0]
    if n <= m:
        return np.arange(n, dtype=np.int64)
    return farthest_point_indices(np.ascontiguousarray(points, dtype=np.float64), m, tps_start(n, seed),
                                  *summation_plan(points.shape[1]))
