"""Step 4 of the native H1 engine: the compiled (numba) cohomology reduction of one cloud's columns.

Implements the reduction behind the H1 part of the "Ripser" step of paper Algorithm 1 (line 12)
and the pairing map of Algorithm 3 under decisions 1-3 and 6c; the algorithm and why it is exact
are documented in ``fast/persistence/native.py``. Its input is the edge stage of one cloud
(``fast.persistence.edge_stage``: edge ranks, neighbour lists, the columns to reduce):

* :func:`reduce_columns` - the cohomology reduction of exactly those columns, with the apparent
  columns used implicitly (:func:`apparent_partner`, the apparent-pair lemma of Bauer 2021),
  each working column a heap of lazily enumerated coboundaries, at most one per edge, and each
  reduced column kept as those iterators just past its pivot (decision 88);
* :func:`deadline_ns` and a compiled clock: the reduction stops once the deadline of decision 6c
  has passed.

Every function is compiled as ``fast.jit`` says: threads running different clouds run
truly in parallel and the compiled code is reused across processes. Hand-written (not a library)
because no installed engine exposes the pairing under the project's total order, and because the
births are found by a test that no engine offers separately.
"""
from __future__ import annotations

import time

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from fast.jit import helper, inlined, kernel

STATUS_DONE = 0
STATUS_DEADLINE = 1
STATUS_OUTLIVED = 2
"""A column of a truncated prefix emptied: its class outlives the prefix (decisions 36 and 83)."""
CLOCK_MASK = 1023
"""The reduction reads the clock at each column and whenever ``pops & CLOCK_MASK`` wraps."""


@intrinsic
def _clock_ns(typingctx, clock_id):  # noqa: ANN001, ANN202 (numba intrinsic signature)
    """POSIX ``clock_gettime(clock_id)`` in nanoseconds, callable from compiled code.

    Why an intrinsic: numba has no clock of its own; an object-mode block (``time.monotonic``)
    would take the GIL and, measured here, stops numba from caching the kernel, and a ctypes
    pointer also disables caching. A call to the libc symbol by name keeps ``cache=True``.
    """
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        i64, i32 = ir.IntType(64), ir.IntType(32)
        spec = cgutils.alloca_once(builder, ir.ArrayType(i64, 2))  # struct timespec {sec, nsec}
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32, spec.type]), "clock_gettime")
        builder.call(fn, [builder.trunc(args[0], i32), spec])
        sec = builder.load(builder.gep(spec, [i32(0), i32(0)]))
        nsec = builder.load(builder.gep(spec, [i32(0), i32(1)]))
        return builder.add(builder.mul(sec, i64(1_000_000_000)), nsec)

    return sig, codegen


def deadline_ns(deadline: float | None) -> int:
    """An absolute ``time.monotonic()`` deadline as ``CLOCK_MONOTONIC`` nanoseconds (None: never)."""
    if deadline is None:
        return np.iinfo(np.int64).max
    now_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    return now_ns + int((deadline - time.monotonic()) * 1e9)


@inlined
def _lowest_in_lune(a: int, b: int, pa: int, pb: int, r: int, lo: int, rank: np.ndarray, nbr: np.ndarray) -> int:
    """Lowest vertex ``k >= lo`` with ``max(rank[a, k], rank[b, k]) < r`` (the lune of the edge
    ``{a, b}`` of rank ``r``, which is ``nbr[a, pa]`` and ``nbr[b, pb]``), or ``N`` if none.

    The candidates are the neighbours of one endpoint through earlier edges (the first ``pa`` of
    ``a``'s list or ``pb`` of ``b``'s, whichever is shorter), each tested against the other
    endpoint. Why not a scan of both endpoints' rank rows from ``lo``: on 1,024-point isotropic
    clouds that visited some 210 vertices a call against 16 for the shorter list (5.6 million
    against 0.4 million a cloud, decision 88).
    """
    if pa > pb:
        a, b, pa = b, a, pb
    n = rank.shape[0]
    best = n
    for p in range(pa):
        k = nbr[a, p]
        if k >= lo and k < best and rank[b, k] < r:
            best = k
    return best


@kernel
def apparent_partner(r: int, u: np.ndarray, v: np.ndarray, rank: np.ndarray, nbr: np.ndarray, pu: np.ndarray, pv: np.ndarray) -> int:
    """Lowest vertex ``k`` with ``max(rank[u[r], k], rank[v[r], k]) < r``, or -1 if none.

    ``{u[r], v[r], k}`` is then the earliest coface of edge ``r`` and has ``r`` as its latest
    face: an apparent pair.
    """
    k = _lowest_in_lune(u[r], v[r], pu[r], pv[r], r, np.int64(0), rank, nbr)
    return k if k < rank.shape[0] else -1


# --- lazily enumerated coboundaries ------------------------------------------------------------
# A coface {a, b, k} of edge f = {a, b} (rank rf) has the key rank(max edge) * N + opposite vertex
# (the reference's triangle order). Phase 1: cofaces whose max edge is f itself (both other edges
# earlier), keys rf * N + k in increasing k. Phase 2: the others, whose max edge is {a, k} or
# {b, k}: a merge of a's and b's neighbour lists after b resp. a (ranks > rf) in rank order,
# emitting k from a's list when rank[b, k] < rank[a, k] (key rank[a, k] * N + b), and from b's
# list when rank[a, k] < rank[b, k] (key rank[b, k] * N + a).
#
# Flat arrays with a stride, not one array per field: every array passed to a compiled helper
# costs a reference count increment and decrement at each call (numba), and these helpers run
# some 100,000-300,000 times a cloud; measured here, those counts were a fifth of the reduction.
# `ends[_ENDS * r:]`: u, v, pu, pv, deg[u], deg[v] of the edge of rank r (read together, not from
# six arrays).
# `its[_ITER * it:]`: iterator state of a slot: edge, phase, pointer p (phase 1: the next k;
# phase 2: into a's list), pointer q (into b's list). `heap[2 * i:]`: key and slot of entry i.
_ENDS = 6
_ITER = 4


@helper
def _next_key(it: int, its: np.ndarray, ends: np.ndarray, rank: np.ndarray, nbr: np.ndarray) -> int:
    """Advance iterator ``it`` and return its next key, or -1 when its coboundary is exhausted."""
    n = rank.shape[0]
    s = _ITER * it
    rf = its[s]
    e = _ENDS * rf
    a = ends[e]
    b = ends[e + 1]
    if its[s + 1] == 1:
        k = _lowest_in_lune(a, b, ends[e + 2], ends[e + 3], rf, its[s + 2], rank, nbr)
        if k < n:
            its[s + 2] = k + 1
            return rf * n + k
        its[s + 1] = 2
        its[s + 2] = ends[e + 2] + 1
        its[s + 3] = ends[e + 3] + 1
    p = its[s + 2]
    q = its[s + 3]
    da = ends[e + 4]
    db = ends[e + 5]
    while p < da:
        k = nbr[a, p]
        if rank[b, k] < rank[a, k]:
            break
        p += 1
    while q < db:
        k = nbr[b, q]
        if rank[a, k] < rank[b, k]:
            break
        q += 1
    big = ends.shape[0] // _ENDS
    ra = rank[a, nbr[a, p]] if p < da else big
    rb = rank[b, nbr[b, q]] if q < db else big
    if ra == big and rb == big:
        its[s + 2] = p
        its[s + 3] = q
        return -1
    if ra < rb:
        its[s + 2] = p + 1
        its[s + 3] = q
        return ra * n + b
    its[s + 2] = p
    its[s + 3] = q + 1
    return rb * n + a


@helper
def _sift_down(heap: np.ndarray, size: int, i: int) -> None:
    key = heap[2 * i]
    item = heap[2 * i + 1]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and heap[2 * c + 2] < heap[2 * c]:
            c += 1
        if heap[2 * c] >= key:
            break
        heap[2 * i] = heap[2 * c]
        heap[2 * i + 1] = heap[2 * c + 1]
        i = c
    heap[2 * i] = key
    heap[2 * i + 1] = item


@helper
def _push(heap: np.ndarray, size: int, key: int, item: int) -> None:
    """Add ``(key, item)`` to the heap of ``size`` entries (the array holds one more)."""
    i = size
    while i > 0:
        parent = (i - 1) // 2
        if heap[2 * parent] <= key:
            break
        heap[2 * i] = heap[2 * parent]
        heap[2 * i + 1] = heap[2 * parent + 1]
        i = parent
    heap[2 * i] = key
    heap[2 * i + 1] = item


@helper
def _grow(a: np.ndarray, need: int) -> np.ndarray:
    """``a`` (int64) if it holds ``need`` entries, else a copy at least twice as long."""
    if need <= a.shape[0]:
        return a
    b = np.empty(max(need, 2 * a.shape[0]), np.int64)
    for i in range(a.shape[0]):  # a loop, not b[:len(a)] = a: that form adds seconds to a fresh compile
        b[i] = a[i]
    return b


@helper
def _hash_slot(table_keys: np.ndarray, key: int) -> int:
    """Slot of ``key`` in the open-addressing table, or of the empty slot where it would go."""
    mask = table_keys.shape[0] - 1
    h = (key * 0x5851F42D4C957F2D) >> 17  # multiplicative hashing (wraps in int64: fine for mixing)
    s = h & mask
    while table_keys[s] != -1 and table_keys[s] != key:
        s = (s + 1) & mask
    return s


@inlined
def _cancels(f: int, slot_of: np.ndarray, its: np.ndarray) -> bool:
    """Drop edge ``f``'s coboundary if the working column holds it (True), else nothing (False).

    A coboundary added again at the pivot it has reached cancels the one there entry by entry:
    the slot dropped (edge -1) leaves the heap, uncounted, when its key comes up.
    """
    slot = slot_of[f]
    if slot < 0:
        return False
    its[_ITER * slot] = -1
    slot_of[f] = -1
    return True


_STORED = 5
"""Fields of a stored coboundary: its next key, edge, phase, pointers p and q (iterator state)."""


@kernel
def reduce_columns(
    columns: np.ndarray, u: np.ndarray, v: np.ndarray, rank: np.ndarray, nbr: np.ndarray, deg: np.ndarray,
    pu: np.ndarray, pv: np.ndarray, partner: np.ndarray, deadline: int, clock_id: int, clock_mask: int = CLOCK_MASK,
    truncated: bool = False,
) -> tuple[np.ndarray, int]:
    """Reduce the coboundary columns of ``columns`` (edge ranks, decreasing) over Z2.

    ``partner[r]`` caches :func:`apparent_partner` (-2 = not computed yet; filled in lazily).
    A pivot (earliest triangle of the working column) belongs to an apparent pair when it is the
    apparent coface of its max edge; then that edge's coboundary is added, started after the
    pivot (everything before it cancels): in its phase 1, after the pivot's opposite vertex, as
    the pivot's max edge is that edge itself. Otherwise it belongs to an earlier reduced column
    if the pivot table has it, whose reduction is added; otherwise the column is paired with it.

    Each edge has at most one coboundary in the working column: adding an edge whose coboundary
    is there already (its enumeration has reached the same pivot) drops that one instead of
    starting a second copy (:func:`_cancels`). A reduced column is stored as the iterators of its
    edges' coboundaries as they stand just after its pivot, each with its next key; it is only
    ever added at that pivot, so adding it copies them, with no search for where to start.
    Edges whose coboundaries ended before the pivot are not stored (they add nothing after it).
    Why (measured on 1,024-point isotropic 64-d clouds, decision 88): about a third of the
    edges added were repeats, each a start and a pop per entry for both copies until the column
    ended; starting the others after the pivot was two binary searches in neighbour lists each,
    about 175,000 a cloud, most of the reduction's time.

    Returns ``(death_keys, status)``: per column its death triangle key ``rank(max edge) * N + k``
    (-1 if the column emptied: an essential class of the cut complex), and ``STATUS_DONE``, or
    ``STATUS_DEADLINE`` (keys then incomplete) once ``clock_gettime(clock_id)`` in nanoseconds
    passed ``deadline`` (see :func:`deadline_ns`); the clock is read at every column and every
    ``clock_mask + 1`` heap pops. With ``truncated`` (the columns of a truncated prefix) it stops
    at the first column that empties, with ``STATUS_OUTLIVED``: the prefix is then too short and
    its other keys are never used (the latest columns come first, and on the clouds measured the
    column that outlives a prefix is among the first few).
    """
    n = rank.shape[0]
    ncol = columns.shape[0]
    deaths = np.empty(ncol, np.int64)
    s_start = np.empty(ncol, np.int64)
    s_stop = np.empty(ncol, np.int64)
    for c in range(ncol):
        deaths[c] = -1
        s_start[c] = 0
        s_stop[c] = 0
    cap = 1
    while cap < 4 * ncol + 4:
        cap *= 2
    table_keys = np.empty(cap, np.int64)
    for s in range(cap):
        table_keys[s] = -1
    table_cols = np.empty(cap, np.int64)
    n_edges = u.shape[0]
    ends = np.empty(_ENDS * n_edges, np.int32)
    slot_of = np.empty(n_edges, np.int64)  # the live iterator of each edge in the working column, or -1
    for r in range(n_edges):
        e = _ENDS * r
        ends[e], ends[e + 1], ends[e + 2], ends[e + 3], ends[e + 4], ends[e + 5] = u[r], v[r], pu[r], pv[r], deg[u[r]], deg[v[r]]
        slot_of[r] = -1
    store = np.empty(_STORED * (4 * ncol + 16), np.int64)  # the stored columns' iterators, _STORED fields each
    s_used = 0
    its = np.empty(_ITER * 64, np.int64)
    heap = np.empty(2 * 64, np.int64)
    pops = 0
    for c in range(ncol):
        if _clock_ns(clock_id) > deadline:
            return deaths, STATUS_DEADLINE
        size = 0
        # the column's own coboundary
        # (a column's edge has an empty lune: no coface has it as its max edge, so its phase 1 is
        # empty and the enumeration starts with phase 2, sparing a pass over all vertices)
        f = columns[c]
        its[0], its[1], its[2], its[3] = f, 2, pu[f] + 1, pv[f] + 1
        n_it = np.int64(1)
        first = _next_key(np.int64(0), its, ends, rank, nbr)
        if first >= 0:
            heap[0] = first
            heap[1] = 0
            size = 1
            slot_of[f] = 0
        while size > 0:
            key = heap[0]
            count = 0
            while size > 0 and heap[0] == key:
                it = heap[1]
                live = its[_ITER * it] >= 0
                nk = _next_key(it, its, ends, rank, nbr) if live else -1
                if nk >= 0:
                    heap[0] = nk
                else:
                    if live:
                        slot_of[its[_ITER * it]] = -1
                    size -= 1
                    heap[0] = heap[2 * size]
                    heap[1] = heap[2 * size + 1]
                if size > 0:
                    _sift_down(heap, size, np.int64(0))
                count += np.int64(live)
            pops += count
            if (pops & clock_mask) < count and _clock_ns(clock_id) > deadline:
                return deaths, STATUS_DEADLINE
            if count % 2 == 0:
                continue  # cancelled over Z2
            top = key // n
            if partner[top] == -2:
                e = _ENDS * top
                k = _lowest_in_lune(ends[e], ends[e + 1], ends[e + 2], ends[e + 3], top, np.int64(0), rank, nbr)
                partner[top] = k if k < n else -1
            if partner[top] == key % n:
                n_new = 1
                src = -1
            else:
                s = _hash_slot(table_keys, key)
                if table_keys[s] == -1:
                    deaths[c] = key
                    table_keys[s] = key
                    table_cols[s] = c
                    break
                src = table_cols[s]
                n_new = s_stop[src] - s_start[src]
            if _ITER * (n_it + n_new) > its.shape[0]:
                its = _grow(its, _ITER * (n_it + n_new))
            if 2 * (size + n_new) > heap.shape[0]:
                heap = _grow(heap, 2 * (size + n_new))
            if src < 0:  # the apparent column: the max edge's coboundary, started after the pivot
                if _cancels(top, slot_of, its):
                    continue
                t = _ITER * n_it
                its[t], its[t + 1], its[t + 2], its[t + 3] = top, 1, key % n + 1, 0
                nk = _next_key(n_it, its, ends, rank, nbr)
                if nk >= 0:
                    _push(heap, size, nk, n_it)
                    size += 1
                    slot_of[top] = n_it
                    n_it += 1
                continue
            for t in range(_STORED * s_start[src], _STORED * s_stop[src], _STORED):
                f = store[t + 1]
                if _cancels(f, slot_of, its):
                    continue
                i = _ITER * n_it
                its[i], its[i + 1], its[i + 2], its[i + 3] = f, store[t + 2], store[t + 3], store[t + 4]
                _push(heap, size, store[t], n_it)
                size += 1
                slot_of[f] = n_it
                n_it += 1
        if deaths[c] < 0:
            if truncated:
                return deaths, STATUS_OUTLIVED
            continue
        # store the reduced column: its live iterators (all in the heap, past the pivot)
        store = _grow(store, _STORED * (s_used + size))
        s_start[c] = s_used
        for i in range(size):
            it = _ITER * heap[2 * i + 1]
            f = its[it]
            if f < 0:
                continue
            slot_of[f] = -1
            t = _STORED * s_used
            store[t], store[t + 1], store[t + 2], store[t + 3], store[t + 4] = heap[2 * i], f, its[it + 1], its[it + 2], its[it + 3]
            s_used += 1
        s_stop[c] = s_used
    return deaths, STATUS_DONE
