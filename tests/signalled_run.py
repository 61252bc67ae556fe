"""``python tests/signalled_run.py ARGS``: ``python -m train.run ARGS`` whose rank 0 has its launcher
signalled in the middle of a chosen step (the subprocess entry of ``tests/test_train_preemption.py``).

``SIGNAL_AT=N``: in step N, after its losses are computed and before its update, rank 0 sends
SIGTERM to its parent (the ``--procs`` launcher or torchrun, which pass it on to their processes)
and waits until the signal has reached it, so the run is known to be preempted in step N.
``SIGNAL_AGAIN=1``: a second SIGTERM is sent to the parent while the checkpoint is being written.
``SIGNAL_LATE=1``: every process, the ``--procs`` launcher too, sends itself a SIGTERM as it exits
(at ``atexit``, after its run has stopped and left its process group: a second signal its
launcher passed on late, or one a scheduler sent to every process of the job), then prints
``rank R outlived a late SIGTERM`` (``the launching process outlived ...``).
``SIGNAL_AT_EXIT=1``: every rank, as it exits (at ``atexit``), runs one more all-reduce of a
Python tensor on its run's gloo group (kept from before ``destroy_process_group``, which leaves it
running once DDP was built), so that a ``pt_gloo_runloop`` thread frees a tensor that has a Python
object in the rank's last moments, the order of events of a rank's abort at exit; and leaves a sentinel
that only a finalizing interpreter frees, which prints ``rank R finalized with threads [...]``
(the native threads then alive, by name): the state in which such a thread aborts the process.
The hooks wrap ``train.engine.loop.read_scalars``, ``train.runtime.checkpoint.atomic_write`` and
``train.runtime.distributed.cleanup`` in the ranks (they re-run this file as ``__mp_main__``, or
run it under torchrun); production code has no test hooks.
"""
from __future__ import annotations

import os
import signal
import sys
import time


def _late_signal() -> None:
    rank = os.environ.get("RANK")
    os.kill(os.getpid(), signal.SIGTERM)
    who = "the launching process" if rank is None else f"rank {rank}"
    print(f"signalled_run: {who} outlived a late SIGTERM", file=sys.stderr, flush=True)


def _native_threads(system=os) -> list[str]:  # type: ignore[no-untyped-def]
    """The names of this process's threads but the main one (Linux: ``/proc/self/task/*/comm``),
    read with ``os`` alone (a finalizing interpreter may have taken the builtins away)."""
    names = []
    for task in sorted(int(t) for t in system.listdir("/proc/self/task") if int(t) != system.getpid()):
        fd = system.open(f"/proc/self/task/{task}/comm", system.O_RDONLY)
        names.append(system.read(fd, 64).decode().strip())
        system.close(fd)
    return names


class _FreedWhenFinalizing:
    """A reference cycle made with the collector off: only a finalizing interpreter frees it."""

    def __init__(self, rank: str) -> None:
        self.rank, self.cycle = rank, self

    def __del__(self, write=os.write, threads=_native_threads) -> None:  # type: ignore[no-untyped-def]
        write(2, f"signalled_run: rank {self.rank} finalized with threads {threads()}\n".encode())


def _last_collective(group: list) -> None:  # type: ignore[type-arg]
    """In a rank: one more all-reduce of a Python tensor on the run's group, which rank 0 joins half a
    second late, while the other ranks keep the GIL (a switch interval of an hour: a thread asking for
    it is not given it until it is released), so that their ``pt_gloo_runloop`` thread frees the
    tensor and waits for the GIL as the interpreter finalizes; then the sentinel of finalization."""
    import gc

    import torch

    rank = os.environ.get("RANK")
    if rank is None:  # the --procs launcher
        return
    if group:
        tensor = torch.ones(1)
        seen = tensor.detach().numpy()  # the tensor's memory, not the tensor: the work holds its last reference
        if rank == "0":
            time.sleep(0.5)
        else:
            sys.setswitchinterval(3600.0)
        group[0].allreduce([tensor])
        del tensor
        deadline = time.monotonic() + 60
        while seen[0] == 1.0 and time.monotonic() < deadline:  # no call here gives the GIL away
            pass
        deadline = time.monotonic() + 0.05  # the run-loop thread frees the work meanwhile
        while time.monotonic() < deadline:
            pass
    gc.disable()
    _FreedWhenFinalizing(rank)


def _install(at: int, again: bool, late: bool, at_exit: bool) -> None:
    import atexit

    group: list = []  # type: ignore[type-arg]  # the run's process group, kept by cleanup
    if at_exit:  # before torch and train register theirs: it runs after them, the last
        atexit.register(_last_collective, group)

    import torch.distributed as dist

    import train.runtime.checkpoint
    import train.runtime.distributed
    import train.engine.loop
    from train.runtime.preemption import requested

    real_read, real_write = train.engine.loop.read_scalars, train.runtime.checkpoint.atomic_write
    count = 0

    def read_scalars(logs):  # type: ignore[no-untyped-def]
        nonlocal count
        count += 1
        if count == at and os.environ.get("RANK") == "0":
            os.kill(os.getppid(), signal.SIGTERM)
            deadline = time.monotonic() + 30
            while requested() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        return real_read(logs)

    def atomic_write(*args, **kwargs):  # type: ignore[no-untyped-def]
        if again and requested() is not None and os.environ.get("RANK") == "0":
            os.kill(os.getppid(), signal.SIGTERM)
        return real_write(*args, **kwargs)

    train.engine.loop.read_scalars = read_scalars
    train.runtime.checkpoint.atomic_write = atomic_write
    if late:
        atexit.register(_late_signal)
    if at_exit:
        real_cleanup = train.runtime.distributed.cleanup

        def cleanup() -> None:
            if dist.is_initialized():
                group.append(dist.distributed_c10d._get_default_group())
            real_cleanup()

        train.runtime.distributed.cleanup = cleanup


if __name__ in ("__main__", "__mp_main__") and os.environ.get("SIGNAL_AT"):
    _install(int(os.environ["SIGNAL_AT"]),
             *(os.environ.get(f"SIGNAL_{name}") == "1" for name in ("AGAIN", "LATE", "AT_EXIT")))

if __name__ == "__main__":
    from train.run import main

    sys.exit(main(sys.argv[1:]))
