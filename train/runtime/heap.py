"""glibc's malloc made to keep the memory a process frees for its next allocations (decision 95).

By default glibc serves every block above a threshold (128 kB, raised by the frees up to 32 MB)
with fresh ``mmap`` pages, unmaps it when freed and hands the top of its heap back above a trim
threshold, so a process that allocates and frees the same large tensors every step (the
condensation's forward and backward passes) touches fresh zeroed pages every time: measured,
~186,000 page faults for one inner step of 256 clouds at 64 points. :func:`hold_freed_memory`
serves every block from the heap (``M_MMAP_MAX`` 0) and keeps up to :data:`TRIM_THRESHOLD` bytes of
freed memory at its top, for this process (``mallopt``) and for the processes it starts later (the
``MALLOC_*`` variables, which glibc reads when a process starts: the ranks ``--procs`` spawns). The
price: the process holds its peak. The persistence workers keep a bounded version of the same
(``fast.persistence.worker.keep_freed_memory``, decision 41).
"""
from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt's parameters (malloc.h)
TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes (a C int): 2 GiB of freed memory kept
ENVIRONMENT = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}


def hold_freed_memory() -> bool:
    """Serve every allocation from the heap and keep what is freed (module docstring), here and in
    the processes started from now on; whether it applied (False where the C library is not glibc)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    if not (mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return False
    os.environ.update(ENVIRONMENT)
    return True
