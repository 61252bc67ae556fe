"""Gradient matching at the layout's speed against the form before it (decision 95) and with the
second moments (decision 103; ``benchmarks.cpu.matching_speed``): one outer iteration of
explicit-cloud GM at 32 real clouds a class, the forms ``today``, ``layout``, ``layout+heap`` and
``moments`` in the same run.

Smoke run: two classes at 16 points, CPC 1, in this process: every form runs and the four give the
same loss history (the same maths). ``--benchmark``: CPC 1 and 10 at 64 and 256 points (4 classes)
and at 1,024 points (2 classes), each form in a fresh child process (``benchmarks.cpu.isolated``),
the forms interleaved over ``ROUNDS`` rounds; the CPU seconds per iteration (``time.process_time``)
of each, their ratio to ``today``, the extra peak memory and the ``layout+heap`` profile (CPC 1 and
10 at 256 points) go to ``extra_info``. Speed is never asserted.
"""
from __future__ import annotations

from typing import Any

import pytest

from benchmarks.cpu.isolated import run_isolated
from benchmarks.cpu.matching_speed import FORMS, measure

ROUNDS = 2
CASES = [(1, 64, 4), (1, 256, 4), (1, 1024, 2), (10, 64, 4), (10, 256, 4), (10, 1024, 2)]  # (cpc, points, classes)
PROFILED = {(1, 256), (10, 256)}


def test_matching_speed_smoke() -> None:
    histories = {form: measure(form, 1, 16, 2)["history"] for form in FORMS}
    assert histories["layout"] == pytest.approx(histories["today"], rel=1e-4)
    assert histories["layout+heap"] == pytest.approx(histories["layout"], rel=1e-6)
    assert histories["moments"] == pytest.approx(histories["layout+heap"], rel=1e-4)


@pytest.mark.parametrize("cpc,points,classes", CASES)
def test_matching_speed(benchmark: Any, cpc: int, points: int, classes: int, full_run: bool,
                        thread_info: dict[str, Any]) -> None:
    if not full_run:
        pytest.skip("under --benchmark only (the smoke run is test_matching_speed_smoke)")
    benchmark.group = "matching-speed"
    runs: dict[str, list[dict[str, Any]]] = {form: [] for form in FORMS}

    def rounds() -> None:
        for r in range(ROUNDS):
            for form in FORMS:
                profile = 12 if form == "layout+heap" and r == 0 and (cpc, points) in PROFILED else 0
                kwargs = {"form": form, "cpc": cpc, "points": points, "classes": classes, "profile_top": profile}
                runs[form].append(run_isolated("benchmarks.cpu.matching_speed:measure", kwargs, 3600.0, None))
    benchmark.pedantic(rounds, rounds=1)
    assert all(run["status"] == "ok" for form in FORMS for run in runs[form])
    cpu = {form: min(run["cpu_s_per_iteration"] for run in runs[form]) for form in FORMS}
    benchmark.extra_info.update({
        **thread_info, "cpc": cpc, "points": points, "classes": classes, "real_batch": 32, "rounds": ROUNDS,
        "cpu_s_per_iteration": cpu, "speedup": {form: cpu["today"] / cpu[form] for form in FORMS},
        "extra_peak_rss_mb": {form: max(run["extra_peak_rss_mb"] for run in runs[form]) for form in FORMS},
        "profile": next((run["profile"] for run in runs["layout+heap"] if run["profile"]), []),
    })
