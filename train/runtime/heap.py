"""glibc's malloc made to keep the memory a process frees for its next allocations (decision 95).

By default glibc serves every block above a threshold (128 kB, raised by the frees up to 32 MB)
with fresh ``mmap`` pages, unmaps it when freed and hands the top of its heap back above a trim
threshold, so a process that allocates and frees the same large tensors every step (the
condensation's forward and backward passes) touches fresh zeroed pages every time: measured,
~186,000 page faults for one inner step of 256 clouds at 64 points. :func:`hold_freed_memory`
serves every block from the heap (``M_MMAP_MAX`` 0) and keeps up to :data:`TRIM_THRESHOLD` bytes of
freed memory at its top, for this process (``mallopt``); the ranks it spawns later
(``train.runtime.distributed.spawn_local``, ``--procs``) call it first thing when this process
did (:func:`held`). No ``MALLOC_*`` variable is set: every other child would inherit it (the
persistence workers, which keep a bounded version of the same,
``fast.persistence.worker.keep_freed_memory``, decision 41; decision 90). The price: the process
holds its peak.
"""
from __future__ import annotations

import ctypes
import platform

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt's parameters (malloc.h)
TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes (a C int): 2 GiB of freed memory kept
_held = False  # whether hold_freed_memory applied in this process


def hold_freed_memory() -> bool:
    """Serve every allocation from the heap and keep what is freed (module docstring), in this
    process and the ranks it spawns from now on; whether it applied (False where the C library is
    not glibc)."""
    global _held
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    _held = bool(mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _held


def held() -> bool:
    """Whether :func:`hold_freed_memory` applied in this process."""
    return _held
