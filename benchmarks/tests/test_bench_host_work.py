"""Group ``host-work``: the host's part of a paper-size training step, part by part, in core-seconds
(``benchmarks.cpu.host_work``), and the step time it implies on GPU nodes of 8 and 16 cores per GPU.

The benchmark's own time is the wall time of measuring every part once; the parts (medians of
several rounds of process CPU time, one torch thread) go to ``extra_info``. Smoke run: tiny sizes,
one round. Never asserted against a target: the report compares.
"""
from __future__ import annotations

import math
from typing import Any

from benchmarks.cpu.host_work import PAPER, SMOKE, implied_step_s, measure_parts, step_work

NODES = (8, 16)


def test_host_work(benchmark: Any, full_run: bool, thread_info: dict[str, Any]) -> None:
    size = PAPER if full_run else SMOKE
    benchmark.group = "host-work"
    parts = benchmark.pedantic(lambda: measure_parts(size), rounds=1)
    assert all(math.isfinite(v) and v >= 0 for v in parts.values())
    implied = {}
    for dataset in ("nuscenes", "waymo"):
        for topo in (False, True):
            work = step_work(parts, dataset, size["scans"], topo, size["clouds"], size["diagrams"], host_tps=False)
            for cores in NODES:
                implied[f"{dataset}_{'topo' if topo else 'kd'}_{cores}"] = implied_step_s(work, cores)
    benchmark.extra_info.update(thread_info)
    benchmark.extra_info.update(parts=parts, implied_s=implied, size={k: v for k, v in size.items()},
                                paper=full_run)
