"""``python tests/killable_run.py ARGS``: ``python -m train.run ARGS`` that can SIGKILL itself at a
chosen point of a checkpoint write (the subprocess entry of ``tests/test_train_faults.py``).

The environment variable ``KILL_AT`` picks the point; the process then dies by SIGKILL, so no
``finally`` block, ``atexit`` handler or temp-file cleanup runs, as with ``kill -9``:

- ``write:N``: during the N-th write of ``checkpoint_last.pt``, with half of its bytes in the
  temporary file (cut back to half just before they would be fsynced);
- ``rotate:N``: at the N-th save that replaces an existing ``checkpoint_last.pt``, after that file
  was renamed to ``checkpoint_prev.pt`` and before the new one took its name.

The hooks are installed here, by wrapping ``os.fsync``, ``os.replace`` and ``os.open`` in
this process and, with ``--procs 2``, in the ranks it spawns (they re-run this file as
``__mp_main__``; rank 0 writes the checkpoints, so it is the one that dies, and the launching
process then stops the other rank); production code has no test hooks.
"""
from __future__ import annotations

import os
import signal
import sys

LAST = "checkpoint_last.pt"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(spec: str) -> None:
    when, n = spec.split(":")
    target = int(n)
    count = 0
    if when == "write":
        temp_fds: set[int] = set()
        real_open, real_fsync = os.open, os.fsync

        def open_(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
            fd = real_open(path, flags, *args, **kwargs)
            if flags & os.O_CREAT and os.path.basename(os.fspath(path)).startswith(LAST + "."):
                temp_fds.add(fd)  # atomic_write's temporary file
            return fd

        def fsync(fd: int) -> None:
            nonlocal count
            if fd in temp_fds:
                temp_fds.discard(fd)
                count += 1
                if count == target:
                    os.ftruncate(fd, os.fstat(fd).st_size // 2)
                    _die()
            real_fsync(fd)

        os.open = open_
        os.fsync = fsync
    elif when == "rotate":
        real_replace = os.replace

        def replace(src, dst, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal count
            real_replace(src, dst, **kwargs)
            if os.path.basename(src) == LAST:
                count += 1
                if count == target:
                    _die()

        os.replace = replace
    else:
        raise SystemExit(f"KILL_AT must be write:N or rotate:N, got {spec!r}")


if __name__ in ("__main__", "__mp_main__") and os.environ.get("KILL_AT"):
    _install(os.environ["KILL_AT"])

if __name__ == "__main__":
    from train.run import main

    sys.exit(main(sys.argv[1:]))
