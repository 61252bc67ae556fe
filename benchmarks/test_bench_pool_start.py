"""Persistence pool start-up (group ``pool-start``; ``benchmarks.pool_start``): seconds from a fresh
process's first line to a warmed pool and its first diagrams, cold (a new copy of the package and
an empty cache: a new machine), clone (a new copy, the kernels compiled before by another copy on
this machine) and warm (that copy again).

``--benchmark``: 2 workers (a fresh clone's 2-worker pool) and one worker per core; two fresh
copies and caches for the cold time, two fresh copies for the clone, three runs for the warm one.
Smoke run: 1 worker, one run each. The benchmark's time is the child's whole wall time;
``ready_s`` (from the child's first line to its first diagrams), ``warm_s`` (to ``warm()``
returned), ``pool_s`` (from the pool's creation to its first diagrams) and the CPU-seconds of the
child and of its workers (``parent_cpu_s``, ``workers_cpu_s``) go to ``extra_info``. Never asserted.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks.pool_start import fresh_copy, time_ready

CASES = {"smoke": (1, False), "two": (2, True), "all-cores": (os.cpu_count() or 1, True)}


@pytest.mark.parametrize("state", ["cold", "clone", "warm"])
@pytest.mark.parametrize("case", list(CASES))
def test_pool_start(benchmark: Any, state: str, case: str, full_run: bool, thread_info: dict[str, Any],
                    tmp_path_factory: pytest.TempPathFactory) -> None:
    workers, full_only = CASES[case]
    if full_only != full_run:
        pytest.skip("measured under --benchmark" if full_only else "the smoke run's case")
    benchmark.group = "pool-start"
    shared = None if state == "cold" else tmp_path_factory.mktemp(f"cache-{workers}")
    if shared is not None:  # another copy has compiled the kernels into this cache
        time_ready(fresh_copy(tmp_path_factory.mktemp(f"first-{workers}")), shared, workers)
    root = fresh_copy(tmp_path_factory.mktemp(f"pool-{workers}")) if state == "warm" else None
    if root is not None:
        time_ready(root, shared, workers)  # writes the copy's own caches (Python's)
    runs: list[tuple[Path, Path]] = []
    records: list[dict[str, float]] = []

    def setup() -> None:
        runs.append((root or fresh_copy(tmp_path_factory.mktemp(f"{state}-{workers}")),
                     shared or tmp_path_factory.mktemp(f"cache-{workers}")))

    benchmark.pedantic(lambda: records.append(time_ready(*runs[-1], workers)), setup=setup,
                       rounds=(3 if state == "warm" else 2) if full_run else 1)
    assert all(0 < r["pool_s"] <= r["ready_s"] and 0 < r["warm_s"] <= r["ready_s"] <= r["wall_s"] for r in records)
    benchmark.extra_info.update(thread_info)
    benchmark.extra_info.update(state=state, workers=workers, cores=os.cpu_count(),
                                ready_s=[r["ready_s"] for r in records], warm_s=[r["warm_s"] for r in records],
                                pool_s=[r["pool_s"] for r in records],
                                workers_cpu_s=[r["workers_cpu_s"] for r in records],
                                parent_cpu_s=[r["parent_cpu_s"] for r in records])
