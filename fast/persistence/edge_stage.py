"""Steps 1-3 of the native H1 engine on the CPU: the filtration prefix, the edge order, the births.

The part of the "Ripser" step of paper Algorithm 1 (line 12) that precedes the reduction, under
decisions 1-3; the whole algorithm and why it is exact are documented in
``fast/persistence/native.py``. For one cloud's float64 distance matrix it produces the
:class:`EdgeStage` that the reduction (``fast.persistence.reduction``) consumes:

* :func:`enclosing_radius` (validating the matrix) and :func:`edges_within` - the edges up to the
  radius, or, with ``truncate``, up to a shorter certified length (:func:`cpu_edge_stage`, its
  tries :func:`truncation_limits`);
* :func:`length_order` - a stable radix sort of the kept edges by length, which is the
  reference's total order ``(length, i, j)`` (``reference/persistence.py``) because the edges
  arrive in ``(i, j)`` order;
* :func:`build_edge_order` - ranks of the edges in that order, each vertex's neighbours in that
  order;
* :func:`lune_empty` - the relative-neighbourhood test (is there a vertex ``k`` whose two edges
  to the endpoints are both earlier?) with early exit, and :func:`columns_to_reduce` - Kruskal
  over the survivors, leaving the columns that the apparent-pair shortcut cannot settle: the H1
  birth candidates.

The kernels are compiled as ``fast.jit`` says, like the reduction's; those of the radius, the
certificate, the kept edges and the lune test take a range of rows or edges, so that several
threads run one cloud (``fast.persistence.ranges``, decision 89; the same stage for any count).
The batched PyTorch form of the same stage, for many clouds on a CUDA device, is
``fast.persistence.device_stage``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fast.jit import helper, inlined, kernel
from fast.persistence import ranges


@dataclass
class EdgeStage:
    """Per-cloud output of the parallel stage (steps 1-3), input of the reduction (step 4).

    Attributes:
        u, v: (E,) int32 endpoints (``u < v``) of the kept edge of each rank.
        rank: (N, N) int32 edge ranks; the sentinel ``E`` outside the radius and on the diagonal.
        nbr: (N, N) int32 neighbours of each vertex by increasing rank (first ``deg[a]`` valid).
        deg: (N,) int32 number of kept edges at each vertex.
        pu, pv: (E,) int32 index of ``v[r]`` in ``nbr[u[r]]`` and of ``u[r]`` in ``nbr[v[r]]``.
        columns: (C,) int64 ranks of the edges to reduce, decreasing.
        tree: (T,) int64 ranks of the minimum spanning tree's edges under the total order,
            increasing (Kruskal's merge order; T = N - 1, the prefix being connected).
        partner: (E,) int64 apparent coface vertex per edge rank (-1 none, -2 not computed yet).
        truncated: the prefix stops below the enclosing radius (:func:`cpu_edge_stage` with
            ``truncate``): its pairs hold only if no column of it is left without a death.
        attempt: which try of :func:`truncation_limits` a truncated prefix is.
    """

    u: np.ndarray
    v: np.ndarray
    rank: np.ndarray
    nbr: np.ndarray
    deg: np.ndarray
    pu: np.ndarray
    pv: np.ndarray
    columns: np.ndarray
    tree: np.ndarray
    partner: np.ndarray
    truncated: bool = False
    attempt: int = 0


_MAX_POINTS = 46340  # flat edge indices i * M + j fit in int32


def as_distance_matrix(dist: np.ndarray, name: str) -> np.ndarray:
    """``dist`` as a C-contiguous float64 array; ValueError unless it is square."""
    d = np.ascontiguousarray(dist, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"{name} must be a square (M, M) distance matrix, got shape {d.shape}; compute it with scipy cdist(points, points)")
    return d


def _raise_bad_entry(d: np.ndarray, bad: int, name: str) -> None:
    n = d.shape[0]
    i, j = divmod(bad - 1, n)
    raise ValueError(
        f"{name} is not a distance matrix at [{i}, {j}] (value {d[i, j]!r}, transposed {d[j, i]!r}): entries must "
        "be finite, >= 0, symmetric with a zero diagonal; pass (D + D.T) / 2 with the diagonal set to 0"
    )


def cpu_edge_stage(dist: np.ndarray, name: str = "dist", truncate: bool = False, attempt: int = 0,
                   threads: int = 1) -> EdgeStage:
    """Steps 1-3 for one cloud on the CPU (compiled, early-exit lune test), the row-parallel
    kernels on up to ``threads`` threads (decision 89: the same stage for any count).

    With ``truncate`` (decision 36) the prefix may stop at a length ``t`` below the enclosing radius ``r``
    (:func:`truncation_limits`), which is exact when it can be certified: the prefix connects
    every vertex (so the tree is the whole minimum spanning tree; this holds by construction, ``t``
    being at least the tree's longest edge), every edge of length in
    ``(t, r]`` has an apparent coface (:func:`edges_apparent_between`: their pairs have zero
    persistence), and, checked by the reduction, every column of the prefix dies inside it.
    Why: a column whose death lies in the prefix is reduced only with columns of the prefix (a
    later edge's column holds triangles of diameter > ``t`` only), so its pair is the full
    filtration's. On the structured 1024-point clouds of the benchmarks every death lies below
    a prefix of 2-30% of the edges while the radius keeps 60-80%. If a check fails, the
    stage is built at the radius as without ``truncate``.

    Tries (decision 83): when check (2) fails, or the reduction finds a column that outlives the
    prefix (``native.reduce_stage``, which then calls this with the next ``attempt``), the next
    try's prefix holds about ``TRUNCATION_GROWTH`` times the edges of the one before
    (:func:`truncation_limits`); the radius comes only when no try below it is certified. On
    nearly isotropic 64-d clouds (effective dimension ~30) the last death lies just beyond the
    first try's limit on about a third of the clouds, and a second try is far cheaper than the
    radius stage (~90% of all edges).
    """
    d = as_distance_matrix(dist, name)
    n = d.shape[0]
    if n > _MAX_POINTS:
        raise ValueError(f"{name} has M={n} points; the native engine indexes edges with int32 and takes M <= {_MAX_POINTS} (subsample with TPS first)")
    radius, centre, bad = enclosing_radius(d, threads)
    if bad:
        _raise_bad_entry(d, bad, name)
    if truncate:
        for attempt, limit in truncation_limits(d, attempt):
            if limit >= radius:
                break
            if edges_apparent_between(d, limit, radius, centre, threads):
                stage = stage_within(d, limit, threads)
                stage.truncated = True
                stage.attempt = attempt
                return stage
    return stage_within(d, radius, threads)


def stage_within(d: np.ndarray, limit: float, threads: int = 1) -> EdgeStage:
    """Steps 1-3 on the edges of ``d`` no longer than ``limit`` (a checked matrix, :func:`cpu_edge_stage`)."""
    n = d.shape[0]
    lengths, flat = edges_within(d, limit, threads)
    u, v, rank, nbr, deg, pu, pv = build_edge_order(n, length_order(lengths, flat))
    empty_lune = lune_empty(u, v, rank, nbr, pu, pv, threads)
    columns, tree = columns_to_reduce(u, v, n, empty_lune)
    partner = np.full(u.shape[0], -2, np.int64)
    return EdgeStage(u, v, rank, nbr, deg, pu, pv, columns, tree, partner)


TRUNCATION_FACTOR = 3.0  # the first prefix holds about this many times the edges up to the tree's longest
TRUNCATION_GROWTH = 2.0  # each later try holds about this many times the edges of the one before
_SAMPLE_ROWS = 32  # rows of the distance matrix whose lengths estimate the length distribution


def truncation_limits(dist: np.ndarray, first: int = 0) -> list[tuple[int, float]]:
    """The tries ``(attempt, t)`` of a truncated prefix from ``attempt = first`` on, ``t`` increasing.

    Try ``k`` holds about ``TRUNCATION_FACTOR * TRUNCATION_GROWTH**k`` times as many edges as are
    no longer than the minimum spanning tree's longest edge ``L``, and ``t >= L``; the tries stop
    before one that would hold every edge (the last is then ``(k, inf)``). Counted on
    ``_SAMPLE_ROWS`` evenly spaced rows; only speed depends on them, never the result.
    """
    n = dist.shape[0]
    longest = mst_longest_edge(dist)
    rows = dist[:: max(1, n // _SAMPLE_ROWS)]
    sample = rows[rows > 0]  # drops the diagonal (and duplicated points, which never decide t)
    if sample.size == 0:
        return [(first, longest)]
    below = np.count_nonzero(sample <= longest)
    wanted: list[int] = []  # each try's count of sampled lengths, until one would hold them all
    while True:
        count = int(np.ceil(TRUNCATION_FACTOR * TRUNCATION_GROWTH ** (first + len(wanted)) * below))
        if count >= sample.size:
            break
        wanted.append(count)
    # every try's order statistic in one pass (measured here: ~0.8 ms less a cloud than one
    # partition per try, decision 88)
    ordered = np.partition(sample, wanted) if wanted else sample
    tries: list[tuple[int, float]] = []
    for attempt, count in enumerate(wanted, start=first):
        limit = max(longest, float(ordered[count]))
        if not tries or limit > tries[-1][1]:
            tries.append((attempt, limit))
    return tries + [(first + len(wanted), np.inf)]


@kernel
def mst_longest_edge(dist: np.ndarray) -> float:
    """Length of the longest edge of a minimum spanning tree (the same for every such tree):
    dense Prim, O(N^2)."""
    n = dist.shape[0]
    key = dist[0].copy()
    done = np.empty(n, np.bool_)
    for j in range(n):
        done[j] = j == 0
    longest = 0.0
    for _ in range(n - 1):
        best, w = np.inf, -1
        for j in range(n):
            if not done[j] and key[j] < best:
                best, w = key[j], j
        done[w] = True
        if best > longest:
            longest = best
        for j in range(n):
            if dist[w, j] < key[j]:
                key[j] = dist[w, j]
    return longest


@inlined
def _precedes(p: int, q: int, a: int, b: int) -> bool:
    """Edge ``{p, q}`` before edge ``{a, b}`` (``a < b``) among equal lengths: ``(min, max)`` order."""
    lo, hi = (p, q) if p < q else (q, p)
    return lo < a or (lo == a and hi < b)


@inlined
def _witness(x: float, y: float, a: int, b: int, k: int, length: float) -> bool:
    """Vertex ``k``, at ``x`` from ``a`` and ``y`` from ``b`` (``a < b``, ``k`` neither), has both
    edges before the edge ``{a, b}`` of ``length`` in the ``(length, i, j)`` order."""
    if x > length or y > length:
        return False
    if x == length and not _precedes(a, k, a, b):
        return False
    return not (y == length and not _precedes(b, k, a, b))


@helper
def _drop_witnessed(dist: np.ndarray, a: int, k: int, pending: np.ndarray, count: int) -> int:
    """Keep in ``pending[:count]`` (vertices ``b > a``) those for which ``k`` is no witness of the
    edge ``{a, b}``; returns their number.

    Without a tie (``D[a, k]`` and ``D[k, b]`` both differ from ``D[a, b]``; an endpoint ``k``
    always ties) ``k`` is a witness exactly when both are shorter, and the entry is kept by a
    count, not a branch: which entries stay is unpredictable, and a mispredicted branch per
    entry made this loop about 2.5x slower (measured here on 1024-point clouds).
    """
    kept = np.int64(0)
    row_a, row_k = dist[a], dist[k]
    x = row_a[k]
    for t in range(count):
        b = pending[t]
        length = row_a[b]
        y = row_k[b]
        pending[kept] = b
        if x == length or y == length:
            kept += np.int64(k == b or k == a or not _witness(x, y, a, b, k, length))
        else:
            kept += np.int64(not (x < length and y < length))
    return kept


def edges_apparent_between(dist: np.ndarray, lo: float, hi: float, centre: int, threads: int = 1) -> bool:
    """True when every edge ``{a, b}`` with ``lo < D[a, b] <= hi`` has a vertex ``k`` whose edges to
    ``a`` and ``b`` both come earlier in the ``(length, i, j)`` order (a non-empty lune: the edge
    is the latest face of an apparent pair, of zero persistence).

    Per vertex ``a``, a greedy cover of its edges (:func:`_cover_rows`), the rows on up to
    ``threads`` threads. The search gives up (False) once it has made more than
    ``_CERTIFICATE_WORK`` times N^2 vertex visits (at least 2^20) at one of its checks, counted in
    row order as on one thread: a cloud whose witnesses are rare then costs a few passes over the
    matrix before the radius stage, not O(N^3). Each row's own work does not depend on the other
    rows, so the threads count theirs, stop at a row without a cover or when their own count
    passes the budget (the whole count is then past it too), and the budget is checked on the
    counts added up in row order afterwards: the same answer for any number of threads.
    """
    n = dist.shape[0]
    budget = max(_CERTIFICATE_WORK * n * n, _CERTIFICATE_FLOOR)
    work = np.empty(n, np.int64)
    checked = np.empty(n, np.bool_)
    stop = np.empty(1, np.bool_)
    stop[0] = False
    covered = ranges.run(_cover_rows, ranges.split(n, threads, triangular=True),
                         dist, lo, hi, centre, budget, work, checked, stop)
    return all(covered) and not np.any(checked & (np.cumsum(work) > budget))


@kernel
def _cover_rows(dist: np.ndarray, lo: float, hi: float, centre: int, budget: int, work: np.ndarray,
                checked: np.ndarray, stop: np.ndarray, first: int, last: int) -> bool:
    """:func:`edges_apparent_between` on the rows ``first..last-1``: False at a row with an edge
    without a witness, once this range's work passes ``budget``, or when another range has set
    ``stop[0]`` (which a False here sets: the answer is False then). Writes each row's vertex
    visits to ``work`` and whether it checked the budget to ``checked`` (valid when True).

    Per vertex ``a``: ``centre`` first (the vertex attaining the enclosing radius is a witness of
    most long edges; any vertex is correct), then, for the first edge still without a witness, a
    scan of the rows of ``a`` and ``b`` from the last vertex down (in TPS order the first vertices
    are the outermost, the least likely in a lune); each witness found is tried on all the
    remaining edges at once.
    """
    n = dist.shape[0]
    total = 0
    pending = np.empty(n, np.int64)
    for a in range(first, last):
        if stop[0]:  # another range found the answer (False); read at each row, written once
            return False
        count = np.int64(0)
        row = dist[a]
        for b in range(a + 1, n):  # branch-free, as in _drop_witnessed
            pending[count] = b
            count += np.int64((lo < row[b]) & (row[b] <= hi))
        spent = count
        count = _drop_witnessed(dist, a, centre, pending, count)
        checked[a] = count > 0
        while count > 0:
            b = pending[0]
            length = dist[a, b]
            row_a, row_b = dist[a], dist[b]
            found = -1
            for k in range(n - 1, -1, -1):
                if k != a and k != b and _witness(row_a[k], row_b[k], a, b, k, length):
                    found = k
                    break
            spent += n - found + count
            if found < 0 or total + spent > budget:
                stop[0] = True
                return False
            count = _drop_witnessed(dist, a, found, pending, count)
        work[a] = spent
        total += spent
    return True


_CERTIFICATE_WORK = 8  # vertex visits of the apparent-edge search, in units of N^2, before it gives up
_CERTIFICATE_FLOOR = 1 << 20  # the least budget of vertex visits, for small clouds
_TILE = 32  # square tiles for the symmetric pass: both D[i, j] and D[j, i] read from cache
_DIGIT = 11  # radix of length_order: 2048 buckets stay in the L1/L2 cache during a scatter
_PASSES = (64 + _DIGIT - 1) // _DIGIT


def length_order(lengths: np.ndarray, payload: np.ndarray) -> np.ndarray:
    """The int32 ``payload`` (one per length) ordered by the non-negative ``lengths`` ascending,
    equal lengths by position (``payload[np.argsort(lengths, kind="stable")]``).

    A least-significant-digit radix sort of the IEEE-754 bit patterns (:func:`_radix_order`),
    which for non-negative doubles increase with the value (``-0.0`` is keyed as ``+0.0``); each
    pass is a stable counting sort, so ties keep their input order, and a pass whose digit is the
    same for every key is skipped. Why not ``np.argsort``: measured here on the ~400k kept edges of
    a 1024-point cloud, ~12 ms against ~30 ms for numpy's (unstable) sort plus the re-sorting of
    tied runs. The bit patterns are taken here, in Python: numba's ``view`` costs a fresh cache
    about 0.2 CPU-s of compilation (decision 41).
    """
    return _radix_order(np.ascontiguousarray(lengths, dtype=np.float64).view(np.uint64), payload)


_MAGNITUDE = np.uint64(2**63 - 1)  # all bits but the sign: keys -0.0 as +0.0


@kernel
def _radix_order(bits: np.ndarray, payload: np.ndarray) -> np.ndarray:
    """:func:`length_order` on the uint64 bit patterns ``bits`` of the lengths."""
    e = bits.shape[0]
    keys = np.empty(e, np.uint64)
    mask = np.uint64((1 << _DIGIT) - 1)
    counts = np.empty((_PASSES, 1 << _DIGIT), np.int64)
    for p in range(_PASSES):
        for digit in range(1 << _DIGIT):
            counts[p, digit] = 0
    for c in range(e):
        k = bits[c] & _MAGNITUDE
        keys[c] = k
        for p in range(_PASSES):
            counts[p, (k >> np.uint64(p * _DIGIT)) & mask] += 1
    order = payload.astype(np.int32)
    spare_keys = np.empty(e, np.uint64)
    spare_order = np.empty(e, np.int32)
    start = np.empty(1 << _DIGIT, np.int64)
    for p in range(_PASSES):
        shift = np.uint64(p * _DIGIT)
        if e == 0 or counts[p, (keys[0] >> shift) & mask] == e:
            continue
        total = 0
        for digit in range(1 << _DIGIT):
            start[digit] = total
            total += counts[p, digit]
        for c in range(e):
            k = keys[c]
            digit = (k >> shift) & mask
            j = start[digit]
            start[digit] = j + 1
            spare_keys[j] = k
            spare_order[j] = order[c]
        keys, spare_keys = spare_keys, keys
        order, spare_order = spare_order, order
    return order


def enclosing_radius(dist: np.ndarray, threads: int = 1) -> tuple[float, int, int]:
    """Enclosing radius ``r = min_i max_j D[i, j]``, validating the matrix on the way, the rows of
    tiles on up to ``threads`` threads.

    Returns ``(r, centre, bad)``: ``centre`` the first vertex attaining ``r``; ``bad`` is 0, or
    1 + the flat index of the first entry at which the matrix is not a distance matrix (a nonzero
    diagonal entry first, then asymmetric, negative, NaN/Inf entries in the tiles' order).
    """
    n = dist.shape[0]
    diagonal = np.flatnonzero(np.diagonal(dist) != 0.0)
    if diagonal.size:
        return 0.0, 0, 1 + int(diagonal[0]) * (n + 1)
    if n == 0:
        return 0.0, 0, 0
    tiles = ranges.split(-(-n // _TILE), threads, triangular=True)
    # one row of maxima per range (a tile updates the maxima of two rows, the other's maybe another
    # range's), found by the range's start; their maximum is exact
    starts = np.array([lo for lo, _ in tiles], np.int64)
    row_max = np.empty((len(tiles), n), np.float64)
    for bad in ranges.run(_radius_tiles, tiles, dist, starts, row_max):
        if bad:
            return 0.0, 0, bad
    maxima = row_max.max(axis=0)
    centre = int(np.argmin(maxima))  # the first minimiser
    return float(maxima[centre]), centre, 0


@kernel
def _radius_tiles(dist: np.ndarray, starts: np.ndarray, row_max: np.ndarray, lo: int, hi: int) -> int:
    """The row maxima over the upper tiles of the rows of tiles ``lo..hi-1`` into ``row_max[t]``,
    ``starts[t] == lo``; returns 0, or 1 + the flat index of the first off-diagonal entry there
    that is not finite, >= 0 and symmetric (tile after tile, as on one thread)."""
    n = dist.shape[0]
    t = 0
    while starts[t] != lo:
        t += 1
    own = row_max[t]
    for j in range(n):
        own[j] = 0.0
    for i0 in range(lo * _TILE, min(hi * _TILE, n), _TILE):
        for j0 in range(i0, n, _TILE):
            for i in range(i0, min(i0 + _TILE, n)):
                for j in range(max(j0, i + 1), min(j0 + _TILE, n)):
                    x = dist[i, j]
                    if not (x >= 0.0 and x < np.inf) or x != dist[j, i]:
                        return 1 + i * n + j
                    if x > own[i]:
                        own[i] = x
                    if x > own[j]:
                        own[j] = x
    return 0


def edges_within(dist: np.ndarray, limit: float, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The edges ``i < j`` with ``D[i, j] <= limit``: their lengths and row-major flat indices
    ``i * N + j`` (int32), in ``(i, j)`` order; the rows on up to ``threads`` threads, each
    counting its rows' edges, then writing them from where the rows before end."""
    n = dist.shape[0]
    rows = ranges.split(n, threads, triangular=True)
    kept = np.empty(n + 1, np.int64)  # kept[i + 1]: edges of row i, then where row i's edges start
    kept[0] = 0
    ranges.run(_count_within, rows, dist, limit, kept[1:])
    np.cumsum(kept, out=kept)
    lengths = np.empty(kept[n], np.float64)
    flat = np.empty(kept[n], np.int32)
    ranges.run(_list_within, rows, dist, limit, kept, lengths, flat)
    return lengths, flat


@kernel
def _count_within(dist: np.ndarray, limit: float, counts: np.ndarray, lo: int, hi: int) -> None:
    """``counts[i]``: the edges ``i < j`` with ``D[i, j] <= limit``, for the rows ``lo..hi-1``."""
    n = dist.shape[0]
    for i in range(lo, hi):
        count = 0
        for j in range(i + 1, n):
            if dist[i, j] <= limit:
                count += 1
        counts[i] = count


@kernel
def _list_within(dist: np.ndarray, limit: float, starts: np.ndarray, lengths: np.ndarray, flat: np.ndarray,
                 lo: int, hi: int) -> None:
    """The edges of the rows ``lo..hi-1`` no longer than ``limit`` at ``starts[i]`` on (:func:`edges_within`)."""
    n = dist.shape[0]
    for i in range(lo, hi):
        c = starts[i]
        for j in range(i + 1, n):
            if dist[i, j] <= limit:
                lengths[c] = dist[i, j]
                flat[c] = i * n + j
                c += 1


@kernel
def build_edge_order(
    n: int, ordered: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ranks of the kept edges under ``(length, i, j)`` and every vertex's neighbours in rank order.

    ``ordered`` holds the flat indices ``i * N + j`` of the kept edges sorted by length and equal
    lengths by ``(i, j)`` (:func:`length_order`): the reference's total order.

    Returns ``(u, v, rank, nbr, deg, pu, pv)``: ``u[r] < v[r]`` are the endpoints of the edge of
    rank ``r``; ``rank[i, j]`` its rank, or the sentinel ``E`` (number of kept edges) for edges
    outside the radius and on the diagonal; ``nbr[a, :deg[a]]`` the neighbours of ``a`` by
    increasing edge rank; ``pu[r]`` the index of ``v[r]`` in ``nbr[u[r]]`` (so the neighbours of
    ``u[r]`` through earlier edges are ``nbr[u[r], :pu[r]]``) and ``pv[r]`` that of ``u[r]`` in
    ``nbr[v[r]]``.

    One pass in rank order; measured here at N=1024, sorting the flat indices themselves and
    writing both ``rank[i, j]`` and ``rank[j, i]`` in that pass beat an inverse permutation plus
    a row-by-row fill and a tiled mirror (~20 ms against ~25 ms with the sort). Serial (decision
    89): split by vertex, both threads wrote the same cache lines of ``u``, ``v``, ``pu``, ``pv``
    edge after edge (2.0 -> 3.0 ms a cloud at 2 threads), and a second pass writing those from
    the lists cost 0.5-0.8 ms more on one thread than this one pass.
    """
    e = ordered.shape[0]
    u = np.empty(e, np.int32)
    v = np.empty(e, np.int32)
    pu = np.empty(e, np.int32)
    pv = np.empty(e, np.int32)
    nbr = np.empty((n, n), np.int32)
    deg = np.empty(n, np.int32)
    rank = np.empty((n, n), np.int32)
    for i in range(n):
        deg[i] = 0
        for j in range(n):
            rank[i, j] = e
    for r in range(e):
        f = ordered[r]
        a = f // n
        b = f - a * n
        u[r] = a
        v[r] = b
        pu[r] = deg[a]
        nbr[a, deg[a]] = b
        deg[a] += 1
        pv[r] = deg[b]
        nbr[b, deg[b]] = a
        deg[b] += 1
        rank[a, b] = r
        rank[b, a] = r
    return u, v, rank, nbr, deg, pu, pv


@helper
def _find(parent: np.ndarray, x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


def lune_empty(u: np.ndarray, v: np.ndarray, rank: np.ndarray, nbr: np.ndarray, pu: np.ndarray, pv: np.ndarray,
               threads: int = 1) -> np.ndarray:
    """Per kept edge rank: True when the edge is *not* apparent (its lune is empty), the edges on
    up to ``threads`` threads (:func:`_lune_edges`)."""
    empty_lune = np.empty(u.shape[0], np.bool_)
    ranges.run(_lune_edges, ranges.split(u.shape[0], threads), u, v, rank, nbr, pu, pv, empty_lune)
    return empty_lune


@kernel
def _lune_edges(u: np.ndarray, v: np.ndarray, rank: np.ndarray, nbr: np.ndarray, pu: np.ndarray, pv: np.ndarray,
                empty_lune: np.ndarray, lo: int, hi: int) -> None:
    """:func:`lune_empty` of the edge ranks ``lo..hi-1``.

    An edge ``{a, b}`` of rank ``R`` has an apparent coface exactly when some vertex ``k`` has
    both ``rank[a, k] < R`` and ``rank[b, k] < R``; with none, the edge lies in the
    relative-neighbourhood graph of the rank order. The candidates ``k`` with ``rank[a, k] < R``
    are the first ``pu[R]`` neighbours of ``a`` (``pv[R]`` of ``b``); the shorter of the two endpoints' lists is
    scanned, nearest first, stopping at the first witness (the batched, exhaustive form of this
    test is ``fast.persistence.device_stage``).
    """
    for r in range(lo, hi):
        a = u[r]
        b = v[r]
        pa = pu[r]
        pb = pv[r]
        empty = True
        if pa <= pb:
            for p in range(pa):
                if rank[b, nbr[a, p]] < r:
                    empty = False
                    break
        else:
            for p in range(pb):
                if rank[a, nbr[b, p]] < r:
                    empty = False
                    break
        empty_lune[r] = empty


@kernel
def columns_to_reduce(u: np.ndarray, v: np.ndarray, n: int, empty_lune: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of the non-apparent edges outside the minimum spanning tree, latest first, and the
    ranks of the tree's edges, earliest first.

    The tree is the reference's H0 (``reference.rips_persistence``: Kruskal over all edges in
    rank order; the kept prefix contains the tree because the edges of length at most the
    enclosing radius already connect every vertex to its centre). The minimum spanning tree of the total order lies inside the relative-neighbourhood graph
    (an edge with an earlier two-edge path around it closes a cycle of earlier edges), so Kruskal
    over the empty-lune edges alone, already in rank order, finds it; its edges are the cleared
    H0 columns. Why not ``fast.persistence.h0``: its ties go by Prim's vertex order, not the edge
    order, and Kruskal over these few edges is cheaper than a dense pass.
    """
    parent = np.empty(n, np.int64)
    for i in range(n):
        parent[i] = i
    count = 0
    merged = 0
    out = np.empty(u.shape[0], np.int64)
    tree = np.empty(max(n - 1, 0), np.int64)
    for r in range(u.shape[0]):
        if not empty_lune[r]:
            continue
        ra = _find(parent, u[r])
        rb = _find(parent, v[r])
        if ra != rb:
            parent[ra] = rb
            tree[merged] = r
            merged += 1
        else:
            out[count] = r
            count += 1
    latest_first = np.empty(count, np.int64)
    for i in range(count):
        latest_first[i] = out[count - 1 - i]
    return latest_first, tree[:merged].copy()
