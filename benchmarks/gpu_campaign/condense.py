"""The campaign's ``condense`` section: one outer iteration of dataset condensation on the device,
DD3D (generator + fixed-sign rotator + gradient matching, Eq. 10) against gradient matching of
explicit clouds, at CPC 1 and 10, 1,024 points and ModelNet40's 40 classes' sizes (a generated set,
``benchmarks.cpu.matching_speed.matching_set``: the cost depends on the sizes alone), 32 real clouds
a class (decision 95; the DD3D paper's Figure 8 compares the two methods' time and memory)."""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu_campaign.record import Recorder, peak_mb, timed


def _iteration(method: str, cpc: int, size: dict[str, Any], device: torch.device) -> None:
    """One outer iteration of ``method`` ("gm" or "dd3d") at ``cpc`` on the section's set."""
    from benchmarks.cpu.matching_speed import matching_set
    from train.condense.methods.dd3d import distill_dd3d
    from train.condense.methods.explicit import distill_explicit
    from train.condense.matching.matching_loops import DistillSpec
    from train.condense.files.rotator import Rotator
    from train.runtime.distributed import DistInfo

    train = matching_set(size["classes"], size["points"])
    spec, info = DistillSpec(iterations=1), DistInfo(0, 1, 0, device)
    if method == "gm":
        distill_explicit(train, cpc, 0, spec, info, "gm")
        return
    with tempfile.TemporaryDirectory() as folder:
        distill_dd3d(train, cpc, 0, spec, info, Path(folder), Rotator("fixed").to(device))


def condense(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    """Seconds and peak device memory (one run each) of one outer iteration per (method, CPC); a
    warm-up iteration (GM, CPC 1) first, untimed. The rows come in as they are measured; the box stops the rest."""
    _iteration("gm", 1, size, device)
    rows: list[list[Any]] = []
    seconds: dict[str, float] = {}
    title = (f"Condensation: one outer iteration, {size['classes']} classes x {size['points']} points, "
             "32 real clouds a class")
    header = ["method", "CPC", "s per iteration", "peak memory (MB)", "DD3D / GM time"]
    for cpc in size["cpcs"]:
        for method in ("gm", "dd3d"):
            if time.monotonic() > deadline:
                rec.note(f"stopped before {method} at CPC {cpc} at the section's time box")
                rec.table(title, header, rows)
                return
            key = f"{method}-{cpc}"
            peak = peak_mb(lambda: seconds.__setitem__(key, timed(lambda: _iteration(method, cpc, size, device),
                                                                  device)), device)
            ratio = seconds[f"dd3d-{cpc}"] / seconds[f"gm-{cpc}"] if method == "dd3d" else math.nan
            rows.append(["DD3D" if method == "dd3d" else "explicit GM", cpc, seconds[key], peak, ratio])
            rec.put("seconds", seconds)
            rec.table(title, header, rows)
