"""Memory asked for before it is allocated (decision 99): a request that cannot fit is refused in one
line naming what asked, the bytes it needs and the memory this machine has, before any work, instead
of numpy's or torch's allocation error after it (:func:`check_fits`); an allocation that fails anyway
ends in one line too (:func:`memory_refused`).

The machine's available memory is Linux's ``MemAvailable`` (``/proc/meminfo``: free memory plus what
the kernel can reclaim), else the free pages ``os.sysconf`` reports; read by hand because no
dependency of the package (psutil is a test extra) reports it.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MEMINFO = Path("/proc/meminfo")


def available_bytes() -> int | None:
    """The memory a new allocation can take now (None: the system does not say)."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gigabytes(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB"


def check_fits(needed: int, what: str, fix: str) -> None:
    """MemoryError in one line when ``needed`` bytes (for ``what``) exceed the available memory;
    ``fix`` says what to ask for instead."""
    have = available_bytes()
    if have is not None and needed > have:
        raise MemoryError(f"{what} needs {_gigabytes(needed)} of memory and this machine has {_gigabytes(have)} "
                          f"available: {fix}")


def _allocation_failure(err: BaseException) -> bool:
    """Whether ``err`` is an allocator's failure: numpy's MemoryError, torch's CPU allocator's
    RuntimeError (``DefaultCPUAllocator: can't allocate memory``) or CUDA's out-of-memory error."""
    import torch  # here: the module is imported where torch is not (train.runtime.files' users)

    return (isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError))
            or (isinstance(err, RuntimeError) and "can't allocate memory" in str(err)))


@contextmanager
def memory_refused(what: str, fix: str) -> Iterator[None]:
    """Inside the block, an allocation failure becomes a MemoryError in one line naming ``what`` ran,
    the allocator's own first line and ``fix``; other errors pass unchanged."""
    try:
        yield
    except (MemoryError, RuntimeError) as err:
        if not _allocation_failure(err):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MemoryError(f"{what} ran out of memory ({first}): {fix}") from None
