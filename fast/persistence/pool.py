"""Worker processes for the persistence step: one cloud per task, a time budget per cloud.

The parallel part of the TPS and "Ripser" steps of paper Algorithm 1 (lines 5 and 12), under
decisions 6c and 14.

Parallelism. Measured here (N=600, 64-d, 4 clouds): a thread pool of 2 gives no speed-up over a
serial loop (0.42 s vs 0.43 s) because giotto-ph holds the GIL during the computation, while a
pool of 2 processes takes 0.27 s. Clouds therefore run in worker *processes*, this process's
share of the cores (:func:`worker_share`), all started when the pool is created and reused
(``fast.persistence.worker``: how they start, and how their compiled kernels are compiled once
and then loaded, decision 41). A task is one
cloud, done entirely in one worker so nothing waits on the calling process: optionally TPS on
the cloud's points first (``fast.persistence.sampling``; the selected rows are sent back at once,
so that the other model's task for the same cloud can start), then the float64 distances of the
(selected) points (sending (M, C) points instead of an (M, M) matrix keeps the transfer small),
the H0 tree, then H1 (``fast.persistence.cloud``). Tasks run in the order they were submitted.

Time budget (decision 6c). A task may be given a budget in seconds for its own H1 computation,
counted from the moment that H1 starts (never its time in the queue, on TPS or on H0): a cloud
whose H1 is not done when it runs out contributes its H0 pairs only: its worker is killed and
replaced, the event is logged (logger ``fast.persistence``) with the cloud's label and counted
(:func:`budget_miss_count`). A hand-written pool is needed for this because
``concurrent.futures.ProcessPoolExecutor`` cannot stop one running task.
"""
from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Optional

import numpy as np

from fast.persistence.cloud import assemble, cloud_persistence
from fast.persistence.contract import CloudPersistence, H1Engine
from fast.persistence.cores import worker_share, worker_threads
from fast.persistence.sampling import tps_indices
from fast.persistence.worker import BOOT, WARM_UP_PARTS, compile_shares, warm_up

logger = logging.getLogger("fast.persistence")  # the package's name: one logger for the front door

_ALL_PARTS = tuple(range(len(WARM_UP_PARTS)))


@dataclass(frozen=True)
class TaskTime:
    """When a worker served a task: its slot and the ``time.perf_counter`` stamps (of the calling
    process) at which the task left the queue and its result was back. A worker's future carries it
    as ``future.task_time`` once done, so that ``benchmarks.cpu.topo_split`` can say how long each worker
    held each cloud and when the slowest finished."""

    worker: int
    started: float
    finished: float


@dataclass
class _Task:
    points: np.ndarray
    engine: H1Engine
    time_budget: Optional[float]  # seconds for this cloud's own H1, from its start
    with_h1: bool
    label: str
    future: Future
    sample: Optional[tuple[int, int]] = None  # (m, seed): select the points by TPS first
    selection: Optional[Future] = None  # receives the TPS rows when ``sample`` is given
    rows: Optional[Future] = None  # the cloud is points[rows.result()] (an earlier task's selection)

    def fail(self, exc: BaseException) -> None:
        for future in (self.selection, self.future):
            if future is not None and not future.done():
                future.set_exception(exc)


class _Slot:
    """One worker process and the thread in this process that starts it, then feeds it tasks from the queue."""

    def __init__(self, pool: "PersistencePool", index: int, first_parts: tuple[int, ...],
                 barrier: threading.Barrier) -> None:
        self.pool = pool
        self.index = index
        self.process: Optional[subprocess.Popen] = None
        self.conn: Optional[Connection] = None
        self.ready = threading.Event()
        self.start_error: Optional[BaseException] = None
        self.thread = threading.Thread(
            target=self._run, args=(first_parts, barrier), name=f"fast-engine-slot-{index}", daemon=True
        )
        self.thread.start()

    def _start_process(self) -> None:
        parent, child = multiprocessing.Pipe()
        try:
            fd = child.fileno()
            process = spawn([sys.executable, "-c", BOOT, str(fd), *sys.path], fd)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.process, self.conn = process, parent

    def _warm(self, parts: tuple[int, ...]) -> None:
        self.conn.send(("warm", parts))
        self._receive(None)

    def _start_worker(self, parts: tuple[int, ...]) -> None:
        """Start a worker process unless one is running, and have it warm ``parts``; a transient
        failure (``_TRANSIENT``) starts a new one, after a backoff, up to :data:`START_ATTEMPTS`
        attempts in all (decision 41). Raises ``_StartFailed`` after the last attempt, and a failure
        that is not transient at once."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                if self.process is None or self.process.poll() is not None:
                    self._stop_process(kill=True)  # a worker that died (no-op without one)
                    self._start_process()
                self._warm(parts)
                return
            except _TRANSIENT as exc:
                self._stop_process(kill=True)
                if attempt == START_ATTEMPTS or self.pool._closed:  # closed: shutdown(cancel=True) killed it
                    raise _StartFailed(self._start_failure(attempt, exc)) from exc
                logger.warning("persistence worker %d of %d failed to start (attempt %d of %d, %s); trying again",
                               self.index, self.pool.workers, attempt, START_ATTEMPTS, _describe(exc))
                time.sleep(_START_BACKOFF_S * 2 ** (attempt - 1))
            except BaseException:
                self._stop_process(kill=True)
                raise

    def _start_failure(self, attempts: int, exc: BaseException) -> str:
        return (
            f"persistence worker {self.index} of {self.pool.workers} failed to start after {attempts} attempts; "
            f"the last failure: {_describe(exc)}. Check that {sys.executable} can start here (free memory, "
            "the limit on processes, `ulimit -u`), or compute in the calling process instead "
            "(--topo-workers 0, or PersistencePool(workers=0))"
        )

    def _start(self, first_parts: tuple[int, ...], barrier: threading.Barrier) -> None:
        """Start the worker: compile its share of the kernels while the other slots compile
        theirs, then load them all (decision 41)."""
        try:
            self._start_worker(first_parts)
        except BaseException as exc:
            barrier.abort()  # the others compile every part themselves
            self.start_error = exc
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        try:
            self._start_worker(_ALL_PARTS)
        except BaseException as exc:
            self.start_error = exc

    def _stop_process(self, kill: bool) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.process.wait()
        self.conn.close()
        self.process, self.conn = None, None

    def _run(self, first_parts: tuple[int, ...], barrier: threading.Barrier) -> None:
        self._start(first_parts, barrier)
        self.ready.set()
        while True:
            task = self.pool.tasks.get()
            if task is None:
                self._stop_process(kill=False)
                return
            if not task.future.set_running_or_notify_cancel():
                if task.selection is not None:
                    task.selection.cancel()
                continue
            try:
                started = time.perf_counter()
                result = _counted(self._execute(task), task.label)
                task.future.task_time = TaskTime(self.index, started, time.perf_counter())  # type: ignore[attr-defined]
                task.future.set_result(result)
            except BaseException as exc:  # never leave a future pending: the caller waits on it
                task.fail(exc)
                self._stop_process(kill=True)  # the worker may be in any state: start afresh

    def _receive(self, timeout: Optional[float]) -> object:
        """The worker's next payload, or ``_TIMED_OUT`` if none came within ``timeout`` seconds."""
        if timeout is not None and not self.conn.poll(max(timeout, 0.0)):
            return _TIMED_OUT
        kind, payload = self.conn.recv()
        if kind == "error":
            raise RuntimeError(f"persistence worker failed: {payload}")
        return payload

    def _execute(self, task: _Task) -> CloudPersistence:
        # An earlier task (queued before this one, so already running or done) selects the rows.
        points = task.points if task.rows is None else task.points[task.rows.result()]
        if self.process is None or self.process.poll() is not None:
            self._start_worker(_ALL_PARTS)  # a replacement (or a retry after a failed start): the cache has every part
        self.conn.send(("task", (points, task.engine, task.time_budget, task.with_h1, task.sample, self.pool.threads)))
        if task.sample is not None:
            task.selection.set_result(self._receive(None))
        h0 = self._receive(None)
        if not task.with_h1:
            return assemble(h0, None, over_budget=False)
        # H1 starts now in the worker, which checks its own deadline; the slot's clock starts
        # later, and the grace period covers the transfer back.
        timeout = None if task.time_budget is None else task.time_budget + _GRACE_S
        h1 = self._receive(timeout)
        if h1 is _TIMED_OUT:
            self._stop_process(kill=True)  # still computing past the deadline: stop it
            return assemble(h0, None)
        # None: the worker saw the deadline pass, or the engine stopped itself
        return assemble(h0, h1)


_GRACE_S = 0.05
_TIMED_OUT = object()

START_ATTEMPTS = 4
"""Attempts to start one worker (a spawn and the loading of its kernels) before the start fails."""
_START_BACKOFF_S = 0.05  # before attempt k + 1: 0.05 * 2**(k - 1) s, 0.35 s in all

# A spawn that fails (OSError, from exec in the child too) or a worker that dies before it answers
# (EOFError; ConnectionResetError and BrokenPipeError are OSErrors). An error the worker reports
# itself (a RuntimeError from _receive) would repeat, and is not tried again.
_TRANSIENT = (OSError, EOFError)


class _StartFailed(RuntimeError):
    """A worker that could not start after :data:`START_ATTEMPTS` attempts; its message says which and why."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (EOFError, ConnectionError)):  # its socket closed: whether sending or receiving
        return "the worker process ended before it was ready"
    return f"{type(exc).__name__}: {exc}"


def spawn(command: list[str], fd: int) -> subprocess.Popen:
    """Start ``command`` as a child process that inherits the file descriptor ``fd`` (decision 41).

    The child gets a copy of ``os.environ`` made here, not the process's live environment: CPython
    starts children with ``vfork`` and (3.11.7 here, and 3.12 on) lets the other threads run until the
    child has called ``exec``, and a plain ``Popen`` has that ``exec`` read the C ``environ`` array,
    which a thread adding a variable meanwhile frees (``setenv`` reallocates it; torch and pytest
    add variables). The exec then fails with EFAULT ("Bad address"). With an explicit environment
    the child reads only memory this thread owns until ``exec`` returns.
    """
    return subprocess.Popen(command, pass_fds=(fd,), stdin=subprocess.DEVNULL, env=_environment())


def _environment() -> dict[str, str]:
    # Keys first (os.environ lists them atomically), then the values: a variable another thread
    # removes in between is left out instead of raising KeyError.
    values = ((key, os.environ.get(key)) for key in list(os.environ))
    return {key: value for key, value in values if value is not None}


class PersistencePool:
    """Worker processes computing :class:`CloudPersistence` for one cloud per task.

    Args:
        workers: number of worker processes; None = this process's share of the cores
            (:func:`worker_share`); 0 = compute in the calling thread (no processes; an engine
            that cannot stop itself, giotto-ph, then runs past its budget).
        threads: threads each worker (or the calling thread, inline) gives the row-parallel parts
            of one cloud (decision 89); None = the share of the cores divided among the workers
            (:func:`worker_threads`: 1 where there are as many workers as cores, and inline).

    All workers start together when the pool is created (:meth:`warm` waits until they are
    ready); each is a fresh interpreter running ``fast.persistence.worker``, which does not
    import the calling script, so scripts need no ``if __name__ == "__main__":`` guard.
    """

    def __init__(self, workers: Optional[int] = None, threads: Optional[int] = None) -> None:
        check_worker_count(workers)
        check_thread_count(threads)
        if workers is None:
            workers = worker_share()
        self.workers = workers
        self.threads = worker_threads(workers) if threads is None else threads
        self.tasks: "queue.SimpleQueue[Optional[_Task]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._slots: list[_Slot] = []
        if workers > 0:
            barrier = threading.Barrier(workers)
            self._slots = [_Slot(self, i, share, barrier) for i, share in enumerate(compile_shares(workers))]

    def warm(self) -> None:
        """Block until every worker has started and loaded its compiled kernels (decision 41).

        Training and the benchmarks call it before their first timed step, so that no step pays
        for a worker's start. A start that fails for a transient reason (the spawn raised an
        OSError, or the worker died while loading) is tried again, up to :data:`START_ATTEMPTS`
        attempts with a short backoff. Raises RuntimeError if a worker still could not start,
        naming the worker, the attempts and the last error (the pool then tries again with each
        task that reaches that worker). A pool without workers runs its tasks in the calling
        process, so there it loads every part's compiled kernels (``warm_up``) instead.
        """
        if not self._slots:
            warm_up(range(len(WARM_UP_PARTS)))
        for slot in self._slots:
            slot.ready.wait()
        failed = [slot for slot in self._slots if slot.start_error is not None]
        if failed:
            slot = failed[0]
            error = slot.start_error
            if isinstance(error, _StartFailed):
                raise RuntimeError(str(error)) from error.__cause__
            raise RuntimeError(f"persistence worker {slot.index} of {self.workers} failed to start: {error}") from error

    def submit(
        self, points: np.ndarray, engine: H1Engine, time_budget: Optional[float], with_h1: bool = True,
        label: str = "cloud", rows: Optional["Future[np.ndarray]"] = None,
    ) -> "Future[CloudPersistence]":
        """Queue one cloud (its (M, C) float64 ``points``); ``time_budget``: seconds for its own H1, or None.

        ``label`` names the cloud in the log message of a missed budget. With ``rows`` (the
        selection future of a cloud submitted earlier to this pool by :meth:`submit_sampled`) the
        cloud is ``points[rows.result()]``, taken when its task starts.
        """
        task = _Task(points, engine, time_budget, with_h1, label, Future(), rows=rows)
        self._put(task)
        return task.future

    def submit_sampled(
        self, points: np.ndarray, m: int, seed: int, engine: H1Engine, time_budget: Optional[float],
        with_h1: bool = True, label: str = "cloud",
    ) -> tuple["Future[np.ndarray]", "Future[CloudPersistence]"]:
        """Queue one whole cloud whose worker first selects ``min(m, N)`` points by TPS (seed
        ``seed``, decision 14), then computes their diagrams. Returns the future of the selected
        rows (resolved as soon as TPS is done) and that of the diagrams."""
        task = _Task(points, engine, time_budget, with_h1, label, Future(), sample=(m, seed), selection=Future())
        self._put(task)
        return task.selection, task.future

    def _put(self, task: _Task) -> None:
        if self.workers > 0 and getattr(task.engine, "__module__", None) == "__main__":
            raise ValueError(
                f"engine {task.engine.__name__} is defined in the script being run, which the worker processes do "
                "not import; define it in an importable module (or use PersistencePool(workers=0))"
            )
        if self.workers == 0:
            try:
                points = task.points if task.rows is None else task.points[task.rows.result()]
                if task.sample is not None:
                    task.selection.set_result(tps_indices(points, *task.sample))
                    points = points[task.selection.result()]
                result = cloud_persistence(points, task.engine, task.time_budget, task.with_h1, self.threads)
                task.future.set_result(_counted(result, task.label))
            except Exception as exc:
                task.fail(exc)
            return
        with self._lock:
            if self._closed:
                raise RuntimeError("PersistencePool.submit: the pool has been shut down; create a new one")
        self.tasks.put(task)

    def shutdown(self, cancel: bool = False) -> None:
        """Stop the workers once the queued tasks are done; with ``cancel``, cancel the queued
        tasks and kill the running ones instead (their futures raise)."""
        with self._lock:
            self._closed = True
            slots, self._slots = self._slots, []
        if cancel:
            while True:
                try:
                    task = self.tasks.get_nowait()
                except queue.Empty:
                    break
                if task is not None:
                    task.future.cancel()
                    if task.selection is not None:
                        task.selection.cancel()
            for slot in slots:
                process = slot.process
                if process is not None:
                    process.kill()  # its slot thread sees the pipe close and fails that future
        for _ in slots:
            self.tasks.put(None)
        for slot in slots:
            slot.thread.join()


_default_pool: Optional[PersistencePool] = None
_default_workers: Optional[int] = None
_default_pool_lock = threading.Lock()


def default_pool() -> PersistencePool:
    """The process-wide pool, created on first use with :func:`set_default_workers`' count
    (by default this process's share of the cores, :func:`worker_share`)."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None:
            _default_pool = PersistencePool(_default_workers)
            # At exit do not wait for a long H1 (decision 6c's pathological clouds).
            atexit.register(_default_pool.shutdown, cancel=True)
        return _default_pool


def check_worker_count(workers: Optional[int]) -> None:
    """Raise ValueError unless ``workers`` is None (this process's share) or an integer >= 0
    (0 = inline); the one check, for the library and for ``--topo-workers`` alike."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(
            f"workers (--topo-workers in training) must be None (this process's share of the cores) or an "
            f"integer >= 0 (0 = in the calling process), got {workers!r}"
        )


def check_thread_count(threads: Optional[int]) -> None:
    """Raise ValueError unless ``threads`` is None (the share of the cores divided among the
    workers) or an integer >= 1."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be None (the process's share of the cores divided among its persistence "
                         f"workers) or an integer >= 1, got {threads!r}")


def set_default_workers(workers: Optional[int]) -> None:
    """Size of the process-wide pool (None: :func:`worker_share`; 0: inline), e.g. from
    ``--topo-workers``. A pool already started with another size is shut down once its queued
    clouds are done, and the next :func:`default_pool` call starts the new one."""
    global _default_pool, _default_workers
    check_worker_count(workers)
    with _default_pool_lock:
        _default_workers = workers
        old = _default_pool
        wanted = worker_share() if _default_workers is None else _default_workers
        if old is not None and old.workers != wanted:
            _default_pool = None
        else:
            old = None
    if old is not None:
        old.shutdown()


_budget_misses = 0
_budget_lock = threading.Lock()


def budget_miss_count() -> int:
    """How many clouds so far had their H1 dropped for missing the time budget (decision 6c)."""
    return _budget_misses


def _counted(result: CloudPersistence, label: str) -> CloudPersistence:
    """Count and log ``result`` if its H1 missed the budget (before its future resolves)."""
    global _budget_misses
    if result.h1_over_budget:
        with _budget_lock:
            _budget_misses += 1
            total = _budget_misses
        logger.warning(
            "H1 of %s missed its time budget; it contributes H0 only this step "
            "(decision 6c; %d such events so far)", label, total,
        )
    return result


