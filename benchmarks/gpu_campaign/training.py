"""The campaign's sections on training steps: ``step_kernels`` (the student CE, KD + saliency and
full-objective steps of the paper presets, each timed as ``train.engine.loop`` runs it, with the batch
plan built ahead as the loader's workers build it: wall time, kernel time and GPU busy share),
``topo_step`` (the topological term's cost inside a step), ``topo_split`` (that cost split into
its parts) and ``distill`` (a few hundred steps of
Eq. 8 with their profile)."""
from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any

import torch

from benchmarks.gpu_campaign.record import NUM_CLASSES, Recorder, has_module, median_ms, profiled, scans, timed

if TYPE_CHECKING:
    from fast.persistence import PersistencePool

# shared by topo_step and distill


def _models(teacher_kind: str, student_kind: str, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    from train.models import build_model

    torch.manual_seed(0)
    teacher = build_model(teacher_kind, NUM_CLASSES).to(device).eval()
    teacher.requires_grad_(False)
    student = build_model(student_kind, NUM_CLASSES).to(device).train()
    return teacher, student


class _Trainer:
    """One optimisation step of ``train.engine.steps.distillation_step`` as ``train.engine.loop`` runs it (AMP on CUDA)."""

    def __init__(self, teacher: torch.nn.Module, student: torch.nn.Module, device: torch.device) -> None:
        self.teacher, self.student, self.device = teacher, student, device
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.opt = torch.optim.AdamW(student.parameters(), lr=1e-4)

    def step(self, batch: dict[str, Any], settings: Any, timer: Any, seed: int) -> dict[str, float]:
        total, logs = self.losses(batch, settings, timer, seed)
        with timer.section("backward_optimizer"):
            self.update(total)
        timer.step_done()
        return {k: float(v) for k, v in logs.items()}

    def losses(self, batch: dict[str, Any], settings: Any, timer: Any,
               seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """The step's forward passes and losses (``distillation_step``)."""
        from train.engine.steps import distillation_step

        return distillation_step(self.student, self.teacher, batch, settings, self.amp, timer, topo_seed=seed,
                                 grad_scale=self.scaler.get_scale() if self.amp else 1.0)

    def update(self, total: torch.Tensor) -> None:
        """The step's backward pass and optimiser update."""
        self.scaler.scale(total).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)



# ----------------------------------------------------------------------------------------------
# topo_step


def topo_step(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    from train.engine.profiling import StepTimer
    from train.engine.steps import DistillSettings, warm_up_persistence

    warm_up_persistence()
    teacher, student = _models(size["teacher"], size["student"], device)
    trainer = _Trainer(teacher, student, device)
    batch = scans(size["points"], size["clouds"], 0, device)
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
        medians = {k: median_ms(v) for k, v in times.items()}
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
             "worker processes while the GPU runs the student (train.engine.steps ordering), AMP on CUDA.")


def _training_pool(scans: int) -> PersistencePool:
    """The persistence pool a training process of ``scans`` scans a step starts (``train.engine.steps``'s
    default: one worker per cloud of a step, the cores shared among them as threads, decision 89)."""
    from fast.persistence import default_pool
    from train.engine.steps import start_persistence, step_clouds

    start_persistence(None, step_clouds(scans, 1))
    return default_pool()


def topo_split(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    """Where L_topo's time goes in a full-objective step (``benchmarks.cpu.topo_split``): the full
    objective (L_seg + L_kld + L_grad + L_topo, TPS where ``--topo-tps auto`` puts it) against the
    KD + saliency step on a batch whose plan was built ahead (as ``step_kernels``), rounds
    interleaved; the parts on the training thread, their sum against the measured cost, and the
    persistence workers' times beside them."""
    from benchmarks.cpu.step_ops import build_rig
    from benchmarks.cpu.topo_split import measure_split, split_rows
    from train.engine.steps import DistillSettings, warm_up_persistence

    pool = _training_pool(size["clouds"])
    warm_up_persistence()
    # the batch plan built ahead, as the loader's workers hand it over in training (decision 47)
    rig = build_rig(size, device, amp=device.type == "cuda", planned=True)
    trainer, batch = _Trainer(rig.teacher, rig.student, device), rig.batch
    kd = DistillSettings(kld=True, grad=True)
    full = DistillSettings(kld=True, grad=True, topo=True, topo_m=size["m"])
    split = measure_split(trainer, batch, full, kd, size["rounds"], deadline)
    rec.put("topo_split", split)
    critical, beside = split_rows(split)
    label = f"{size['clouds']} x {size['points']}, M = {size['m']}, {pool.workers} workers of {pool.threads} threads"
    rec.table(f"L_topo per step, split on the training thread ({label}; median ms of {split['rounds']} rounds)",
              ["part", "ms"], critical)
    rec.table("Beside the critical path (median ms)", ["part", "ms"], beside)
    rec.note(f"full objective {split['step_with_ms']:.1f} ms against KD + saliency {split['step_without_ms']:.1f} "
             f"ms per step: {split['step_with_ms'] / split['step_without_ms']:.2f}x (target <= 1.5x); "
             f"L_topo per step: {split['measured_ms']:.0f} ms (target <= 100 ms).")


# ----------------------------------------------------------------------------------------------
# distill


def distill(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    from train.engine.profiling import StepTimer
    from train.engine.steps import DistillSettings, warm_up_persistence

    warm_up_persistence()
    teacher, student = _models(size["teacher"], size["student"], device)
    trainer = _Trainer(teacher, student, device)
    batches = [scans(size["points"], size["clouds"], seed, device) for seed in range(size["distinct_batches"])]
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
# step_kernels


def step_kernels(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    """Each step of :data:`STEP_CASES` as ``train.engine.loop`` runs it (``benchmarks.cpu.step_ops``, AMP on
    CUDA) on a batch whose plan was built ahead, on the host, and uploaded with the batch (as the
    loader's workers hand it over, decision 47): none of the plan's work is in the timed step.
    Wall time per step (median, synchronised), the kernel time of one profiled step, the GPU's
    busy share (kernel time / wall time) and the peak memory allocated over the timed steps (models,
    optimiser state, batch and activations: what a GPU needs for this step)."""

    from benchmarks.cpu.step_ops import build_rig, measurements
    from train.engine.steps import warm_up_persistence

    _training_pool(max(size[label]["clouds"] for label, _ in STEP_CASES))
    warm_up_persistence()  # the full objective's persistence workers and the calling process's kernels
    rows: list[list[Any]] = []
    rig, rig_label = None, ""
    for label, name in STEP_CASES:
        if time.monotonic() > deadline:
            rec.note(f"stopped before {label} / {name} at the section's time box")
            break
        preset = size[label]
        if rig_label != label:
            rig = None  # one rig on the device at a time
            if device.type == "cuda":
                torch.cuda.empty_cache()
            rig, rig_label = build_rig(preset, device, amp=device.type == "cuda", planned=True), label
        step = measurements(rig, topo_m=size["m"])[name]
        for _ in range(3):  # warm-up: kernels (TPS's compilation), allocator, optimiser state, workers
            step()
        if device.type == "cuda":  # the step's whole footprint: models, optimiser state, batch, activations
            torch.cuda.reset_peak_memory_stats(device)
        times = [timed(step, device) for _ in range(size["steps"]) if time.monotonic() < deadline]
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan
        _, events = profiled(step, device)
        kernels = sum(e.count for e in events)
        kernel_ms = sum(e.self_device_time_total for e in events) / 1000
        ms = median_ms(times)
        cuda = device.type == "cuda"
        rows.append([label, name, f"{preset['clouds']} x {preset['points']}", ms, 1000 / ms,
                     kernel_ms if cuda else math.nan, kernels, 100 * kernel_ms / ms if cuda else math.nan,
                     peak, len(times)])
        rec.put("steps", rows)
        rec.table("Training steps on the device as train.engine.loop runs them, batch plan built ahead: wall time, kernel "
                  "time and GPU busy share (torch.profiler, one step)",
                  ["batch", "step", "clouds x points", "ms per step (median)", "steps/s", "kernel ms", "kernels",
                   "GPU busy %", "peak memory (MB)", "rounds"], rows)
    rec.note("Before (H200, 2026-11-26, docs/notes/gpu-step-kernels.md, plan built inside the step): KD + saliency "
             "164 ms of kernel time, the full objective 1,037 ms of which TPS on the device 857 ms. Targets: CE "
             "step <= 150 ms with the GPU >= 80% busy; the topological term's kernels near 10 ms. Kernel time "
             "counts kernels on every stream (TPS runs on a side stream), so it can exceed the wall time.")
    if time.monotonic() < deadline:
        _host_work_beside(size, device, rec)
    else:
        rec.note("host work not measured: the section's time box ran out")


STEP_CASES = (("paper", "student CE step"), ("paper", "KD + saliency step"), ("paper", "full objective step"),
              ("demo", "student CE step"))
"""(preset of the section's sizes, step of ``benchmarks.cpu.step_ops.measurements``) of ``step_kernels``."""


def _host_work_beside(size: dict[str, Any], device: torch.device, rec: Recorder) -> None:
    """The host's part of the step (``benchmarks.cpu.host_work``) beside the device step above: the loader's
    and the training process's parts on this node's CPU, the time outside ops on this device, and the
    step they imply on this node and on 8- and 16-core-per-GPU nodes (decision 47)."""
    from benchmarks.cpu import host_work

    work_size = host_work.PAPER if size["paper"]["teacher"] == "teacher" else host_work.SMOKE
    parts = {**host_work.loader_parts({**work_size, "rounds": 3 if work_size is host_work.PAPER else 1}),
             **host_work.outside_ops_parts(work_size, device), **host_work.pool_parts(work_size)}
    rec.put("host_work", parts)
    rec.table("Host work per step on this node's CPU (core-ms; benchmarks/cpu/host_work.py)", ["part", "ms"],
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

