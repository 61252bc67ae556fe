"""One cloud on several threads: disjoint row (or edge) ranges of a compiled kernel, run at once.

The row-parallel parts of one cloud's persistence (the "Ripser" step of paper Algorithm 1, line
12: the distances, the enclosing radius, the prefix certificate, the kept edges and the lune test;
decision 89) are compiled kernels that take a range ``[lo, hi)`` of rows, tile rows or edges and
write only that range's part of their outputs. They run without the GIL (``fast.jit``), so Python
threads run disjoint ranges of one cloud at once, and each output entry is computed by the same
arithmetic as on one thread: the results are equal bit for bit whatever the number of threads.

Why Python threads and not numba's ``prange``: ``prange`` needs numba's threading layer, which
starts its own pool of ``NUMBA_NUM_THREADS`` threads in every worker process (16 processes x 16
threads on the GPU host), is not fork-safe under the default workqueue layer, and compiles a
parallel version of every kernel into the shared cache (decision 41's fresh-cache cost); its
thread count is also global to the process, while here each call says how many ranges it runs.

:func:`split` cuts ``n`` rows into at most ``threads`` non-empty ranges of about equal work (rows of
a triangle cost ``n - i``); :func:`run` runs a kernel on each, the first on the calling thread and
the others on a thread pool kept for the process (none when there is one range).
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

Range = tuple[int, int]


def split(n: int, threads: int, triangular: bool = False) -> list[Range]:
    """At most ``threads`` non-empty ranges ``[lo, hi)`` covering ``0..n`` in order, of about equal
    work: equal counts, or with ``triangular`` equal sums of ``n - i`` (row ``i`` of an upper
    triangle). No range when ``n`` is 0."""
    if threads <= 1 or n <= 1:
        return [(0, n)] if n > 0 else []
    targets = np.arange(1, threads) / threads
    if triangular:
        done = np.cumsum(np.arange(n, 0, -1, dtype=np.float64))  # work up to and including each row
        cuts = np.searchsorted(done, targets * done[-1]) + 1
    else:
        cuts = np.round(targets * n).astype(np.int64)
    bounds = [0, *sorted({int(c) for c in cuts if 0 < c < n}), n]
    return list(zip(bounds[:-1], bounds[1:]))


@functools.lru_cache(maxsize=None)
def _helpers(count: int) -> ThreadPoolExecutor:
    """The process's pool of ``count`` helper threads (one per count asked for; a worker asks for one)."""
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="fast-persistence-range")


def run(kernel: Callable[..., Any], ranges: list[Range], *args: Any) -> list[Any]:
    """``kernel(*args, lo, hi)`` for every range, at once, the first on the calling thread; the
    results in range order."""
    if len(ranges) <= 1:
        return [kernel(*args, lo, hi) for lo, hi in ranges]
    helpers = _helpers(len(ranges) - 1)
    futures = [helpers.submit(kernel, *args, lo, hi) for lo, hi in ranges[1:]]
    first = kernel(*args, *ranges[0])
    return [first, *(future.result() for future in futures)]
