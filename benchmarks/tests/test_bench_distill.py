"""Time per outer iteration and peak memory of DD3D and of gradient matching on explicit clouds at
CPC 1 and 10 (``benchmarks.cpu.distill_cost``).

Smoke run: two classes of the generated shapes at 16 points, one iteration, in this process (its
memory figure is then not the run's alone). ``--benchmark``: the 13 classes at 1,024 points (the
paper's resolution), one iteration, CPC 50 too, each in a fresh child process, on the GPU where
there is one (its peak memory beside the process's). Seconds per iteration and the extra peak
resident memory go to ``extra_info``; never asserted beyond a finished run and finite losses. Part
segmentation's local matching (``benchmarks.cpu.part_matching``): one forward pass a class against
one a part, at 16 points (smoke) or the study's 128 and the paper's 2,048 (``--benchmark``), the
ratio to ``extra_info``. The sign step's stability (``benchmarks.cpu.sign_stability``) has a smoke
test.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from benchmarks.cpu.distill_cost import measure
from benchmarks.cpu.isolated import run_isolated
from benchmarks.cpu.part_matching import measure as measure_part_matching
from benchmarks.cpu.sign_stability import flip_rates

SMOKE = {"points": 16, "classes": 2, "iterations": 1}
FULL = {"points": 1024, "classes": 13, "iterations": 1}


@pytest.mark.parametrize("cpc", [1, 10, 50])
@pytest.mark.parametrize("method", ["gm", "dd3d"])
def test_distill_cost(benchmark: Any, method: str, cpc: int, full_run: bool, thread_info: dict[str, Any]) -> None:
    if cpc == 50 and not full_run:
        pytest.skip("CPC 50 under --benchmark only")
    sizes = FULL if full_run else SMOKE
    records: list[dict[str, Any]] = []
    benchmark.group = "distill-cost"
    device = "cuda" if full_run and torch.cuda.is_available() else "cpu"
    kwargs = {"method": method, "cpc": cpc, "device": device, **sizes}
    run = (lambda: run_isolated("benchmarks.cpu.distill_cost:measure", kwargs, 3600.0, None)) if full_run else (
        lambda: measure(**kwargs))
    benchmark.pedantic(lambda: records.append(run()), rounds=1)
    record = records[-1]
    assert record["status"] == "ok" and record["finite"] and record["clouds"] == cpc * sizes["classes"]
    benchmark.extra_info.update({**thread_info, **sizes, "method": method, "cpc": cpc, **record})


@pytest.mark.parametrize("points", [128, 2048])
def test_part_matching_cost(benchmark: Any, points: int, full_run: bool, thread_info: dict[str, Any]) -> None:
    sizes = {"points": points, "classes": 13, "real_batch": 32, "cpc": 1, "rounds": 3} if full_run else {
        "points": 16, "classes": 2, "real_batch": 4, "cpc": 1, "rounds": 1}
    if points == 2048 and not full_run:
        pytest.skip("the paper's 2,048 points under --benchmark only")
    records: list[dict[str, Any]] = []
    benchmark.group = "part-matching"
    benchmark.pedantic(lambda: records.append(measure_part_matching(**sizes)), rounds=1)
    record = records[-1]
    assert record["loss_rel_diff"] < 1e-5  # the same distances, computed with fewer forward passes
    benchmark.extra_info.update({**thread_info, **sizes, **record})


def test_sign_stability_smoke() -> None:
    """``benchmarks.cpu.sign_stability`` runs and gives a share of the clouds for every ``w0``."""
    rates = flip_rates(2, 64, [1.0, 10.0])
    assert set(rates) == {1.0, 10.0} and all(0.0 <= r <= 1.0 for r in rates.values())
