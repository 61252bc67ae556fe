"""Start-up costs of the compiled kernels (``benchmarks.cpu.pool_start``), each in a fresh process, cold (a
new copy of the package and an empty cache: a new machine), clone (a new copy, the kernels compiled
before by another copy on this machine) and warm (that copy again):

* group ``pool-start``: seconds from the process's first line to a warmed persistence pool and its
  first diagrams. ``--benchmark``: 2 workers (a fresh clone's 2-worker pool) and one worker per
  core (where that is not 2); two runs cold and clone, three warm. Smoke run: 1 worker, one run
  each. The benchmark's time is the child's whole wall time; ``ready_s`` (from the child's first
  line to its first diagrams), ``warm_s`` (to ``warm()`` returned), ``pool_s`` (from the pool's
  creation to its first diagrams) and the CPU-seconds of the child and of its workers
  (``parent_cpu_s``, ``workers_cpu_s``) go to ``extra_info``;
* group ``pwcd-start``: seconds of the process's first PWCD forward and backward, float64 then
  float32 (``float64_s``, ``float32_s`` in ``extra_info``; the benchmark's time is the child's
  wall time, torch's import included). Three runs per state under ``--benchmark``, one in the
  smoke run.

Never asserted.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

from benchmarks.cpu.pool_start import fresh_copy, time_first_pwcd, time_ready

CASES = {"smoke": (1, False), "two": (2, True), "all-cores": (os.cpu_count() or 1, True)}
STATES = ["cold", "clone", "warm"]


def _measure(benchmark: Any, state: str, child: Callable[[Path, Path], dict[str, Any]], rounds: int,
             tmp_path_factory: pytest.TempPathFactory, tag: str) -> list[dict[str, Any]]:
    """``rounds`` runs of ``child(root, cache_home)`` in ``state``: cold = a fresh copy and an empty
    cache each run; clone = a fresh copy each run, the cache filled first by another copy; warm =
    one copy whose run before the timed ones filled the cache and Python's caches."""
    shared = None if state == "cold" else tmp_path_factory.mktemp(f"cache-{tag}")
    if shared is not None:  # another copy has compiled the kernels into this cache
        child(fresh_copy(tmp_path_factory.mktemp(f"first-{tag}")), shared)
    root = fresh_copy(tmp_path_factory.mktemp(f"copy-{tag}")) if state == "warm" else None
    if root is not None:
        child(root, shared)  # writes the copy's own caches (Python's)
    runs: list[tuple[Path, Path]] = []
    records: list[dict[str, Any]] = []

    def setup() -> None:
        runs.append((root or fresh_copy(tmp_path_factory.mktemp(f"{state}-{tag}")),
                     shared or tmp_path_factory.mktemp(f"cache-{tag}")))

    benchmark.pedantic(lambda: records.append(child(*runs[-1])), setup=setup, rounds=rounds)
    return records


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("case", list(CASES))
def test_pool_start(benchmark: Any, state: str, case: str, full_run: bool, thread_info: dict[str, Any],
                    tmp_path_factory: pytest.TempPathFactory) -> None:
    workers, full_only = CASES[case]
    if full_only != full_run:
        pytest.skip("measured under --benchmark" if full_only else "the smoke run's case")
    if case == "all-cores" and workers == CASES["two"][0]:
        pytest.skip("one worker per core is the 2-worker case on this machine")
    benchmark.group = "pool-start"
    records = _measure(benchmark, state, lambda root, cache: time_ready(root, cache, workers),
                       (3 if state == "warm" else 2) if full_run else 1, tmp_path_factory, f"pool-{workers}")
    assert all(0 < r["pool_s"] <= r["ready_s"] and 0 < r["warm_s"] <= r["ready_s"] <= r["wall_s"] for r in records)
    benchmark.extra_info.update(thread_info)
    benchmark.extra_info.update(state=state, workers=workers, cores=os.cpu_count(),
                                ready_s=[r["ready_s"] for r in records], warm_s=[r["warm_s"] for r in records],
                                pool_s=[r["pool_s"] for r in records],
                                workers_cpu_s=[r["workers_cpu_s"] for r in records],
                                parent_cpu_s=[r["parent_cpu_s"] for r in records])


@pytest.mark.parametrize("state", STATES)
def test_first_pwcd_call(benchmark: Any, state: str, full_run: bool, thread_info: dict[str, Any],
                         tmp_path_factory: pytest.TempPathFactory) -> None:
    benchmark.group = "pwcd-start"
    records = _measure(benchmark, state, time_first_pwcd, 3 if full_run else 1, tmp_path_factory, "pwcd")
    assert all(0 < r["float64_s"] < r["wall_s"] and 0 < r["float32_s"] < r["wall_s"] for r in records)
    benchmark.extra_info.update(thread_info)
    benchmark.extra_info.update(state=state, float64_s=[round(r["float64_s"], 4) for r in records],
                                float32_s=[round(r["float32_s"], 4) for r in records])
