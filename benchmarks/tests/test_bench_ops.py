"""Dispatched ops and host syncs of one training step (group ``step-ops``; ``benchmarks.cpu.step_ops``).

One student CE step, one KD + saliency step and one teacher forward, with the real step code, at
the paper presets (teacher and student, 4 clouds x 30,000 points) under ``--benchmark`` and at the
demo presets on 2 x 400 points in the smoke run. The counts do not depend on the machine or its
load; ``benchmarks.report`` puts them beside the figures before and the targets (decision 39). The time
recorded is that of the counted call (the counter slows it down a little).
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from benchmarks.cpu.step_ops import PAPER, SMOKE, StepRig, build_rig, measurements
from train.engine.op_count import count_ops

NAMES = ("student CE step", "KD + saliency step", "teacher forward")


@pytest.fixture(scope="module")
def rig(full_run: bool) -> StepRig:
    return build_rig(PAPER if full_run else SMOKE, torch.device("cpu"))


@pytest.mark.parametrize("name", NAMES)
def test_step_ops(benchmark: Any, name: str, rig: StepRig, full_run: bool, thread_info: dict[str, Any]) -> None:
    benchmark.group = "step-ops"
    size = PAPER if full_run else SMOKE
    step = measurements(rig)[name]
    step()  # warm-up: the optimiser's state, lazily built buffers
    count = benchmark.pedantic(lambda: count_ops(step), rounds=1)
    assert count.ops > 0 and count.syncs >= 0
    benchmark.extra_info.update(thread_info)
    benchmark.extra_info.update(measurement=name, ops=count.ops, syncs=count.syncs, by_sync=count.by_sync,
                                top_ops=dict(list(count.by_op.items())[:6]), **size)
