"""``python tests/signalled_run.py ARGS``: ``python -m train.run ARGS`` whose rank 0 has its launcher
signalled in the middle of a chosen step (the subprocess entry of ``tests/test_train_preemption.py``).

``SIGNAL_AT=N``: in step N, after its losses are computed and before its update, rank 0 sends
SIGTERM to its parent (the ``--procs`` launcher or torchrun, which pass it on to their processes)
and waits until the signal has reached it, so the run is known to be preempted in step N.
``SIGNAL_AGAIN=1``: a second SIGTERM is sent to the parent while the checkpoint is being written.
``SIGNAL_LATE=1``: every rank sends itself a SIGTERM as it exits (at ``atexit``, after its run has
stopped and left its process group: a second signal its launcher passed on late, or one a
scheduler sent to every process of the job), then prints ``rank R outlived a late SIGTERM``.
The hooks wrap ``train.engine.loop.read_scalars`` and ``train.runtime.checkpoint.atomic_write`` in the ranks (they
re-run this file as ``__mp_main__``, or run it under torchrun); production code has no test hooks.
"""
from __future__ import annotations

import os
import signal
import sys
import time


def _late_signal() -> None:
    rank = os.environ.get("RANK")
    if rank is not None:  # a rank, not the --procs launcher
        os.kill(os.getpid(), signal.SIGTERM)
        print(f"signalled_run: rank {rank} outlived a late SIGTERM", file=sys.stderr, flush=True)


def _install(at: int, again: bool, late: bool) -> None:
    import atexit

    import train.runtime.checkpoint
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


if __name__ in ("__main__", "__mp_main__") and os.environ.get("SIGNAL_AT"):
    _install(int(os.environ["SIGNAL_AT"]), os.environ.get("SIGNAL_AGAIN") == "1", os.environ.get("SIGNAL_LATE") == "1")

if __name__ == "__main__":
    from train.run import main

    sys.exit(main(sys.argv[1:]))
