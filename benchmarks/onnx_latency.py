"""``python -m benchmarks.onnx_latency``: latency per 30,000-point scan of the paper student and
teacher, onnxruntime (the file of ``python -m train.export_onnx``, decision 55) against PyTorch, on
this CPU at 1 and 2 threads, the batch plan's host time shown apart; prints a markdown table for
``benchmarks/RESULTS.md``.

Both runtimes get the same planned scan (``train.evaluation.cost.lidar_like_batch``, eval mode,
fixed serialization order, random weights: latency does not depend on them); each cell is the
median of ``--runs`` passes after a warm-up; the plan column is the host's ``BatchPlan`` and the
graph's input arrays (``plan_feed``), the same for both runtimes. PyTorch's threads are ``torch.set_num_threads``,
onnxruntime's the session's ``intra_op_num_threads``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from benchmarks.machine import cpu_model
from train.evaluation.cost import lidar_like_batch
from train.models import build_model
from train.models.graph_inputs import plan_feed
from train.models.onnx_graph import export_graph, export_items
from train.models.plan import BatchPlan

POINTS = 30_000


def median_ms(run: Callable[[], Any], runs: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(kind: str, threads: Sequence[int], runs: int) -> list[dict[str, Any]]:
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build_model(kind, 16, deterministic=True).eval()
    batch = lidar_like_batch([POINTS], seed=1)
    grid, offset = batch["grid_coord"].numpy(), batch["offset"].numpy()
    items = export_items(model)
    data, inputs = export_graph(model, half=False)

    def planned() -> dict[str, np.ndarray]:
        return plan_feed(BatchPlan(grid, offset, tuple(model.config.orders), items), batch["feat"].numpy(), inputs)

    plan_ms = median_ms(planned, runs)
    plan = BatchPlan(grid, offset, tuple(model.config.orders), items)
    feed = plan_feed(plan, batch["feat"].numpy(), inputs)
    inputs_torch = {**batch, "plan": plan}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        for n in threads:
            torch.set_num_threads(n)
            with torch.no_grad():
                torch_ms = median_ms(lambda: model(inputs_torch), runs)
            options = ort.SessionOptions()
            options.intra_op_num_threads = n
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            ort_ms = median_ms(lambda: session.run(["logits"], feed), runs)
            rows.append({"model": kind, "threads": n, "voxels": len(grid), "plan_ms": plan_ms, "torch_ms": torch_ms,
                         "ort_ms": ort_ms})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onnx_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["student", "teacher"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    rows = [row for kind in args.models for row in measure(kind, args.threads, args.runs)]
    print(f"{cpu_model()}, {os.cpu_count()} cores; 1-minute load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after; median of {args.runs} after a warm-up\n")
    print("| model | threads | voxels | plan (ms, host) | PyTorch (ms) | onnxruntime (ms) | PyTorch / onnxruntime |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['threads']} | {r['voxels']:,} | {r['plan_ms']:.0f} | {r['torch_ms']:.0f} | "
              f"{r['ort_ms']:.0f} | {r['torch_ms'] / r['ort_ms']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
