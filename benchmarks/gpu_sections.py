"""The sections of the GPU campaign (``python -m benchmarks.gpu``), one function each.

Every section runs in its own child process (started by ``benchmarks.gpu``), gets its sizes (the
campaign's or the smoke run's), the device and a soft deadline, and writes what it measured to a
:class:`Recorder` as it goes, so a section stopped at its time box still reports the rows it
finished. A section reports tables (``{"title", "header", "rows"}``) and notes that the campaign's
report prints as they are, plus the raw numbers.

What each section measures (paper references in brackets):

* ``cuda_tests`` - ``pytest -m cuda``: every CUDA-only test of the suite;
* ``topo_step`` - the topological term's cost inside a training step: the step time of a
  distillation step (teacher forward, student forward and backward, optimiser) with and without
  ``L_topo`` (Algorithm 1 at B clouds x M = 1024), persistence overlapped with the model's work;
  target: at most 100 ms per step;
* ``engine_paths`` - ``fast.topo_loss`` forward + backward at B = 12 x M = 1024 on the device with
  each persistence path (worker pool, device batch), and the default it recommends for
  ``fast.persistence.DEFAULT_PATHS``;
* ``table6`` - paper Table 6 (App. B.4) rows of ``fast.topo_loss`` on the device: forward,
  backward, peak device memory per N, every persistence worker warm before the first timing;
* ``cost`` - paper Tables 8 and 9: teacher vs student inference latency, throughput, peak memory,
  parameters and GFLOPs (paper: student 1.64x faster);
* ``distill`` - a few hundred distillation steps (Eq. 8, all terms) of the paper presets on
  synthetic scans of real size, with the per-section profile (``train.profiling.StepTimer``);
* ``step_kernels`` - kernels launched per training step and the GPU's busy share (torch.profiler)
  for a student CE and a KD + saliency step at the paper presets, and the README demo's teacher
  steps per second (the targets of decision 39);
* ``accelerators`` - flash-attn vs PyTorch SDPA and spconv vs our sparse convolution, where those
  packages are installed.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
NUM_CLASSES = 16  # nuScenes-like label count for the synthetic scans (paper Tables 8-9 are on nuScenes)


class Recorder:
    """Section output kept in a JSON file, rewritten after every :meth:`put` (survives a kill)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"tables": [], "notes": []}
        self._flush()

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self._flush()

    def table(self, title: str, header: list[str], rows: list[list[Any]]) -> None:
        """Add (or replace, by title) a table for the report; rows may grow between calls."""
        tables = [t for t in self.data["tables"] if t["title"] != title]
        tables.append({"title": title, "header": header, "rows": [[_cell(c) for c in r] for r in rows]})
        self.put("tables", tables)

    def note(self, text: str) -> None:
        self.put("notes", [*self.data["notes"], text])

    def _flush(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, self.path)


def _cell(x: Any) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"
    return str(x)


def has_module(name: str) -> bool:
    """Whether an optional package is importable (without importing it)."""
    return importlib.util.find_spec(name) is not None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``fn()`` including the device work it queued."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def peak_mb(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak device memory above the start while ``fn()`` runs, MB (NaN on a CPU)."""
    if device.type != "cuda":
        fn()
        return math.nan
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _scans(points: int, clouds: int, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Synthetic LiDAR-like scans (``train.cost.lidar_like_batch``) with labels for the losses."""
    from train.evaluation.cost import lidar_like_batch

    batch = lidar_like_batch([points] * clouds, seed=seed, device=device)
    gen = torch.Generator().manual_seed(seed)
    batch["segment"] = torch.randint(0, NUM_CLASSES, (batch["coord"].shape[0],), generator=gen).to(device)
    return batch


# ----------------------------------------------------------------------------------------------
# cuda_tests


_OUTCOME = re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_SUMMARY = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$")


def cuda_tests(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    log = rec.path.with_suffix(".pytest.txt")
    # A test module whose optional import is missing on the GPU machine (gudhi, ripser) is reported
    # as a collection error; the other modules still run.
    cmd = [sys.executable, "-m", "pytest", *size["paths"], "-m", "cuda", "-v", "-rfE", "-p", "no:cacheprovider",
           "--continue-on-collection-errors"]
    rec.put("command", " ".join(cmd[1:]))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    finished = True
    with log.open("w", encoding="utf-8") as fh:
        try:
            done = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True,
                                  timeout=max(deadline - time.monotonic(), 1.0), check=False)
            rec.put("returncode", done.returncode)
        except subprocess.TimeoutExpired:
            finished = False
    text = log.read_text(encoding="utf-8", errors="replace")
    rec.put("output_tail", text[-3000:])
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    for line in text.splitlines():
        if m := _OUTCOME.match(line):
            outcomes[m.group(1)] = m.group(2)
        elif m := _SUMMARY.match(line):
            messages[m.group(2)] = (m.group(3) or "")[:200]
            outcomes.setdefault(m.group(2), m.group(1))  # e.g. a module that failed to import
    counts = {k: sum(v == k for v in outcomes.values()) for k in ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")}
    rec.put("counts", counts)
    rec.table("CUDA tests (pytest -m cuda)", ["finished", *counts], [["yes" if finished else "no (time box)", *counts.values()]])
    bad = [[node, kind, messages.get(node, "")] for node, kind in outcomes.items() if kind in ("FAILED", "ERROR")]
    if bad:
        rec.table("CUDA tests that failed", ["test", "outcome", "message"], bad)
    if not finished:
        rec.note("pytest -m cuda did not finish within the section's time box; the counts are the tests it reached")
    if device.type != "cuda":
        rec.note("no CUDA device: every CUDA test is skipped (smoke run)")


# ----------------------------------------------------------------------------------------------
# shared by topo_step and distill


def _models(teacher_kind: str, student_kind: str, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    from train.models import build_model

    torch.manual_seed(0)
    teacher = build_model(teacher_kind, NUM_CLASSES).to(device).eval()
    teacher.requires_grad_(False)
    student = build_model(student_kind, NUM_CLASSES).to(device).train()
    return teacher, student


class _Trainer:
    """One optimisation step of ``train.steps.distillation_step`` as ``train.loop`` runs it (AMP on CUDA)."""

    def __init__(self, teacher: torch.nn.Module, student: torch.nn.Module, device: torch.device) -> None:
        self.teacher, self.student, self.device = teacher, student, device
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.opt = torch.optim.AdamW(student.parameters(), lr=1e-4)

    def step(self, batch: dict[str, Any], settings: Any, timer: Any, seed: int) -> dict[str, float]:
        from train.engine.steps import distillation_step

        total, logs = distillation_step(self.student, self.teacher, batch, settings, self.amp, timer, topo_seed=seed,
                                        grad_scale=self.scaler.get_scale() if self.amp else 1.0)
        with timer.section("backward_optimizer"):
            self.scaler.scale(total).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.opt.zero_grad(set_to_none=True)
        timer.step_done()
        return {k: float(v) for k, v in logs.items()}


def _median_ms(xs: list[float]) -> float:
    return 1000 * statistics.median(xs) if xs else math.nan


# ----------------------------------------------------------------------------------------------
# topo_step


def topo_step(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    from train.engine.profiling import StepTimer
    from train.engine.steps import DistillSettings, warm_up_persistence

    warm_up_persistence()
    teacher, student = _models(size["teacher"], size["student"], device)
    trainer = _Trainer(teacher, student, device)
    batch = _scans(size["points"], size["clouds"], 0, device)
    # "with L_topo" runs TPS in the host workers (named: the default, auto, picks the device on a GPU)
    modes = {"without L_topo": DistillSettings(),
             "with L_topo": DistillSettings(topo=True, topo_m=size["m"], topo_tps="host")}
    if device.type == "cuda" and has_module("triton"):  # TPS on the device instead of the workers (decision 42)
        modes["with L_topo, TPS on the device"] = DistillSettings(topo=True, topo_m=size["m"], topo_tps="device")
    off = StepTimer(enabled=False)
    for s in modes.values():  # warm-up: kernels, allocator, the engine's compiled code
        trainer.step(batch, s, off, seed=0)
    times: dict[str, list[float]] = {k: [] for k in modes}
    misses = 0
    for r in range(size["steps"]):
        if time.monotonic() > deadline:
            rec.note(f"stopped after {r} of {size['steps']} rounds at the section's time box")
            break
        for name, s in modes.items():  # interleaved, so drift hits both alike
            logs: dict[str, float] = {}
            times[name].append(timed(lambda: logs.update(trainer.step(batch, s, off, seed=r)), device))
            misses += sum(int(logs.get(f"topo_h1_over_budget_{m}", 0)) for m in ("teacher", "student"))
        medians = {k: _median_ms(v) for k, v in times.items()}
        without = medians["without L_topo"]
        rec.put("step_ms", medians)
        rec.table(
            "Training step with and without the topological term (median ms per step)",
            ["clouds x points", "M", "teacher / student", "TPS", "without L_topo", "with L_topo", "L_topo cost",
             "target <= 100 ms", "rounds", "H1 budget misses (all modes)"],
            [[f"{size['clouds']} x {size['points']}", size["m"], f"{size['teacher']} / {size['student']}",
              "device" if "device" in name else "host workers", without, medians[name], medians[name] - without,
              "met" if medians[name] - without <= 100 else "not met", len(times[name]), misses]
             for name in modes if name != "without L_topo"],
        )
    profile = StepTimer(enabled=True, device=device)
    trainer.step(batch, modes["with L_topo"], profile, seed=1)
    rec.put("profile_with_topo_ms", profile.per_step_ms())
    rec.table("One step with L_topo, per section (ms; device synchronised at section boundaries)",
              ["section", "ms"], [[k, v] for k, v in profile.per_step_ms().items()])
    rec.note("L_topo cost = median step time with the term minus without it; persistence runs in the engine's "
             "worker processes while the GPU runs the student (train.steps ordering), AMP on CUDA.")


# ----------------------------------------------------------------------------------------------
# tps


def tps(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    """TPS of a training batch (decision 42), the two ways side by side: on the host
    in the persistence workers, as training does today (one copy of the features to the host, the
    clouds in parallel), and on the device in one Triton launch (``fast.tps_device``). The indices
    must be the same (both are the reference's)."""
    import numpy as np

    from benchmarks.clouds import teacher_features
    from fast.persistence import default_pool, submit_tps_diagrams

    pool = default_pool()
    pool.warm()
    m, clouds, points = size["m"], size["clouds"], size["points"]
    ends = [points * (b + 1) for b in range(clouds)]
    device_runs = device.type == "cuda" and has_module("triton")
    rows = []
    for family in size["families"]:
        rng = np.random.default_rng(7)
        feats = torch.tensor(np.concatenate([teacher_features(points, family, rng) for _ in range(clouds)]),
                             device=device)
        picked: dict[str, list[np.ndarray]] = {}

        def host() -> None:
            h = feats.cpu().numpy()
            selections, diagrams = submit_tps_diagrams([h[e - points:e] for e in ends], m, seed=0, pool=pool,
                                                       with_h1=False)
            picked["host"] = [f.result() for f in selections]
            for f in diagrams:  # drained outside the TPS time of the next round
                f.result()

        def on_device() -> None:
            from fast.tps_device import tps_device

            picked["device"] = [t.cpu().numpy() for t in tps_device(feats, ends, m, 0)]

        ways = {"host (workers)": host, **({"device (Triton)": on_device} if device_runs else {})}
        times: dict[str, list[float]] = {name: [] for name in ways}
        for fn in ways.values():
            fn()  # warm-up: the kernel's compilation, the workers' first task
        for _ in range(size["rounds"]):
            if time.monotonic() > deadline:
                break
            for name, fn in ways.items():
                times[name].append(timed(fn, device))
        same = (all(np.array_equal(a, b) for a, b in zip(picked["host"], picked["device"]))
                if "device" in picked else None)
        medians = {name: _median_ms(t) for name, t in times.items()}
        rec.put(f"tps_ms_{family}", medians)
        rows.append([family, f"{clouds} x {points}", m, medians["host (workers)"],
                     medians.get("device (Triton)", "not run"), "yes" if same else ("no" if same is False else "-"),
                     len(times["host (workers)"])])
    rec.table("TPS of one batch, host workers vs one device launch (median ms, indices compared)",
              ["family", "clouds x points", "M", "host (workers)", "device (Triton)", "same indices", "rounds"], rows)
    if not device_runs:
        rec.note("the device kernel needs a CUDA device and Triton; only the host path was timed.")
    rec.note("host: the features' copy to the host and TPS in the persistence workers, up to the last cloud's "
             "rows (as in training, where the diagrams follow in the same task); device: fast.tps_device, one "
             "launch, indices copied back. Which one training uses on CUDA is decided from this table (decision 42).")


# ----------------------------------------------------------------------------------------------
# engine_paths


def engine_paths(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    from benchmarks.clouds import batch as feature_batch
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
            medians[name] = _median_ms(times)
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
    from benchmarks.clouds import student_teacher
    from benchmarks.report_paper import PAPER_TABLE6
    from benchmarks.table6 import FAMILY, in_process_methods

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


# ----------------------------------------------------------------------------------------------
# cost


def cost(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    from train.evaluation.cost import count_flops, count_parameters, measure
    from train.models import build_model

    one = _scans(size["points"], 1, 0, device)
    many = _scans(size["points"], size["batch"], 1, device)
    out: dict[str, dict[str, float]] = {}
    for kind in (size["teacher"], size["student"]):
        if time.monotonic() > deadline:
            rec.note(f"stopped before {kind} at the section's time box")
            break
        torch.manual_seed(0)
        model = build_model(kind, NUM_CLASSES).to(device).eval()
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            latency = measure(model, one, repeats=size["repeats"], backward=False)
            batch_run = measure(model, many, repeats=max(1, size["repeats"] // 3), backward=False)
            flops = count_flops(model, one)
        out[kind] = {
            "parameters": count_parameters(model),
            "latency_ms": 1000 * latency.forward_s,
            "fps": 1 / latency.forward_s,
            "scans_per_s_batched": size["batch"] / batch_run.forward_s,
            "peak_mb": latency.peak_memory_bytes / 2**20,
            "gflops": flops["total"] / 1e9,
        }
        rec.put("models", out)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    t, s = out.get(size["teacher"]), out.get(size["student"])
    rows = [[k, f"{v['parameters']:,}", v["gflops"], v["latency_ms"], v["fps"], v["scans_per_s_batched"], v["peak_mb"]]
            for k, v in out.items()]
    if t and s:
        rows.append(["teacher / student", f"{t['parameters'] / s['parameters']:.3g}x", t["gflops"] / s["gflops"],
                     t["latency_ms"] / s["latency_ms"], s["fps"] / t["fps"],
                     s["scans_per_s_batched"] / t["scans_per_s_batched"], t["peak_mb"] / s["peak_mb"]])
    rec.table(f"Tables 8-9: teacher vs student inference, one scan of {size['points']} points "
              f"(throughput: batches of {size['batch']})",
              ["model", "parameters", "GFLOPs", "latency (ms)", "FPS", "scans/s batched", "peak memory (MB)"], rows)
    rec.note("Paper (nuScenes, flash attention): student 1.64x faster (0.0592 s vs 0.0362 s), 16.6x fewer "
             "parameters, 2.5-4.5x less CUDA memory (Table 9). Ours: minimum over repeats, autocast on CUDA.")


# ----------------------------------------------------------------------------------------------
# distill


def distill(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    from train.engine.profiling import StepTimer
    from train.engine.steps import DistillSettings, warm_up_persistence

    warm_up_persistence()
    teacher, student = _models(size["teacher"], size["student"], device)
    trainer = _Trainer(teacher, student, device)
    batches = [_scans(size["points"], size["clouds"], seed, device) for seed in range(size["distinct_batches"])]
    settings = DistillSettings(kld=True, topo=True, grad=True, topo_m=size["m"])
    timer = StepTimer(enabled=True, device=device)
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    misses = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    steps = 0
    while steps < size["steps"] and time.monotonic() < deadline:
        last = trainer.step(batches[steps % len(batches)], settings, timer, seed=steps)
        first = first or last
        misses += sum(int(last.get(f"topo_h1_over_budget_{m}", 0)) for m in ("teacher", "student"))
        steps += 1
        if steps % 10 == 0 or steps == size["steps"]:
            _report_distill(rec, size, timer, steps, time.perf_counter() - start, first, last, misses, device)
    _report_distill(rec, size, timer, steps, time.perf_counter() - start, first, last, misses, device)
    if steps < size["steps"]:
        rec.note(f"stopped after {steps} of {size['steps']} steps at the section's time box")


def _report_distill(rec: Recorder, size: dict[str, Any], timer: Any, steps: int, wall: float,
                    first: dict[str, float], last: dict[str, float], misses: int, device: torch.device) -> None:
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan
    rec.put("steps", steps)
    rec.put("profile_ms", timer.per_step_ms())
    rec.table(
        "Distillation steps (Eq. 8: L_seg + L_topo + L_grad + L_kld)",
        ["teacher / student", "clouds x points", "steps", "ms per step", "peak memory (MB)", "first loss",
         "last loss", "H1 budget misses"],
        [[f"{size['teacher']} / {size['student']}", f"{size['clouds']} x {size['points']}", steps,
          1000 * wall / max(steps, 1), peak, first.get("loss", math.nan), last.get("loss", math.nan), misses]],
    )
    rec.table("Per-section profile (mean ms per step; device synchronised at section boundaries)",
              ["section", "ms"], [[k, v] for k, v in timer.per_step_ms().items()])


# ----------------------------------------------------------------------------------------------
# accelerators


def accelerators(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    from train.evaluation.cost import measure
    from train.models import build_model

    batch = _scans(size["points"], 1, 0, device)
    cuda = device.type == "cuda"
    variants = [
        ("attention", "sdpa", {"attn_backend": "sdpa"}, None),
        ("attention", "flash-attn", {"attn_backend": "flash"},
         None if cuda and has_module("flash_attn") else "needs CUDA and the flash_attn package"),
        ("sparse conv", "ours (PyTorch)", {"conv_backend": "torch"}, None),
        ("sparse conv", "spconv", {"conv_backend": "spconv"},
         None if cuda and has_module("spconv") else "needs CUDA and the spconv package"),
    ]
    rows = []
    for what, name, overrides, missing in variants:
        if missing is not None:
            rows.append([what, name, "skipped", missing])
        elif time.monotonic() > deadline:
            rows.append([what, name, "skipped", "section time box reached"])
        else:
            try:
                torch.manual_seed(0)
                model = build_model(size["kind"], NUM_CLASSES, **overrides).to(device).eval()
                with torch.autocast(device.type, enabled=cuda):
                    report = measure(model, batch, repeats=size["repeats"], backward=True)
                rows.append([what, name, f"{1000 * report.forward_s:.3g}",
                             f"fwd+bwd {1000 * report.forward_backward_s:.3g} ms"])
            except Exception as exc:  # an installed but broken accelerator is a result, not a crash
                rows.append([what, name, "error", f"{type(exc).__name__}: {exc}"[:300]])
        rec.table(f"Optional accelerators, {size['kind']} preset, one scan of {size['points']} points (ms, minimum)",
                  ["component", "backend", "forward (ms)", "detail"], rows)


# ----------------------------------------------------------------------------------------------
# step_kernels


def step_kernels(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.step_ops import build_rig, measurements

    cases = [("paper presets", size["paper"], "student CE step"),
             ("paper presets", size["paper"], "KD + saliency step"),
             ("README demo, teacher stage", size["demo"], "student CE step")]
    rows: list[list[Any]] = []
    rigs: dict[str, Any] = {}
    for label, preset, name in cases:
        if time.monotonic() > deadline:
            rec.note(f"stopped before {label} / {name} at the section's time box")
            break
        rig = rigs.get(label) or build_rig(preset, device, amp=device.type == "cuda")
        rigs = {label: rig}  # one rig on the device at a time
        step = measurements(rig)[name]
        for _ in range(3):  # warm-up: kernels, allocator, optimiser state
            step()
        times = [timed(step, device) for _ in range(size["steps"]) if time.monotonic() < deadline]
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            step()
            sync(device)
        events = prof.key_averages()
        kernels = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        busy_ms = sum(e.self_device_time_total for e in events) / 1000
        ms = _median_ms(times)
        what = "teacher-demo trained (CE + Lovasz)" if label.startswith("README") else name
        rows.append([label, what, f"{preset['clouds']} x {preset['points']}", ms, 1000 / ms, kernels,
                     100 * busy_ms / ms if device.type == "cuda" else math.nan, len(times)])
        rec.put("steps", rows)
        rec.table("Training steps on the device: time, kernels launched, GPU busy (torch.profiler, one step)",
                  ["batch", "step", "clouds x points", "ms per step (median)", "steps/s", "kernels per step",
                   "GPU busy %", "rounds"], rows)
    rec.note("Before (one H100, commit 7965517): paper-preset KD-only step 382 ms, 17,528 kernels, 44% busy; "
             "README demo ~2 steps/s. Targets: CE step <= 150 ms with the GPU >= 80% busy; the demo >= 5x faster "
             "than on a 2-core CPU. AMP on CUDA; the step, update and log read of train.loop (benchmarks/step_ops.py).")
    if time.monotonic() < deadline:
        _host_work_beside(size, device, rec)
    else:
        rec.note("host work not measured: the section's time box ran out")


def _host_work_beside(size: dict[str, Any], device: torch.device, rec: Recorder) -> None:
    """The host's part of the step (``benchmarks.host_work``) beside the device step above: the loader's
    and the training process's parts on this node's CPU, the time outside ops on this device, and the
    step they imply on this node and on 8- and 16-core-per-GPU nodes (decision 47)."""
    from benchmarks import host_work

    work_size = host_work.PAPER if size["paper"]["teacher"] == "teacher" else host_work.SMOKE
    parts = {**host_work.loader_parts({**work_size, "rounds": 3 if work_size is host_work.PAPER else 1}),
             **host_work.outside_ops_parts(work_size, device), **host_work.pool_parts(work_size)}
    rec.put("host_work", parts)
    rec.table("Host work per step on this node's CPU (core-ms; benchmarks/host_work.py)", ["part", "ms"],
              [[name, 1000 * value] for name, value in parts.items() if name.endswith("_s")])
    cores = os.cpu_count() or 2
    rows = []
    for topo in (False, True):
        work = host_work.step_work(parts, "nuscenes", work_size["scans"], topo, work_size["clouds"],
                                   work_size["diagrams"], host_tps=False)
        rows.append(["KD + saliency" + (" + L_topo (TPS on the GPU)" if topo else ""),
                     *(1000 * host_work.implied_step_s(work, c) for c in (8, 16, max(cores, 2)))])
    rec.table("Shortest step the host allows (ms): training process on one core, loader and persistence pool "
              "on the rest", ["step", "8 cores per GPU", "16 cores per GPU", f"this node ({cores} cores)"], rows)


SECTIONS: dict[str, Callable[[dict[str, Any], torch.device, Recorder, float], None]] = {
    "cuda_tests": cuda_tests,
    "topo_step": topo_step,
    "tps": tps,
    "engine_paths": engine_paths,
    "cost": cost,
    "distill": distill,
    "table6": table6,
    "accelerators": accelerators,
    "step_kernels": step_kernels,
}
"""Section name -> function, in the order the campaign runs them (most important first)."""
