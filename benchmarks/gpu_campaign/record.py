"""What every section of the GPU campaign (``python -m benchmarks.gpu``) shares: the
:class:`Recorder` its results go to, device-synchronised timing, and the synthetic scans."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.cpu.measure import sync

REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 16  # nuScenes-like label count for the synthetic scans (paper Tables 8-9 are on nuScenes)


class Recorder:
    """Section output kept in a JSON file, rewritten after every :meth:`put` (survives a kill)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"tables": [], "notes": []}
        self._flush()

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self._flush()

    def table(self, title: str, header: list[str], rows: list[list[Any]]) -> None:
        """Add (or replace, by title) a table for the report; rows may grow between calls."""
        tables = [t for t in self.data["tables"] if t["title"] != title]
        tables.append({"title": title, "header": header, "rows": [[_cell(c) for c in r] for r in rows]})
        self.put("tables", tables)

    def note(self, text: str) -> None:
        self.put("notes", [*self.data["notes"], text])

    def _flush(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, self.path)


def _cell(x: Any) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"
    return str(x)


def has_module(name: str) -> bool:
    """Whether an optional package is importable (without importing it)."""
    return importlib.util.find_spec(name) is not None


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``fn()`` including the device work it queued."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def profiled(fn: Callable[[], Any], device: torch.device) -> tuple[float, list[Any]]:
    """Wall seconds of ``fn()`` (as :func:`timed`) under one ``torch.profiler`` pass, and the device
    kernels it ran (``FunctionEventAvg``, one per kernel name), counted as torch's own table totals
    them: the events of the device, not user annotations. Not the CPU operators' self device time
    too: under Kineto an operator's is the time of the kernels it launched, which are events of
    their own, so summing over every event counts such a kernel twice."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        seconds = timed(fn, device)
    kernels = [e for e in prof.key_averages()
               if e.device_type == torch.autograd.DeviceType.CUDA and not e.is_user_annotation]
    return seconds, kernels


def peak_mb(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak device memory above the start while ``fn()`` runs, MB (NaN on a CPU)."""
    if device.type != "cuda":
        fn()
        return math.nan
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20



def median_ms(xs: list[float]) -> float:
    return 1000 * statistics.median(xs) if xs else math.nan


def scans(points: int, clouds: int, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Synthetic LiDAR-like scans (``train.evaluation.cost.lidar_like_batch``) with labels for the losses."""
    from train.evaluation.cost import lidar_like_batch

    batch = lidar_like_batch([points] * clouds, seed=seed, device=device)
    gen = torch.Generator().manual_seed(seed)
    batch["segment"] = torch.randint(0, NUM_CLASSES, (batch["coord"].shape[0],), generator=gen).to(device)
    return batch
