"""How many cores the persistence step may use: this process's cores, its share of them, and each worker's threads.

For the parallel part of the TPS and "Ripser" steps of paper Algorithm 1 (lines 5 and 12): used
by the worker pool (``fast.persistence.pool``, decision 6c) and by the thread pools of the native
engine's batch form and of the device batch path. A module of its own, importing nothing of the
package, so that every other module can ask without an import cycle.
"""
from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


def worker_share() -> int:
    """This process's share of the cores for its persistence workers, at least 1.

    Under a launcher that starts several processes per machine (``torchrun``, or
    ``train.runtime.distributed.spawn_local``, both set ``LOCAL_WORLD_SIZE``), the cores this process may
    run on divided among them, unless its affinity mask is already narrower than the machine
    (a launcher that pins each rank to its own cores): the mask is then this process's share.
    """
    cores = available_cores()
    local = os.environ.get("LOCAL_WORLD_SIZE", "1")
    processes = int(local) if local.isdigit() and int(local) > 0 else 1
    if cores < (os.cpu_count() or cores):
        return cores
    return max(cores // processes, 1)


def worker_threads(workers: int) -> int:
    """Threads for one cloud in each of ``workers`` persistence workers that run at once (decision
    89): this process's share of the cores (:func:`worker_share`) divided among them, at least 1;
    1 for ``workers == 0`` (the cloud is computed in the calling process, whose own threads run
    the training step meanwhile)."""
    return max(worker_share() // workers, 1) if workers > 0 else 1
