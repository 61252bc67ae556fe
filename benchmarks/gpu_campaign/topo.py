"""The campaign's sections on the topological term alone: ``tps`` (TPS of a training batch: the
host workers, the former one-program Triton kernel and the kernel split over programs, same
indices asserted), ``engine_paths`` (``fast.topo_loss`` by persistence path) and ``table6`` (paper
Table 6 on the device)."""
from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.gpu_campaign.record import Recorder, has_module, median_ms, peak_mb, timed

# ----------------------------------------------------------------------------------------------
# tps


def tps(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    """TPS of a training batch (decision 42), every way side by side: in the persistence workers
    (one copy of the features to the host, the clouds in parallel), the former Triton kernel (one
    program per cloud over all M steps, ``fast.tps_device.tps_device_one_program``) and the kernel
    split over programs (``fast.tps_device.tps_device``, two launches per step, on CUDA replayed from
    the CUDA graph of its batch shape) at each chunk size of ``size["rows_per_program"]``. Every way
    must return the host kernel's indices (the reference's): the section fails after its table if
    one does not. ``size["interpret"]`` runs the Triton kernels in Triton's interpreter on a CPU (the
    smoke run)."""
    import numpy as np

    from benchmarks.cpu.clouds import teacher_features
    from fast.persistence import default_pool, submit_tps_diagrams

    triton_runs = has_module("triton") and (device.type == "cuda" or size.get("interpret", False))
    if triton_runs and device.type != "cuda":
        os.environ["TRITON_INTERPRET"] = "1"  # read when fast.tps_device defines its kernels (imported below)
    pool = default_pool()
    pool.warm()
    m, clouds, points = size["m"], size["clouds"], size["points"]
    ends = [points * (b + 1) for b in range(clouds)]
    rows = []
    mismatches = []
    for family in size["families"]:
        rng = np.random.default_rng(7)
        feats = torch.tensor(np.concatenate([teacher_features(points, family, rng) for _ in range(clouds)]),
                             device=device)
        picked: dict[str, list[np.ndarray]] = {}
        launch_s: dict[str, list[float]] = {}

        def host() -> None:
            h = feats.cpu().numpy()
            selections, diagrams = submit_tps_diagrams([h[e - points:e] for e in ends], m, seed=0, pool=pool,
                                                       with_h1=False)
            picked["host (workers)"] = [f.result() for f in selections]
            for f in diagrams:  # drained outside the TPS time of the next round
                f.result()

        def on_device(name: str, kernel: Callable[[], list[torch.Tensor]]) -> Callable[[], None]:
            def run() -> None:
                start = time.perf_counter()
                out = kernel()  # returns once every launch is queued
                launch_s.setdefault(name, []).append(time.perf_counter() - start)
                picked[name] = [t.cpu().numpy() for t in out]
            return run

        ways: dict[str, Callable[[], None]] = {"host (workers)": host}
        if triton_runs:
            from fast.tps_device import tps_device, tps_device_one_program

            ways["device, one program per cloud"] = on_device(
                "device, one program per cloud", lambda: tps_device_one_program(feats, ends, m, 0))
            for chunk in size["rows_per_program"]:
                name = f"device, split, {chunk} rows per program"
                ways[name] = on_device(name, lambda chunk=chunk: tps_device(feats, ends, m, 0, rows_per_program=chunk))
        times: dict[str, list[float]] = {name: [] for name in ways}
        for fn in ways.values():
            fn()  # warm-up: the kernels' compilation, the workers' first task
        launch_s.clear()
        for done in range(size["rounds"]):
            if time.monotonic() > deadline:
                rec.note(f"{family}: stopped after {done} of {size['rounds']} rounds at the section's time box "
                         "(its indices are the warm-up call's)")
                break
            for name, fn in ways.items():
                times[name].append(timed(fn, device))
        baseline = times.get("device, one program per cloud")
        for name in ways:
            same = all(np.array_equal(a, b) for a, b in zip(picked[name], picked["host (workers)"]))
            if not same:
                mismatches.append(f"{family}: {name}")
            rows.append([family, f"{clouds} x {points}", m, name, median_ms(times[name]),
                         median_ms(launch_s.get(name, [])),
                         (statistics.median(baseline) / statistics.median(times[name])
                          if baseline and times[name] else math.nan),
                         "yes" if same else "NO", len(times[name])])
        rec.put(f"tps_ms_{family}", {name: median_ms(t) for name, t in times.items()})
        rec.table("TPS of one batch: host workers, the one-program kernel and the split kernel (median ms; "
                  "indices compared with the host kernel's)",
                  ["family", "clouds x points", "M", "way", "ms (synchronised)", "ms to queue (host)",
                   "speed-up vs one program", "same indices", "rounds"], rows)
    if not triton_runs:
        rec.note("the device kernels need Triton and a CUDA device (or the interpreter); only the host path ran.")
    rec.note("host: the features' copy to the host and TPS in the persistence workers, up to the last cloud's rows; "
             "device: fast.tps_device, indices copied back; 'ms to queue' is the calling thread's time in the call "
             "(the split kernel: copying the batch in and replaying its CUDA graph), 'ms' includes the device's work. "
             "Decision 42.")
    if mismatches:
        raise AssertionError(f"TPS indices differ from the host kernel's: {', '.join(mismatches)}")


# ----------------------------------------------------------------------------------------------
# engine_paths


def engine_paths(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    from benchmarks.cpu.clouds import batch as feature_batch
    from fast.persistence import DEFAULT_PATHS, DeviceBatch, default_pool
    from fast.topo_loss import topo_loss

    student, teacher, offsets = feature_batch(size["clouds"], size["points"], "latent", seed=1000)
    student = student.detach().to(device).requires_grad_(True)
    teacher = teacher.to(device)
    medians: dict[str, float] = {}
    losses: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name in ("pool", "device"):
        try:  # one path failing (e.g. on a device it never ran on) must not hide the other's numbers
            runner = default_pool() if name == "pool" else DeviceBatch(str(device))

            def step() -> None:
                student.grad = None
                loss = topo_loss(student, teacher, offsets, m=size["m"], pool=runner)
                loss.backward()
                losses[name] = float(loss.detach())

            timed(step, device)  # warm-up (workers, compiled kernels)
            times = []
            for _ in range(size["rounds"]):
                if time.monotonic() > deadline:
                    break
                times.append(timed(step, device))
            medians[name] = median_ms(times)
        except Exception as exc:
            medians[name] = math.nan
            errors[name] = f"{type(exc).__name__}: {exc}"[:300]
        rec.put("topo_loss_ms", medians)
    rec.put("errors", errors)
    kind = device.type
    now = DEFAULT_PATHS.get(kind, "pool")
    timed_paths = [k for k in medians if not math.isnan(medians[k])]
    best = min(timed_paths, key=medians.__getitem__) if timed_paths else now
    rel = (abs(losses["pool"] - losses["device"]) / max(abs(losses["pool"]), 1e-300)
           if {"pool", "device"} <= set(losses) else math.nan)
    rec.put("recommended_default", {kind: best})
    rec.put("current_default", {kind: now})
    rec.table(
        "fast.topo_loss forward + backward by persistence path (median ms)",
        ["device", "clouds x M (of points)", "pool", "device batch", "loss rel. diff", "faster", "DEFAULT_PATHS now"],
        [[kind, f"{size['clouds']} x {size['m']} (of {size['points']})", medians["pool"], medians["device"], rel,
          best, now]],
    )
    for name, error in errors.items():
        rec.note(f"the {name} path failed: {error}")
    verdict = "agrees with" if best == now else "differs from"
    rec.note(f"recommended default for {kind!r}: {best!r}, which {verdict} fast.persistence.DEFAULT_PATHS "
             "(decision 34). Measured alone: in training the device batch also shares the GPU with the model.")


# ----------------------------------------------------------------------------------------------
# table6


def table6(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    from benchmarks.cpu.clouds import student_teacher
    from benchmarks.report_writers.paper import PAPER_TABLE6
    from benchmarks.cpu.table6 import FAMILY, in_process_methods

    from train.engine.steps import warm_up_persistence

    loss_fn = in_process_methods()["ours"]
    # every persistence worker started and its compiled code loaded first (one cloud lands on any
    # worker: a cold one took 1.4-1.6 s instead of about 11 ms), then the device's kernels once
    warm_up_persistence()
    warm_s, warm_t = student_teacher(8, FAMILY, seed=1)
    loss_fn(warm_s.detach().to(device).requires_grad_(True), warm_t.to(device)).backward()
    rows = []
    for n in size["n"]:
        if time.monotonic() > deadline:
            rec.note(f"stopped before N = {n} at the section's time box")
            break
        s, t = student_teacher(n, FAMILY, seed=n)
        student, teacher = s.detach().to(device).requires_grad_(True), t.to(device)
        fwd, bwd = [], []
        for _ in range(size["rounds"]):
            student.grad = None
            holder: dict[str, torch.Tensor] = {}
            fwd.append(timed(lambda: holder.update(loss=loss_fn(student, teacher)), device))
            bwd.append(timed(lambda: holder["loss"].backward(), device))

        def once() -> None:
            student.grad = None
            loss_fn(student, teacher).backward()

        mem = peak_mb(once, device)
        paper = PAPER_TABLE6.get(n)
        rows.append([n, 1000 * statistics.median(fwd), 1000 * statistics.median(bwd), mem,
                     *(("-", "-", "-") if paper is None else (1000 * paper[3], 1000 * paper[4], paper[5]))])
        rec.table(f"Table 6 on {device.type}: fast.topo_loss, one cloud (median ms, peak MB)",
                  ["N", "fwd (ms)", "bwd (ms)", "peak device MB", "paper fwd (ms)", "paper bwd (ms)", "paper MB"], rows)
