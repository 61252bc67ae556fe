"""Description of the machine and software a benchmark run measured (for the JSON and RESULTS.md)."""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
from typing import Any

import torch

_PACKAGES = (
    "torch",
    "numpy",
    "scipy",
    "giotto-ph",
    "ripser",
    "gudhi",
    "torch-topological",
)


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions() -> dict[str, str]:
    """Installed version of each package the benchmarks use ("not installed" otherwise)."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, memory, GPU (if any), versions, UTC date and load average."""
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the vector ISA torch's kernels use
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(mem_gib, 1),
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": package_versions(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_1_5_15": list(os.getloadavg()),
    }
