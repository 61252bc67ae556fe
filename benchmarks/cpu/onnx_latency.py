"""``python -m benchmarks.onnx_latency``: latency per 30,000-point scan of the paper student and
teacher, onnxruntime (the file of ``python -m train.export_onnx``, decision 55) against PyTorch, on
this CPU at 1 and 2 threads, the batch plan's host time shown apart; prints a markdown table for
``benchmarks/RESULTS.md``. ``--profile``: also where onnxruntime's time goes at one thread, per
operator type (its own profiler, the mean of two passes).

Both runtimes get the same planned scan (``train.evaluation.cost.lidar_like_batch``, eval mode,
fixed serialization order, random weights: latency does not depend on them). Their passes
alternate (:func:`interleaved_ms`), each cell the median of ``--runs``, wall time and the
process's CPU time. The plan column is the host's ``BatchPlan`` and the graph's input arrays
(``plan_feed``), the same for both runtimes. PyTorch's threads are ``torch.set_num_threads``,
onnxruntime's the session's ``intra_op_num_threads``.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from benchmarks.cpu.machine import cpu_model
from train.evaluation.cost import lidar_like_batch
from train.models import build_model
from train.models.graph_inputs import plan_feed
from train.models.onnx_graph import export_graph, export_items
from train.models.plan import BatchPlan

POINTS = 30_000


def interleaved_ms(runs: int, *passes: Callable[[], Any]) -> list[tuple[float, float]]:
    """(wall, process CPU) milliseconds of each of ``passes``: the medians of ``runs`` rounds, each
    round running every pass in turn after one warm-up of each, so that a load that comes and goes
    on a shared machine falls on both runtimes alike."""
    for run in passes:
        run()
    times: list[list[tuple[float, float]]] = [[] for _ in passes]
    for _ in range(runs):
        for run, kept in zip(passes, times):
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            kept.append((time.perf_counter() - wall, time.process_time() - cpu))
    return [(1000 * statistics.median(w for w, _ in kept), 1000 * statistics.median(c for _, c in kept))
            for kept in times]


def operator_ms(path: Path, feed: dict[str, np.ndarray]) -> dict[str, float]:
    """Milliseconds per operator type of a single-threaded pass of the file ``path`` (the mean of two)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(["logits"], feed)
    session.run(["logits"], feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    return {op: us / 2000 for op, us in totals.items()}  # microseconds of two passes -> ms per pass


def measure(kind: str, threads: Sequence[int], runs: int, profile: bool = False) -> list[dict[str, Any]]:
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build_model(kind, 16, deterministic=True).eval()
    batch = lidar_like_batch([POINTS], seed=1)
    grid, offset = batch["grid_coord"].numpy(), batch["offset"].numpy()
    items = export_items(model)
    data, inputs = export_graph(model, half=False)

    def planned() -> dict[str, np.ndarray]:
        return plan_feed(BatchPlan(grid, offset, tuple(model.config.orders), items), batch["feat"].numpy(), inputs)

    ((plan_ms, _),) = interleaved_ms(runs, planned)
    plan = BatchPlan(grid, offset, tuple(model.config.orders), items)
    feed = plan_feed(plan, batch["feat"].numpy(), inputs)
    inputs_torch = {**batch, "plan": plan}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        for n in threads:
            torch.set_num_threads(n)
            options = ort.SessionOptions()
            options.intra_op_num_threads = n
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

            def torch_pass() -> None:
                with torch.no_grad():
                    model(inputs_torch)

            (torch_ms, torch_cpu), (ort_ms, ort_cpu) = interleaved_ms(
                runs, torch_pass, lambda: session.run(["logits"], feed))
            rows.append({"model": kind, "threads": n, "voxels": len(grid), "plan_ms": plan_ms, "torch_ms": torch_ms,
                         "ort_ms": ort_ms, "torch_cpu": torch_cpu, "ort_cpu": ort_cpu})
        if profile:
            rows[0]["operators"] = operator_ms(path, feed)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onnx_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["student", "teacher"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also onnxruntime's time per operator type")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    rows = [row for kind in args.models for row in measure(kind, args.threads, args.runs, args.profile)]
    print(f"{cpu_model()}, {os.cpu_count()} cores; 1-minute load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after; median of {args.runs} after a warm-up\n")
    print("| model | threads | voxels | plan (ms, host) | PyTorch (ms) | onnxruntime (ms) | PyTorch / onnxruntime "
          "| CPU ms PyTorch / onnxruntime |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['threads']} | {r['voxels']:,} | {r['plan_ms']:.0f} | {r['torch_ms']:.0f} | "
              f"{r['ort_ms']:.0f} | {r['torch_ms'] / r['ort_ms']:.2f}x | {r['torch_cpu']:.0f} / {r['ort_cpu']:.0f} |")
    for r in rows:
        if "operators" in r:
            total = sum(r["operators"].values())
            print(f"\nonnxruntime, {r['model']}, one thread, per operator type ({total:.0f} ms in kernels):\n")
            print("| operator | ms | % |\n|---|---|---|")
            for op, ms in sorted(r["operators"].items(), key=lambda kv: -kv[1])[:10]:
                print(f"| {op} | {ms:.0f} | {100 * ms / total:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
