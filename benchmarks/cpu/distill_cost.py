"""Time per outer iteration and peak memory of dataset distillation on this machine: DD3D
(generator + fixed-sign rotator + gradient matching) against gradient matching on explicit clouds
(DD3D paper Sec. 5.5, Figure 8), run by ``benchmarks/tests/test_bench_distill.py`` in a fresh
child process each (``benchmarks.cpu.isolated``).

:func:`measure` reads the generated shapes (``classes`` of them, ``points`` a cloud), runs
``iterations`` outer iterations on the CPU or a GPU and returns the seconds per iteration and the
peak resident memory above the process's peak before the run (``ru_maxrss``: torch's CPU
allocations are not Python's, so ``tracemalloc`` would not see them), with a GPU's peak beside it.
"""
from __future__ import annotations

import dataclasses
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.condense.methods.dd3d import distill_dd3d
from train.condense.methods.explicit import distill_explicit
from train.condense.matching.matching_loops import DistillSpec
from train.condense.files.rotator import Rotator
from train.data.objects import load_objects
from train.runtime.distributed import DistInfo


def measure(method: str, cpc: int, points: int, classes: int, iterations: int, device: str = "cpu") -> dict[str, Any]:
    """One distillation run of ``method`` ("gm" or "dd3d") on ``device``; its time per iteration and
    extra peak memory (on CUDA also ``peak_device_mb``, ``torch.cuda.max_memory_allocated``)."""
    torch.set_num_threads(1)
    on_gpu = device == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    # the train split keeps 90% of a class: CPC real clouds for the initialisation and the defaults' real batch
    least = max(cpc, DistillSpec().real_batch)
    size = least + least // 5 + 4
    full = load_objects("shapes", split="train", points=points, size=size)
    keep = full.labels < classes
    train = dataclasses.replace(full, points=full.points[keep], labels=full.labels[keep],
                                class_names=full.class_names[:classes])
    spec, info = DistillSpec(iterations=iterations), DistInfo(0, 1, 0, torch.device(device))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        if method == "dd3d":
            cloud_points, _, _, history = distill_dd3d(train, cpc, 0, spec, info, Path(folder),
                                                       Rotator("fixed").to(info.device))
        else:
            cloud_points, _, _, history = distill_explicit(train, cpc, 0, spec, info, method)
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu = {"peak_device_mb": torch.cuda.max_memory_allocated() / 2**20} if on_gpu else {}
    return {"status": "ok", "s_per_iteration": seconds / iterations, "extra_peak_rss_mb": (peak - before) / 1024,
            "start_rss_mb": before / 1024, "clouds": len(cloud_points), "finite": bool(np.isfinite(history).all()),
            "device": device, **gpu}
