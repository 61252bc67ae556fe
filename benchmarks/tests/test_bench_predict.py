"""Inference speed of the paper's models on this machine (``python -m train.predict``, decision 50).

Group ``predict``: the forward pass of the paper presets (``teacher``, ``student``: paper Table 8)
on grid-sampled LiDAR-like scans of ``POINTS`` voxels each (``train.evaluation.cost.lidar_like_batch``; the
paper times one 30,000-point scan), at batch 1 (latency per scan) and batch 8 (throughput), as
``train.predict`` runs it: in eval mode with a fixed serialization order, the batch's plan built
beforehand (the loader workers build it, decision 47; its time is recorded beside, ``plan_ms``).
The paper reports 36.2 ms (student) vs 59.2 ms (teacher) per scan, 1.64x, on a GPU; an H200 run of
this code measured 54.8 vs 61.7 ms, 1.13x.

Group ``predict-profile``: where one scan's forward pass spends its time, per part of the model
(:func:`benchmarks.cpu.predict_profile.part_seconds`), for both models, to see which costs do not
shrink with the student's width, and the FLOPs of that pass (``train.evaluation.cost.count_flops``). The smoke run uses ``SMOKE_POINTS`` and batches 1 and 2.
"""
from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from benchmarks.cpu.predict_profile import part_seconds
from train.evaluation.cost import count_flops, count_parameters, lidar_like_batch
from train.models import build_model
from train.models.plan import BatchPlan

POINTS = 30_000
SMOKE_POINTS = 2_000
BATCHES = {True: (1, 8), False: (1, 2)}  # --benchmark: batch 1 and 8; smoke: 1 and 2
NUM_CLASSES = 16  # nuScenes, the paper's latency table's data set


def planned_scans(model: torch.nn.Module, clouds: int, points: int) -> tuple[dict[str, Any], float]:
    """``clouds`` scans of ``points`` voxels with the model's plan, and the seconds the plan took
    (the second of two builds: the first one of a process loads the plan's compiled kernels)."""
    batch = lidar_like_batch([points] * clouds, seed=clouds)
    for _ in range(2):
        t0 = time.perf_counter()
        batch["plan"] = BatchPlan(batch["grid_coord"], batch["offset"], tuple(model.config.orders),
                                  model.plan_items(torch.device("cpu")))
    return batch, time.perf_counter() - t0


def inference_model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(kind, NUM_CLASSES).eval()
    model.deterministic = True
    return model


@pytest.mark.parametrize("batch_index", [0, 1], ids=["batch-small", "batch-large"])
@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_predict_forward(benchmark: Any, kind: str, batch_index: int, full_run: bool,
                         thread_info: dict[str, Any]) -> None:
    benchmark.group = "predict"
    clouds, points = BATCHES[full_run][batch_index], POINTS if full_run else SMOKE_POINTS
    model = inference_model(kind)
    batch, plan_s = planned_scans(model, clouds, points)
    with torch.no_grad():
        logits = benchmark.pedantic(lambda: model(batch).logits, rounds=3 if full_run else 1, warmup_rounds=1)
    assert logits.shape == (clouds * points, NUM_CLASSES) and torch.isfinite(logits).all()
    benchmark.extra_info.update(thread_info)
    benchmark.extra_info.update(model=kind, clouds=clouds, points=points, plan_ms=1000 * plan_s,
                                parameters=count_parameters(model))


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_predict_profile(benchmark: Any, kind: str, full_run: bool, thread_info: dict[str, Any]) -> None:
    benchmark.group = "predict-profile"
    model = inference_model(kind)
    batch, _ = planned_scans(model, 1, POINTS if full_run else SMOKE_POINTS)
    with torch.no_grad():
        model(batch)  # warm-up
        parts = benchmark.pedantic(lambda: part_seconds(model, batch), rounds=1)
    assert parts["total"] >= sum(v for k, v in parts.items() if k != "total") * 0.99
    benchmark.extra_info.update(thread_info)
    benchmark.extra_info.update(model=kind, points=len(batch["coord"]), part_ms={k: 1000 * v for k, v in parts.items()},
                                gflops=count_flops(model, batch)["total"] / 1e9)
