"""Group ``topo-split``: where the topological term's time goes in a demo full-objective step on this
CPU (``benchmarks.cpu.topo_split``; the GPU campaign's section ``topo_split`` is the same split on a GPU).

The README demo's regime: the demo presets, 2 scans of the synthetic set's size (5,800 points after
the 0.25 m grid) with their plan built ahead (decision 47), M = 256, a persistence pool of 2
workers; the full objective (L_seg + L_kld + L_grad + L_topo) against KD + saliency, rounds
interleaved. The parts go to ``extra_info``; nothing
is asserted about speed (the report compares). Smoke run: tiny sizes, one round.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch

from benchmarks.cpu.topo_split import PARTS, measure_split

FULL = {"clouds": 2, "points": 5_800, "m": 256, "rounds": 5}
SMOKE = {"clouds": 2, "points": 300, "m": 16, "rounds": 1}
WORKERS = 2


def test_topo_split(benchmark: Any, full_run: bool, thread_info: dict[str, Any]) -> None:
    from benchmarks.gpu_campaign.training import _Trainer
    from benchmarks.cpu.step_ops import build_rig
    from fast.persistence import default_pool, set_default_workers
    from train.engine.steps import DistillSettings, start_persistence, warm_up_persistence

    size = FULL if full_run else SMOKE
    benchmark.group = "topo-split"
    start_persistence(WORKERS)
    try:
        warm_up_persistence()
        device = torch.device("cpu")
        # the batch plan built ahead, as the loader's workers hand it over in training (decision 47)
        rig = build_rig({**size, "teacher": "teacher-demo", "student": "student-demo"}, device, planned=True)
        kd = DistillSettings(kld=True, grad=True)
        full = DistillSettings(kld=True, grad=True, topo=True, topo_m=size["m"])
        trainer = _Trainer(rig.teacher, rig.student, device)
        split = benchmark.pedantic(lambda: measure_split(trainer, rig.batch, full, kd, size["rounds"],
                                                         time.monotonic() + 600), rounds=1)
        workers = default_pool().workers
    finally:
        set_default_workers(None)  # the process's own share again, for the tests that follow
    assert split["rounds"] == size["rounds"]
    assert all(math.isfinite(split["parts_ms"][p]) for p in PARTS)
    benchmark.extra_info.update(thread_info)
    benchmark.extra_info.update(split=split, size=size, workers=workers, paper=full_run)
