"""The persistence term's share of a gradient-matching outer iteration (``benchmarks.cpu.topo_cost``,
decision 96), and the shape reading's pairings compared (``benchmarks.cpu.topo_pairing``).

Smoke run: two classes of the generated shapes at 16 points, one iteration of gm at CPC 1 (the
classification and the part set). ``--benchmark``: gm at CPC 1 and 10 and dd3d at CPC 1, at 64,
256 and 1,024 points, and on the part set (the per-part reading) gm and dd3d at CPC 1 at 128, 512
and 2,048 points, four classes of 40 clouds (a real batch of 32), one iteration each (the real
clouds' diagrams computed in it, as in a run's first iteration). The seconds and the share go to ``extra_info``; never asserted beyond
a finished run with finite losses (decision 96 reports it against the third of an iteration it should stay below).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from benchmarks.cpu.topo_cost import measure
from benchmarks.cpu.topo_pairing import compare

SMOKE = {"points": [16], "classes": 2, "size": 6, "iterations": 1}
FULL = {"points": [64, 256, 1024], "classes": 4, "size": 40, "iterations": 1}
PARTS_FULL = {**FULL, "points": [128, 512, 2048]}  # the cpu preset's part clouds, and the paper's


@pytest.mark.parametrize("method,cpc,task", [("gm", 1, "classification"), ("gm", 10, "classification"),
                                             ("dd3d", 1, "classification"), ("gm", 1, "parts"), ("dd3d", 1, "parts")])
def test_topo_cost(benchmark: Any, method: str, cpc: int, task: str, full_run: bool,
                   thread_info: dict[str, Any]) -> None:
    if (method, cpc) != ("gm", 1) and not full_run:
        pytest.skip("under --benchmark only")
    sizes = (PARTS_FULL if task == "parts" else FULL) if full_run else SMOKE
    benchmark.group = "topo-cost"
    records: list[dict[str, Any]] = []

    def run() -> None:
        for points in sizes["points"]:
            records.append({"points": points, **measure(method, cpc, points, sizes["classes"], sizes["size"],
                                                         sizes["iterations"], task=task)})
    benchmark.pedantic(run, rounds=1)
    assert all(r["status"] == "ok" and r["finite"] and 0 < r["share"] < 1 for r in records)
    benchmark.extra_info.update({**thread_info, "method": method, "cpc": cpc, "task": task, "runs": records})


def test_topo_pairing(benchmark: Any, full_run: bool, thread_info: dict[str, Any]) -> None:
    """``benchmarks.cpu.topo_pairing``: gm without the term and with each pairing (smoke: 2 classes,
    16 points, 1 iteration; ``--benchmark``: 4 classes of 40 clouds, 64 points, 10 iterations, from
    noise); the clouds' shape gaps to ``extra_info``."""
    sizes = {"classes": 4, "points": 64, "size": 40, "iterations": 10, "weight": 1.0, "init": "noise"} if full_run \
        else {"classes": 2, "points": 16, "size": 6, "iterations": 1, "weight": 1.0, "init": "real"}
    benchmark.group = "topo-pairing"
    records: list[dict[str, Any]] = []
    benchmark.pedantic(lambda: records.append(compare(**sizes)), rounds=1)
    assert set(records[-1]) == {"off", "nearest", "mean"}
    assert all(np.isfinite(list(r.values())).all() for r in records[-1].values())
    benchmark.extra_info.update({**thread_info, **sizes, "runs": records[-1]})
