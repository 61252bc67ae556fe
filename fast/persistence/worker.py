"""The persistence worker process: its task loop and the warm-up of its compiled kernels.

The worker side of ``fast.persistence.pool`` (decisions 6c and 40): one process computes, per
task, the TPS rows of a cloud (paper Algorithm 5, optional), then its H0 part and its H1 part
(Algorithm 1, lines 5 and 12). It is a plain interpreter started by the pool
(:data:`BOOT`): it imports this package and numpy/numba only, never the script that started the
pool (so a script without an ``if __name__ == "__main__":`` guard works, and a training
process's torch and models are not imported again in every worker), and talks to the pool over
a socket.

Warm-up (decision 41). Compiling the kernels takes most of a fresh worker's start, and numba's
on-disk cache lets every later process load them instead. The kernels fall into
:data:`WARM_UP_PARTS`, five parts that share no kernel; a pool that starts K workers has each
worker compile (or load) its share of them first (:func:`compile_shares`), so that each part is
compiled once, by one worker, while the others compile theirs, and then every worker loads all
parts from the cache. Across pools (one per DDP rank), a lock file per part makes a worker pass
over a part that another process is compiling and load it afterwards (:func:`warm_up`). A part
is warmed by running its kernels on a tiny input of the argument types a real task uses
(``tests/test_persistence_start.py`` checks that a real task compiles nothing new).

Start of a worker (decision 41): glibc's malloc keeps the memory a task frees for the next
(:func:`keep_freed_memory`), and numba's array implementations are loaded without its probe for
SciPy's BLAS (:func:`_load_numba_arrays_without_blas`), before the first message.

Messages from the pool: ``("warm", parts)``,
``("task", (points, engine, time_budget, with_h1, sample, threads))`` (``threads``: those of the
cloud's row-parallel parts, decision 89), or None (stop). Replies:
``("warm", None)``; per task ``("rows", rows)`` (when sampling), ``("h0", part)``, ``("h1", part
or None)``; or ``("error", text)``.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Callable, Iterator, Sequence

import numpy as np

from fast.numba_cache import PERSISTENCE_DIR, cache_directory
from fast.persistence.cloud import distances, h0_part, h1_part, stage_parts, uses_stage
from fast.persistence.contract import H1Engine
from fast.persistence.edge_stage import EdgeStage, edges_apparent_between, enclosing_radius, stage_within, truncation_limits
from fast.persistence.native import reduce_stage
from fast.persistence.sampling import tps_indices

BOOT = "import sys; sys.path[:] = sys.argv[2:]; from fast.persistence.worker import main; main()"
"""``python -c BOOT FD PATH...``: a worker on the socket ``FD`` with the pool process's ``sys.path``
(the same ``fast`` package, and any module an engine function comes from)."""

# A sheared 4 x 4 grid: small, and its truncated edge stage is certified (every branch of a real cloud's).
# The parts that take a distance matrix get one computed here by numpy, so that only the part
# that owns ``distances`` compiles it.
_TINY = np.array([[i, j + 0.1 * i] for i in range(4) for j in range(4)], dtype=np.float64)
_TINY_DIST = np.sqrt(((_TINY[:, None] - _TINY[None]) ** 2).sum(axis=2))


def _warm_sampling() -> None:
    tps_indices(_TINY, 3, 0)


def _warm_certificate() -> None:
    radius, centre, _ = enclosing_radius(_TINY_DIST)
    edges_apparent_between(_TINY_DIST, truncation_limits(_TINY_DIST)[0][1], radius, centre)


def _warm_edge_order() -> None:
    stage_within(_TINY_DIST, np.inf)


def _warm_distances() -> None:
    distances(_TINY)


def _warm_reduction() -> None:
    # An edge stage with no edges, in the dtypes of ``EdgeStage``, so that this part compiles
    # the reduction alone (the edge stage's kernels are other parts').
    e32, e64 = np.empty(0, np.int32), np.empty(0, np.int64)
    square = np.zeros((1, 1), np.int32)
    reduce_stage(np.zeros((1, 1)), EdgeStage(e32, e32, square, square, np.zeros(1, np.int32), e32, e32, e64, e64, e64))


WARM_UP_PARTS: tuple[Callable[[], None], ...] = (
    _warm_sampling, _warm_certificate, _warm_edge_order, _warm_distances, _warm_reduction)
"""Parts of the compiled code that share no kernel, each warmed by one call."""

COMPILE_COSTS = (2.7, 2.1, 2.9, 0.9, 4.2)
"""Relative compile time of each part, measured here (decision 41): only their ratios matter."""


def compile_shares(workers: int) -> list[tuple[int, ...]]:
    """The parts each of ``workers`` workers compiles first: the costliest part to the least
    loaded worker, in turn, so that the longest share (the wait before all are compiled) is short."""
    shares: list[list[int]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for part in sorted(range(len(WARM_UP_PARTS)), key=lambda p: -COMPILE_COSTS[p]):
        lightest = loads.index(min(loads))
        shares[lightest].append(part)
        loads[lightest] += COMPILE_COSTS[part]
    return [tuple(share) for share in shares]


def warm_up(parts: Sequence[int]) -> None:
    """Compile (or load from numba's cache) the kernels of the given :data:`WARM_UP_PARTS`.

    Each part is warmed under a lock shared by every process on the machine (:func:`_part_lock`):
    a part another process is compiling is passed over for the next free one, and only loaded from
    the cache once its lock is released. Several training processes, each with its own pool (DDP
    ranks), so compile each part once between them instead of once each.
    """
    pending = list(parts)
    while pending:
        for part in list(pending):
            with _part_lock(part, wait=False) as held:
                if held:
                    WARM_UP_PARTS[part]()
                    pending.remove(part)
        if pending:  # every part left is being compiled elsewhere: wait for the first, then load it
            with _part_lock(pending[0], wait=True):
                WARM_UP_PARTS[pending.pop(0)]()


@contextlib.contextmanager
def _part_lock(part: int, wait: bool) -> Iterator[bool]:
    """An exclusive ``flock`` on the lock file of ``part``, kept beside the compiled kernels it guards
    (:func:`cache_directory`: one per version of the kernels, shared by every copy of the package);
    yields whether it is held. Without ``fcntl`` (not POSIX) or a cache (every process compiles
    what it needs) it yields True."""
    try:
        import fcntl
    except ImportError:
        yield True
        return
    directory = cache_directory(PERSISTENCE_DIR)
    if directory is None:
        yield True
        return
    path = os.path.join(directory, f"topodistill-warm-part{part}.lock")
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_task(conn: Connection, task: tuple, warm: list[H1Engine]) -> None:
    points, engine, time_budget, with_h1, sample, threads = task
    if with_h1 and engine not in warm:
        # A new engine runs once on a 4-point cloud, outside any budget: loading its code (say
        # giotto-ph's library; the native kernels are loaded by the warm-up) is no cloud's H1.
        engine(distances(np.eye(4)), None)
        warm.append(engine)
    if sample is not None:
        rows = tps_indices(points, *sample)
        conn.send(("rows", rows))
        points = points[rows]
    dist = distances(points, threads)
    if uses_stage(engine, with_h1, len(points)):
        h0, h1 = stage_parts(dist, time_budget, threads)
        conn.send(("h0", h0))
        conn.send(("h1", h1()))
        return
    conn.send(("h0", h0_part(dist)))
    if with_h1:
        conn.send(("h1", h1_part(dist, engine, time_budget)))


def serve(conn: Connection) -> None:
    """The worker's loop: answer the pool's messages until it sends None or goes away."""
    warm: list[H1Engine] = []
    while True:
        try:
            message = conn.recv()
        except (EOFError, ConnectionResetError):  # the pool's process ended without stopping us
            return
        if message is None:
            return
        kind, payload = message
        try:
            if kind == "warm":
                warm_up(payload)
                conn.send(("warm", None))
            else:
                _run_task(conn, payload, warm)
        except (BrokenPipeError, ConnectionResetError):  # the pool's process went away during the task
            return
        except Exception as exc:  # reported to the caller through the future, with the traceback text
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def _load_numba_arrays_without_blas() -> None:
    """Import numba's array implementations without its probe for SciPy's BLAS (decision 41).

    numba imports them when it first loads a compiled kernel, and on that import it checks once
    whether ``scipy.linalg.cython_blas`` can be imported, which imports all of ``scipy.linalg``:
    0.25-0.45 s of a worker's start here, about a third of it. The answer only picks how numba
    compiles ``np.correlate`` and ``np.convolve`` (BLAS or a plain loop); no kernel of this package
    uses BLAS. So a worker answers "no" by hiding that module during the import and shows it again
    afterwards: numba's linear algebra (``np.dot``, ``np.linalg``) imports it when first compiled,
    as usual, in a user's engine too.
    """
    probed = "scipy.linalg.cython_blas"
    if probed in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    sys.modules[probed] = None  # an import of a module mapped to None raises ImportError at once
    try:
        import numba.np.arraymath  # noqa: F401  (loaded here instead of at the first kernel)
    finally:
        del sys.modules[probed]


_PR_SET_PDEATHSIG = 1  # prctl's option (linux/prctl.h): a signal for this process when its parent dies

# glibc's mallopt parameters (malloc.h) and the values a worker sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 2**20  # glibc's largest on 64-bit systems
_TRIM_THRESHOLD = 64 * 2**20


def keep_freed_memory() -> None:
    """Make glibc's malloc reuse the memory a task frees instead of handing it back (decision 41).

    A task allocates a few large arrays per cloud (the 8 MB distance matrix at M = 1024, the edge
    stage's arrays). By default glibc serves blocks of more than 128 kB to 32 MB with fresh
    ``mmap`` pages and unmaps them when freed, so every task touched its memory anew: measured
    here at B = 12 x M = 1024 (clusters), 50,000-70,000 page faults per worker per step, 0.17-0.25
    s of system time each, about 15% of a worker's time. With blocks up to 32 MB taken from the
    heap and up to 64 MB of free memory kept at its top, a worker faults a handful of times per
    step (measured: 0-4). No effect where the C library is not glibc (no ``mallopt``).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


def main() -> None:
    """Entry point of a worker process (:data:`BOOT`): ``sys.argv[1]`` is the file descriptor of its socket.

    The pool's process handles Ctrl-C (and stops its workers); a worker ignores it, so that one
    key press does not print a traceback per worker. It ignores the signals a scheduler sends every
    process of a job before preempting it too: the training process records them and finishes its
    step, which needs the workers (it stops them by closing their pipes, or by SIGKILL). So that a
    worker never outlives that process (killed: a failed rank its launcher stops, or one killed
    with its launcher), the kernel kills it when its parent dies (Linux, ``PR_SET_PDEATHSIG``): a
    worker in the middle of a cloud had computed on, for as long as the cloud took (decision 56).
    One whose parent died before that request reads the end of its pipe at once and returns.
    """
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    keep_freed_memory()
    _load_numba_arrays_without_blas()
    conn = Connection(int(sys.argv[1]))
    serve(conn)
