"""Device synchronisation and peak-memory probes shared by the benchmarks (paper Table 6 columns Fwd, Bwd, Mem).

Peak memory on CPU is reported two ways:

- ``rss_peak_mb``: growth of the resident set above its level before the call, from the kernel's
  high-water mark ``VmHWM`` after resetting it (``/proc/<pid>/clear_refs``, Linux >= 4.0). It
  covers every allocator (torch, numpy, C++ engines). The fast path's persistence engine runs in
  worker processes, so the probe sums the growth of this process and of all its descendants
  (an upper bound: their peaks need not coincide).
- ``tracemalloc_peak_mb``: the peak of Python-level allocations (numpy arrays included, torch's
  CPU allocator not), measured in a second pass because tracing slows the code down.

On CUDA, ``cuda_peak_mb`` is ``torch.cuda.max_memory_allocated`` above the allocation before the
call (what the paper reports).
"""
from __future__ import annotations

import gc
import os
import tracemalloc
from collections.abc import Callable
from typing import Any

import torch

_MB = 2**20


def _status_kib(pid: int | str, field: str) -> int | None:
    """``field`` (e.g. ``VmHWM``) of /proc/<pid>/status in KiB, None if unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def descendant_pids(root: int | None = None) -> list[int]:
    """PIDs of all descendants of ``root`` (default: this process), from the ppid in /proc/*/stat."""
    root = os.getpid() if root is None else root
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) is in parentheses and may hold spaces; ppid follows ") S ".
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.extend(kids)
        frontier.extend(kids)
    return out


def _reset_hwm(pid: int | str) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_peak_probe(fn: Callable[[], Any]) -> float | None:
    """Peak RSS growth in MB of this process plus its descendants while ``fn()`` runs.

    Returns None where the kernel offers no resettable high-water mark (non-Linux).
    """
    gc.collect()
    pids: list[int | str] = ["self", *descendant_pids()]
    if not all(_reset_hwm(p) for p in pids):
        return None
    before = {p: _status_kib(p, "VmRSS") for p in pids}
    fn()
    growth_kib = 0
    for p in ["self", *descendant_pids()]:
        hwm = _status_kib(p, "VmHWM")
        if hwm is None:
            continue
        # A worker started during fn() counts from 0: its whole peak is memory fn() caused.
        growth_kib += max(hwm - (before.get(p) or 0), 0)
    return growth_kib / 1024


def tracemalloc_peak_probe(fn: Callable[[], Any]) -> float:
    """Peak of Python-level (tracemalloc) allocations in MB while ``fn()`` runs."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / _MB


def cuda_peak_probe(fn: Callable[[], Any], device: torch.device) -> float:
    """``torch.cuda.max_memory_allocated`` growth in MB while ``fn()`` runs on ``device``."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / _MB


def peak_memory(fn: Callable[[], Any], device: torch.device) -> dict[str, float | None]:
    """All peak-memory columns for ``fn`` on ``device`` (each a separate call of ``fn``)."""
    out: dict[str, float | None] = {"rss_peak_mb": rss_peak_probe(fn)}
    out["tracemalloc_peak_mb"] = tracemalloc_peak_probe(fn)
    out["cuda_peak_mb"] = cuda_peak_probe(fn, device) if device.type == "cuda" else None
    return out


def sync(device: torch.device) -> None:
    """Wait for queued kernels on ``device`` so a timer reads the finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
