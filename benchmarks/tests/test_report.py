"""``benchmarks.report`` turns a run's JSON into RESULTS.md tables with ratios of medians.

A hand-built run in the run file's layout (``benchmarks.cpu.timing``) (only the keys the report reads) checks that
speedups are baseline median / our median, that naive timeouts and out-of-memory sizes are shown
as such, that the paper's numbers are quoted, and that unknown groups are not dropped.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report_writers.results import main, newest_run, render


def _bench(group: str, median: float, **extra: Any) -> dict[str, Any]:
    return {"group": group, "name": f"test_{group}[{extra}]", "extra_info": {"torch_threads": 1, **extra},
            "stats": {"median": median, "min": median, "rounds": 5}}


def _run() -> dict[str, Any]:
    table6 = []
    for method, fwd, bwd in (("ours", 0.03, 0.012), ("paper-style", 0.3, 0.12)):
        table6.append(_bench("table6-forward", fwd, method=method, device="cpu", n=100, loss=1.0, engine="native"))
        table6.append(_bench("table6-backward", bwd, method=method, device="cpu", n=100))
    batch = [_bench("batch", t, method=m, case="latent", family="latent", clouds=12, m=1024,
                    points_per_cloud=4096, loss=2.0, time_budget_s=None, h1_budget_misses=0)
             for m, t in (("paper-style", 30.0), ("ours", 1.0))]
    figs = [_bench("fig7", 0.002, method="tps-ours", n=1024, m=128), _bench("fig8", 0.5, method="H2", maxdim=2, n=400),
            _bench("fig8", 0.01, method="H1", maxdim=1, n=400)]
    isolated = [
        {"group": "table6", "method": "naive", "n": 100, "status": "ok", "forward_s": 40.0, "backward_s": 2.0,
         "rss_peak_mb": 900.0, "loss": 1.0, "timeout_s": 600.0, "memory_limit_mb": 8192.0},
        {"group": "table6", "method": "naive", "n": 200, "status": "out of memory", "timeout_s": 600.0,
         "memory_limit_mb": 8192.0},
        {"group": "table6", "method": "naive", "n": 400, "status": "timeout", "timeout_s": 600.0,
         "memory_limit_mb": 8192.0},
        *({"group": "table6-memory", "method": m, "device": "cpu", "n": 100, "status": "ok", "rss_peak_mb": mb,
           "tracemalloc_peak_mb": 1.0, "cuda_peak_mb": None} for m, mb in (("ours", 20.0), ("paper-style", 35.0))),
    ]
    other = _bench("h1-engine", 0.2, engine="native", n=1024)
    ops = [_bench("step-ops", 30.0, measurement=m, ops=o, syncs=y, teacher="teacher", student="student", clouds=4,
                  points=30_000, top_ops={"index": 900, "mm": 700}) for m, o, y in
           (("student CE step", 3_500, 12), ("KD + saliency step", 5_000, 18), ("teacher forward", 1_100, 7))]
    profile = _bench("batch-profile", 2.0, family="latent", clouds=12, m=1024, points_per_cloud=4096,
                     profile_s={"TPS (Algorithm 5)": 0.5, "H1 reduction": 1.0, "other": 0.5})
    pool = [_bench("pool-start", wall, state=state, workers=2, cores=2, load_average_1min=0.5, ready_s=ready,
                   warm_s=[r - 0.1 for r in ready], pool_s=[r - 0.4 for r in ready],
                   workers_cpu_s=[2 * r for r in ready], parent_cpu_s=[0.5 for _ in ready]) for state, ready, wall in
            (("warm", [0.5, 0.7, 0.6], 1.0), ("cold", [6.0, 4.0], 6.5), ("clone", [1.5, 1.2], 2.0))]
    return {"benchmarks": [*table6, *batch, *figs, other, profile, *ops, *pool], "isolated": isolated,
            "topodistill_machine": {"cpu_model": "test cpu", "cpu_count": 2, "versions": {"torch": "x"}},
            "commit_info": {"id": "abc"}}


def test_report_speedups_are_ratios_of_medians_and_failures_are_named() -> None:
    text = render(_run(), Path("run.json"))
    row100 = next(line for line in text.splitlines() if line.startswith("| 100 | 40 |"))
    assert "| 1,000x | 10x |" in row100  # (40 + 2) / (0.03 + 0.012); paper-style 0.42 / 0.042
    assert "| 0.3 | 0.12 | 35 |" in row100 and "| 0.03 | 0.012 | 20 |" in row100  # memory from child records
    assert "out of memory (cap 8 GiB)" in text and "timeout (> 600 s)" in text
    assert "| latent | 12 x 1024 (of 4096) | 30 | 1 | 30x |" in text
    assert "| 400 | 0.01 | 0.5 | 50x |" in text
    assert "6,743x" in text  # the paper's own Table 6 is quoted
    assert "N = 100: ours (CPU) is **1,000x** faster" in text
    assert "(latent): ours is **30x** faster than the paper-style pipeline" in text and "target >= 30x: met" in text
    assert "`test_h1-engine[" in text  # an unknown group is listed, not dropped
    assert "| H1 reduction | 1 | 50% |" in text and "| **total (one core)** | 2 | 100% |" in text  # the profile
    assert "| wall time with the worker pool (batch table) | 1 |  |" in text
    # op counts beside the figures before and the targets
    assert ("| student CE step | student | 4 x 30,000 | 3,500 / 12 | 13,945 / 887 | 10,491 / 577 | "
            "<= 4,000 / 20: met | index 900, mm 700 |") in text
    assert "| KD + saliency step | teacher + student | 4 x 30,000 | 5,000 / 18 |" in text and "20: not met" in text
    assert "| teacher forward | teacher | 4 x 30,000 | 1,100 / 7 | 4,874 / - |" in text and "smoke sizes" not in text
    # pool start-up: the median of the runs against the target
    assert "| 2 | cold | 6, 4 | 4.9 | 4.6 | 10 | 6.5 | <= 5: met | 9.2 (fresh clone) |" in text
    assert "| 2 | warm | 0.5, 0.7, 0.6 | 0.5 | 0.2 | 1.2 | 1 | <= 1: met | 0.6 |" in text
    assert "| 2 | clone | 1.5, 1.2 | 1.25 | 0.95 | 2.7 | 2 | <= 5: met | 9.2 (fresh clone) |" in text
    assert text.index("| 2 | cold |") < text.index("| 2 | clone |") < text.index("| 2 | warm |")  # the states in order


def test_report_main_writes_markdown_and_refuses_missing_input(tmp_path: Path) -> None:
    src = tmp_path / "run.json"
    src.write_text(json.dumps(_run()))
    (tmp_path / "in-progress.json").write_text("")  # an unfinished run's empty file is skipped
    assert newest_run(tmp_path) == src
    out = tmp_path / "RESULTS.md"
    main([str(src), "-o", str(out)])
    assert out.read_text().startswith("# Efficiency results")
    # --update: only the sections of this run change; the others, and the machine, stay
    out.write_text("# Efficiency results\n\nintro\n\n## Machine and run\n\nold machine\n\n"
                   "## Dispatched ops and host syncs per step\n\nold counts\n\n## Table 9\n\nkept\n")
    ops_only = {**_run(), "benchmarks": [b for b in _run()["benchmarks"] if b["group"] == "step-ops"], "isolated": []}
    src.write_text(json.dumps(ops_only))
    main([str(src), "-o", str(out), "--update"])
    text = out.read_text()
    assert "old machine" in text and "old counts" not in text and "3,500 / 12" in text and "## Table 9\n\nkept" in text
    assert text.index("## Dispatched ops") < text.index("## Table 9")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main([str(tmp_path / "missing.json"), "-o", str(out)])
    with pytest.raises(FileNotFoundError, match="no benchmark JSON"):
        newest_run(tmp_path / "empty")


def test_predict_section_gives_teacher_over_student_latency_beside_the_papers_and_the_profile() -> None:
    run = _run()
    run["benchmarks"] += [
        _bench("predict", t, model=kind, clouds=clouds, points=30_000, plan_ms=100.0, parameters=params,
               omp_num_threads="1", load_average_1min=1.0)
        for kind, params, times in (("student", 2_777_344, (1.0, 4.0)), ("teacher", 46_159_312, (5.0, 24.0)))
        for clouds, t in zip((1, 8), times)]
    run["benchmarks"] += [
        _bench("predict-profile", 0.0, model=kind, points=30_000, gflops=g,
               part_ms={"attention": a, "cpe_conv": c, "other": o, "total": a + c + o})
        for kind, g, a, c, o in (("student", 13.6, 500.0, 300.0, 200.0), ("teacher", 64.2, 2000.0, 2500.0, 500.0))]
    text = render(run, Path("run.json"))
    assert "| student | 1 | 2,777,344 | 1000 | 1000 | 1.00 | 100 |" in text
    assert "| teacher | 8 | 46,159,312 | 24000 | 3000 | 0.33 | 100 |" in text
    assert "latency at batch 1: **5x** here; the paper: 59.2 / 36.2 ms = 1.64x" in text
    assert "| cpe_conv | 300 | 30 | 2500 | 50 | 8.33x |" in text and "(4.72x)" in text
    assert "predict" not in text.split("## Other benchmarks")[-1]  # not listed again as an unknown group
