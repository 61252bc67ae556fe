"""The inference section of RESULTS.md: teacher and student latency per scan (``train.predict``'s
forward pass, paper Table 9) beside the paper's and an H200's, and where one scan's pass goes."""
from __future__ import annotations

from typing import Any

from benchmarks.report_writers.tables import by_group, median, ratio, table

# Paper Table 9 (ms per 30,000-point scan, GPU) and this code on an H200 (benchmarks.gpu's cost section).
PAPER_LATENCY_MS = {"student": 36.2, "teacher": 59.2}
H200_LATENCY_MS = {"student": 54.8, "teacher": 61.7}


def predict_section(run: dict[str, Any]) -> list[str]:
    records = by_group(run["benchmarks"], "predict")
    if not records:
        return []
    ms = {(b["extra_info"]["model"], b["extra_info"]["clouds"]): 1000 * median(b) for b in records}
    first = records[0]["extra_info"]
    rows = []
    for (kind, clouds), t in sorted(ms.items(), key=lambda kv: (kv[0][1], kv[0][0] != "student")):
        e = next(b["extra_info"] for b in records if (b["extra_info"]["model"], b["extra_info"]["clouds"]) == (kind, clouds))
        rows.append([kind, str(clouds), f"{e['parameters']:,}", f"{t:.0f}", f"{t / clouds:.0f}",
                     f"{1000 * clouds / t:.2f}", f"{e['plan_ms']:.0f}"])
    small = min(c for _, c in ms)
    speedup = ratio(ms.get(("teacher", small)), ms.get(("student", small)))
    machine = run.get("topodistill_machine", {})
    cores = machine.get("cpu_affinity") or machine.get("cpu_count") or 0
    loads = [b["extra_info"]["load_average_1min"] for b in records if b["extra_info"].get("load_average_1min")]
    loaded = bool(cores and loads and max(loads) > cores)
    lines = [
        "## Inference: teacher and student per scan",
        "",
        f"Forward pass of the paper presets on grid-sampled LiDAR-like scans of {first['points']:,} points "
        "(`benchmarks/tests/test_bench_predict.py`; eval mode, fixed serialization, the batch plan built beforehand as "
        "`train.predict`'s loader workers build it; median of "
        f"{records[0]['stats']['rounds']} round(s) after a warm-up), on "
        f"{machine.get('cpu_model', 'this CPU')} ({cores} cores"
        + (f", torch's CPU kernels: {machine['cpu_capability']}" if machine.get("cpu_capability") else "")
        + f") with {first['torch_threads']} torch thread(s) "
        f"(OMP_NUM_THREADS={first['omp_num_threads']}), measured {run.get('datetime', 'unknown')}; 1-minute load "
        f"average {min(loads, default=float('nan')):.1f} to {max(loads, default=float('nan')):.1f}"
        + (" (**the machine was shared with other jobs**: absolute times are pessimistic, ratios are what to read)"
           if loaded else "")
        + ("" if first["points"] == 30_000 else "; **smoke sizes, not the paper's**") + ".",
        "",
        *table(["model", "batch", "parameters", "forward (ms)", "ms per scan", "scans/s", "plan (ms, loader)"], rows),
        f"Teacher / student latency at batch {small}: **{speedup}** here; the paper: "
        f"{PAPER_LATENCY_MS['teacher']} / {PAPER_LATENCY_MS['student']} ms = "
        f"{PAPER_LATENCY_MS['teacher'] / PAPER_LATENCY_MS['student']:.2f}x (GPU); an H200 with this code: "
        f"{H200_LATENCY_MS['teacher']} / {H200_LATENCY_MS['student']} ms = "
        f"{H200_LATENCY_MS['teacher'] / H200_LATENCY_MS['student']:.2f}x.",
    ]
    profiles = {b["extra_info"]["model"]: b["extra_info"] for b in by_group(run["benchmarks"], "predict-profile")}
    if {"student", "teacher"} <= set(profiles):
        s, t = profiles["student"]["part_ms"], profiles["teacher"]["part_ms"]
        gflops = {kind: profiles[kind]["gflops"] for kind in ("student", "teacher")}
        parts = sorted((k for k in t if k != "total"), key=lambda k: -t[k])
        prow = [[k, f"{s.get(k, 0):.0f}", f"{100 * s.get(k, 0) / s['total']:.0f}", f"{t[k]:.0f}",
                 f"{100 * t[k] / t['total']:.0f}", ratio(t[k], s.get(k))] for k in parts]
        prow.append(["total", f"{s['total']:.0f}", "100", f"{t['total']:.0f}", "100", ratio(t["total"], s["total"])])
        lines += [
            "",
            "Where one scan's forward pass goes (`benchmarks/cpu/predict_profile.py`: forward hooks per part, one "
            "pass after a warm-up):",
            "",
            *table(["part", "student (ms)", "student %", "teacher (ms)", "teacher %", "teacher / student"], prow),
            f"FLOPs of one scan's pass: student {gflops['student']:.1f} G, teacher {gflops['teacher']:.1f} G "
            f"({ratio(gflops['teacher'], gflops['student'])}).",
        ]
    return lines + [""]
