"""The campaign's ``condense`` section: one outer iteration of dataset condensation on the device,
DD3D (generator + fixed-sign rotator + gradient matching, Eq. 10) against gradient matching of
explicit clouds, at CPC 1 and 10, 1,024 points and ModelNet40's 40 classes' sizes (a generated set,
``benchmarks.cpu.matching_speed.matching_set``: the cost depends on the sizes alone), 32 real clouds
a class (decision 95; the DD3D paper's Figure 8 compares the two methods' time and memory). A third
row per CPC times DD3D trained at ``low_points`` a cloud, real clouds included: the generator draws
any resolution, so a set evaluated at 1,024 points can be distilled at fewer (the paper's Section
4.3 and Figure 4c), and the matching's activations, not the synthetic set's few megabytes, are what
a GPU holds (the H200 run of 2026-11-30: GM and DD3D within 0.5% at the same resolution). A
fourth row times GM with its PointNet's last layer as decision 95 made it, its gradient not taken
through the second moments (decision 103, which the package takes from 342 points a cloud: the
CPU's rule; this row says whether it holds on the device)."""
from __future__ import annotations

import math
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from benchmarks.gpu_campaign.record import Recorder, peak_mb, profiled, timed

if TYPE_CHECKING:
    from train.data.objects.cloud import ObjectSet


def _iteration(method: str, cpc: int, train: ObjectSet, device: torch.device) -> None:
    """One outer iteration of ``method`` ("gm" or "dd3d") at ``cpc`` on ``train``."""
    from train.condense.files.rotator import Rotator
    from train.condense.matching.matching_loops import DistillSpec
    from train.condense.methods.dd3d import distill_dd3d
    from train.condense.methods.explicit import distill_explicit
    from train.runtime.distributed import DistInfo

    spec, info = DistillSpec(iterations=1), DistInfo(0, 1, 0, device)
    if method == "gm":
        distill_explicit(train, cpc, 0, spec, info, "gm")
        return
    with tempfile.TemporaryDirectory() as folder:
        distill_dd3d(train, cpc, 0, spec, info, Path(folder), Rotator("fixed").to(device))


def _profile(method: str, cpc: int, train: ObjectSet, device: torch.device) -> tuple[float, float, int, str]:
    """Wall ms, kernel ms and kernel count of one profiled outer iteration, and its three longest kernels."""
    wall, kernels = profiled(lambda: _iteration(method, cpc, train, device), device)
    longest = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:3]
    top = "; ".join(f"{e.key[:48]} {e.self_device_time_total / 1000:.0f} ms x {e.count}" for e in longest)
    return 1000 * wall, sum(e.self_device_time_total for e in kernels) / 1000, sum(e.count for e in kernels), top


def condense(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    """Seconds and peak device memory (one run each) of one outer iteration per (method, points,
    CPC): GM and DD3D at ``points``, DD3D at ``low_points``; a warm-up iteration (GM, CPC 1) first,
    untimed; then one profiled iteration of each method at the first CPC: wall time against the
    kernels' time. The sets are made before the clock starts (making 40 x 32 clouds of 1,024 points
    takes about 2 s of host time, which the H200 run of 2026-11-30 counted in its rows). The rows
    come in as they are measured; the box stops the rest."""
    from benchmarks.cpu.matching_speed import matching_set, second_moments

    classes, points, low = size["classes"], size["points"], size["low_points"]
    sets = {n: matching_set(classes, n) for n in (points, low)}
    _iteration("gm", 1, sets[points], device)
    rows: list[list[Any]] = []
    seconds: dict[str, float] = {}
    peaks: dict[str, float] = {}
    title = f"Condensation: one outer iteration, {classes} classes, 32 real clouds a class"
    header = ["method", "points", "CPC", "s per iteration", "peak memory (MB)", "time / GM's", "memory / GM's"]
    for cpc in size["cpcs"]:
        for label, method, n, form in (("explicit GM", "gm", points, ""), ("DD3D", "dd3d", points, ""),
                                       ("DD3D", "dd3d", low, ""),
                                       ("explicit GM, last layer as decision 95", "gm", points, "-95")):
            if time.monotonic() > deadline:
                rec.note(f"stopped before {label} at {n} points, CPC {cpc}, at the section's time box")
                rec.table(title, header, rows)
                return
            key, gm = f"{method}-{n}-{cpc}{form}", f"gm-{points}-{cpc}"
            with second_moments(False) if form else nullcontext():
                peaks[key] = peak_mb(lambda: seconds.__setitem__(
                    key, timed(lambda: _iteration(method, cpc, sets[n], device), device)), device)
            versus = key != gm
            rows.append([label, n, cpc, seconds[key], peaks[key], seconds[key] / seconds[gm] if versus else math.nan,
                         peaks[key] / peaks[gm] if versus else math.nan])
            rec.put("seconds", seconds)
            rec.put("peak_mb", peaks)
            rec.table(title, header, rows)
    cpc, profiled = size["cpcs"][0], []
    for label, method in (("explicit GM", "gm"), ("DD3D", "dd3d")):
        if time.monotonic() > deadline:
            rec.note(f"stopped before the profile of {method} at the section's time box")
            return
        wall, kernel, count, top = _profile(method, cpc, sets[points], device)
        busy = 100 * kernel / wall if device.type == "cuda" else math.nan
        profiled.append([label, points, cpc, wall, kernel if device.type == "cuda" else math.nan, count, busy, top])
        rec.table(f"Where one outer iteration's time goes (torch.profiler, CPC {cpc}, {points} points)",
                  ["method", "points", "CPC", "wall ms (profiled)", "kernel ms", "kernels", "GPU busy %",
                   "longest kernels"], profiled)
