"""Worker processes for the persistence step: one cloud per task, a time budget per batch.

The parallel part of the "Ripser" step of paper Algorithm 1 (line 12), under decision 6c.

Parallelism. Measured here (N=600, 64-d, 4 clouds): a thread pool of 2 gives no speed-up over a
serial loop (0.42 s vs 0.43 s) because giotto-ph holds the GIL during the computation, while a
pool of 2 processes takes 0.27 s. Clouds therefore run in worker *processes*, one per core
(:func:`available_cores`), created lazily on first use and reused. Each worker computes the
cloud's float64 distances from its points (sending (M, C) points instead of an (M, M) matrix
keeps the transfer small), the H0 tree, then H1 (``fast.persistence.cloud``).

Time budget (decision 6c). A batch may be given a budget in seconds; a cloud whose H1 is not
done when it runs out contributes its H0 pairs only: its worker is killed and replaced, the
event is logged (logger ``fast.persistence``) and counted (:func:`budget_miss_count`). A
hand-written pool is needed for this because ``concurrent.futures.ProcessPoolExecutor`` cannot
stop one running task.
"""
from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Optional

import numpy as np

from fast.persistence.cloud import assemble, cloud_persistence, distances, h0_part, h1_part
from fast.persistence.contract import CloudPersistence, H1Engine

logger = logging.getLogger("fast.persistence")  # the package's name: one logger for the front door


def _worker_main(conn: Connection) -> None:
    """Worker process loop: per task send the H0 part first, then the H1 part (or None)."""
    while True:
        task = conn.recv()
        if task is None:
            return
        points, engine, deadline, with_h1 = task
        try:
            dist = distances(points)
            conn.send(("h0", h0_part(dist)))
            if not with_h1:
                continue
            conn.send(("h1", h1_part(dist, engine, deadline)))
        except Exception as exc:  # reported to the caller through the future, with the traceback text
            import traceback

            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


@dataclass
class _Task:
    points: np.ndarray
    engine: H1Engine
    deadline: Optional[float]  # time.monotonic() value (system-wide: the worker compares with it too)
    with_h1: bool
    label: str
    future: Future


class _Slot:
    """One worker process and the thread in this process that feeds it tasks from the queue."""

    def __init__(self, pool: "PersistencePool", index: int) -> None:
        self.pool = pool
        self.index = index
        self.process: Optional[multiprocessing.process.BaseProcess] = None
        self.conn: Optional[Connection] = None
        self.thread = threading.Thread(target=self._run, name=f"fast-engine-slot-{index}", daemon=True)
        self.thread.start()

    def _start_process(self) -> None:
        parent, child = self.pool.context.Pipe()
        process = self.pool.context.Process(
            target=_worker_main, args=(child,), name=f"fast-engine-worker-{self.index}", daemon=True
        )
        try:
            process.start()
        finally:
            child.close()
        self.process, self.conn = process, parent

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
        self.process.join()
        self.conn.close()
        self.process, self.conn = None, None

    def _run(self) -> None:
        while True:
            task = self.pool.tasks.get()
            if task is None:
                self._stop_process(kill=False)
                return
            if not task.future.set_running_or_notify_cancel():
                continue
            try:
                task.future.set_result(_counted(self._execute(task), task.label, len(task.points)))
            except BaseException as exc:  # never leave a future pending: the caller waits on it
                task.future.set_exception(exc)
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
        if self.process is None or not self.process.is_alive():
            self._start_process()
        self.conn.send((task.points, task.engine, task.deadline, task.with_h1))
        h0 = self._receive(None)
        if not task.with_h1:
            return assemble(h0, None, over_budget=False)
        # The worker checks the deadline itself; the grace period covers the transfer back.
        timeout = None if task.deadline is None else task.deadline - time.monotonic() + _GRACE_S
        h1 = self._receive(timeout)
        if h1 is _TIMED_OUT:
            self._stop_process(kill=True)  # still computing past the deadline: stop it
            return assemble(h0, None)
        # None: the worker saw the deadline pass, or the engine stopped itself
        return assemble(h0, h1)


_GRACE_S = 0.05
_TIMED_OUT = object()


class PersistencePool:
    """Worker processes computing :class:`CloudPersistence` for one cloud per task.

    Args:
        workers: number of worker processes; None = the cores available to this process;
            0 = compute in the calling thread (no processes; a budget is then only checked
            before H1 starts).
        start_method: multiprocessing start method; default ``forkserver`` where available
            (forking a process that holds CUDA or thread state is unsafe), else ``spawn``.
            As with any spawn-based pool, a script using it needs ``if __name__ == "__main__":``.
    """

    def __init__(self, workers: Optional[int] = None, start_method: Optional[str] = None) -> None:
        if workers is None:
            workers = available_cores()
        if workers < 0:
            raise ValueError(f"PersistencePool: workers must be >= 0 (0 = inline), got {workers}")
        if start_method is None:
            start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self.workers = workers
        self.context = multiprocessing.get_context(start_method)
        self.tasks: "queue.SimpleQueue[Optional[_Task]]" = queue.SimpleQueue()
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(
        self, points: np.ndarray, engine: H1Engine, deadline: Optional[float], with_h1: bool = True,
        label: str = "cloud",
    ) -> "Future[CloudPersistence]":
        """Queue one cloud; ``deadline`` is an absolute ``time.monotonic()`` value or None.

        ``label`` names the cloud in the log message of a missed budget.
        """
        future: "Future[CloudPersistence]" = Future()
        if self.workers == 0:
            try:
                result = cloud_persistence(points, engine, deadline, with_h1)
                future.set_result(_counted(result, label, len(points)))
            except Exception as exc:
                future.set_exception(exc)
            return future
        with self._lock:
            if self._closed:
                raise RuntimeError("PersistencePool.submit: the pool has been shut down; create a new one")
            while len(self._slots) < self.workers:
                self._slots.append(_Slot(self, len(self._slots)))
        self.tasks.put(_Task(points, engine, deadline, with_h1, label, future))
        return future

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
            for slot in slots:
                process = slot.process
                if process is not None:
                    process.kill()  # its slot thread sees the pipe close and fails that future
        for _ in slots:
            self.tasks.put(None)
        for slot in slots:
            slot.thread.join()


def available_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


_default_pool: Optional[PersistencePool] = None
_default_pool_lock = threading.Lock()


def default_pool() -> PersistencePool:
    """The process-wide pool (one worker per available core), created on first use."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None:
            _default_pool = PersistencePool()
            # At exit do not wait for a long H1 (decision 6c's pathological clouds).
            atexit.register(_default_pool.shutdown, cancel=True)
        return _default_pool


_budget_misses = 0
_budget_lock = threading.Lock()


def budget_miss_count() -> int:
    """How many clouds so far had their H1 dropped for missing the time budget (decision 6c)."""
    return _budget_misses


def _counted(result: CloudPersistence, label: str, size: int) -> CloudPersistence:
    """Count and log ``result`` if its H1 missed the budget (before its future resolves)."""
    global _budget_misses
    if result.h1_over_budget:
        with _budget_lock:
            _budget_misses += 1
            total = _budget_misses
        logger.warning(
            "H1 of %s with %d points missed its time budget; it contributes H0 only this step "
            "(decision 6c; %d such events so far)", label, size, total,
        )
    return result


