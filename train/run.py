"""``python -m train.run``: train the PTv3 teacher, distill it into the student, evaluate, report.

Stages (paper Sec. 3 and Table 5): ``teacher`` (L_seg = CE + Lovasz), ``student``
(L_seg only), ``kd`` (+ l_kld L_kld), ``distill`` (+ l_topo L_topo + l_grad L_grad), ``all`` (the
teacher, then the three students distilled from it, then one table). Each stage writes its
checkpoints, CSV/TensorBoard logs and an evaluation report (JSON + markdown) under
``<out>/<stage>/``; ``all`` also writes ``<out>/results.{json,md}`` and prints the table, and the
run's pictures (``train.plots``: diagrams, bird's-eye view, curves, per-class IoU) unless
``--no-plots``. The resolved configuration is saved as ``<out>/config.yaml``.

``--dataset synthetic`` (the README's main command) first generates the synthetic LiDAR set in the
Waymo layout if it is not cached, and uses a CPU demo budget (see ``train.config.SYNTHETIC_DEMO``)
and the ``teacher-demo`` / ``student-demo`` presets on a CPU. Under ``torchrun`` every process runs
this same entry point (DistributedDataParallel, see :mod:`train.distributed`).
"""
from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning. Measured here on the loaded 2-core machine: a
# teacher-demo step took ~40 s with torch's default (2 spinning threads) and ~4 s with one thread;
# with this policy 2 threads run as fast as one (1.4 s vs 1.3 s with one competing process). Must
# be set before torch starts its thread pool, i.e. before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __name__ == "__main__":  # --help and malformed flags are answered before torch is imported (decision 38)
    from train.config import build_parser

    build_parser().parse_args()

import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from train.checkpoint_errors import CheckpointError, CheckpointWriteError
from train.config import STAGE_ORDER, RunConfig, resolve, save_config
from train.data.validation import BadScanError
from train.datasets import SplitData, prepare_splits
from train.distributed import DistInfo, barrier, launch
from train.cost import count_parameters
from train.evaluate import evaluate, inference_latency_ms, stage_result, write_report
from train.logging_utils import progress
from train.loop import FINAL, distill_settings, load_frozen_teacher, model_spec, train_stage
from train.preemption import parse_signals
from train.profiling import StepTimer
from train.steps import start_persistence

# Failures whose message says what to fix (a missing dataset or checkpoint, an unreadable scan or
# checkpoint, a full disk): printed as one error line, not a traceback.
RUN_ERRORS: tuple[type[Exception], ...] = (FileNotFoundError, BadScanError, CheckpointError, CheckpointWriteError,
                                           FloatingPointError)


def stage_label(cfg: RunConfig, stage: str) -> str:
    """Column name of a stage in the results table: the loss terms it trained with."""
    if stage == "teacher":
        return "teacher"
    s = distill_settings(cfg, stage)
    terms = ["seg"] + [t for t in ("kld", "topo", "grad") if s.active(t)]
    return "student " + "+".join(terms)


def train_or_reuse(cfg: RunConfig, stage: str, out_dir: Path, data: SplitData, info: DistInfo,
                   teacher_ckpt: Path | None, timer: StepTimer,
                   on_validation: Callable[[int, dict[str, float]], None] | None = None) -> tuple[torch.nn.Module, str]:
    """Train ``stage`` into ``out_dir`` (resuming a killed run with ``--resume``), or, on resume of a
    finished stage, reload its final weights. Returns the model and its preset name.
    ``on_validation``: see :func:`train.loop.train_stage`."""
    spec = model_spec(cfg, "teacher" if stage == "teacher" else "student", data.num_classes, info.device)
    final = out_dir / FINAL
    if cfg.resume and final.is_file():
        model, _ = load_frozen_teacher(final, info.device)  # finished earlier: reuse its weights
        return model, spec.preset
    teacher = None
    if distill_settings(cfg, stage).uses_teacher:
        if teacher_ckpt is None:
            raise ValueError(f"stage {stage} needs --teacher-checkpoint")
        # a Pointcept checkpoint (spec H) is built as the --teacher-preset for these classes
        teacher_spec = model_spec(cfg, "teacher", data.num_classes, info.device)
        teacher, _ = load_frozen_teacher(teacher_ckpt, info.device, pointcept=teacher_spec)
    return train_stage(cfg, stage, out_dir, data.train, data.collate, spec, info, teacher, timer,
                       data.val_views(False), on_validation), spec.preset


def evaluate_split(cfg: RunConfig, model: torch.nn.Module, data: SplitData, split: str,
                   info: DistInfo, per_scan: bool = False) -> dict[str, Any]:
    """Per-class IoU, mIoU and parameter count of ``model`` on ``split`` ("val" or "test"); with
    ``per_scan`` also every scan's counts (``scans``: ``ScanIoU.scan_counts``)."""
    views = data.eval_views(split, cfg.tta)
    limit = min(len(views[0]), cfg.eval_max_scans) if cfg.eval_max_scans else len(views[0])
    bar = progress(total=-(-limit // info.world_size), desc=f"{'eval ' + split:>8}",
                   enabled=info.is_main and cfg.progress, every_steps=cfg.progress_steps,
                   every_seconds=cfg.progress_seconds)
    acc = evaluate(model, views, data.num_classes, info.device, data.collate, cfg.eval_max_scans,
                   cfg.num_workers, bar)
    bar.close()
    result = stage_result(acc, count_parameters(model, trainable_only=False))  # a reused stage comes back frozen
    return {**result, "scans": acc.scan_counts()} if per_scan else result


def run_stage(cfg: RunConfig, stage: str, data: SplitData, info: DistInfo, teacher_ckpt: Path | None,
              timer: StepTimer) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train (or, on resume, reuse a finished) stage, then evaluate it on the validation split.

    Returns the result (latency still unset, see :func:`run`) and the trained model."""
    model, preset = train_or_reuse(cfg, stage, Path(cfg.out) / stage, data, info, teacher_ckpt, timer)
    result = evaluate_split(cfg, model, data, "val", info)
    result["preset"] = preset
    return result, model


def keep_caches_under(out: Path) -> None:
    """Point the caches a run creates under ``out`` unless the user chose a place, so a run writes
    nothing outside its output folder: torch's compile cache (``<out>/torch_cache``; importing
    ``torch._dynamo``, which deterministic mode and building an optimiser do, creates it in the
    system temp dir by default) and matplotlib's font cache (``<out>/matplotlib``; the run's
    pictures would otherwise write it under ``~/.cache``)."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(out.absolute() / "torch_cache"))
    os.environ.setdefault("MPLCONFIGDIR", str(out.absolute() / "matplotlib"))


def run(cfg: RunConfig, info: DistInfo) -> dict[str, dict[str, Any]]:
    """Run the configured stage(s); returns {table column: result}."""
    out = Path(cfg.out)
    data = prepare_splits(cfg, info)  # a missing dataset fails here, before anything is written
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    barrier()
    stages = STAGE_ORDER if cfg.stage == "all" else (cfg.stage,)
    if info.is_main:  # one line, with or without --progress
        print(backends_line(cfg, stages, info.device), flush=True)
    if any(distill_settings(cfg, stage).active("topo") for stage in stages):
        # the persistence workers start now, and on a new machine compile, during the earlier stages
        start_persistence(cfg.topo_workers)
    teacher_ckpt = Path(cfg.teacher_checkpoint) if cfg.teacher_checkpoint else None
    timer = StepTimer(cfg.profile, info.device)
    results: dict[str, dict[str, Any]] = {}
    models: dict[str, torch.nn.Module] = {}
    t0 = time.perf_counter()
    for i, stage in enumerate(stages, 1):
        if info.is_main and cfg.progress:
            kind = "teacher" if stage == "teacher" else "student"
            print(f"[{i}/{len(stages)}] {stage_label(cfg, stage)} ({model_spec(cfg, kind, 1, info.device).preset})", flush=True)
        results[stage_label(cfg, stage)], models[stage] = run_stage(cfg, stage, data, info, teacher_ckpt, timer)
        if stage == "teacher" and cfg.stage == "all":
            teacher_ckpt = out / "teacher" / FINAL
    latency = inference_latency_ms({stage_label(cfg, s): m for s, m in models.items()}, data.val_views(False)[0],
                                   info.device, data.collate, cfg.latency_runs)
    ce_label = stage_label(cfg, "student")
    for label, result in results.items():
        result["latency_ms"] = latency[label]
        if ce_label in results and label not in (ce_label, "teacher"):
            result["miou_vs_ce"] = result["miou"] - results[ce_label]["miou"]
    if info.is_main:
        for stage in stages:
            label = stage_label(cfg, stage)
            write_report(out / stage / "eval", {label: results[label]}, data.class_names,
                         header=f"# {label} on {cfg.dataset} val")
        header = (f"# {cfg.dataset} validation: per-class IoU %, mIoU %, parameters, latency "
                  f"({info.device.type}, {time.perf_counter() - t0:.0f} s total)")
        table = write_report(out / "results", results, data.class_names, header=header)
        print("\n" + header + "\n\n" + table + f"\n\nreports and logs in {out}/", flush=True)
        if cfg.plots:
            write_run_plots(cfg, out, models, results, data, info)
    return results


def backends_line(cfg: RunConfig, stages: Sequence[str], device: torch.device) -> str:
    """The one line a run prints at its start: the sparse convolution, attention, TPS and
    DataLoader workers that ``stages`` of ``cfg`` on ``device`` use, decided as the models
    (``train.models``), the steps (``fast.tps.auto_tps_place``) and ``--num-workers`` decide them."""
    from fast.tps import auto_tps_place
    from train.models import PRESETS
    from train.models.attention import uses_flash
    from train.models.sparse_conv import uses_spconv

    cuda = device.type == "cuda"
    convs, attentions = set(), set()
    for kind in dict.fromkeys("teacher" if s == "teacher" else "student" for s in stages):
        overrides = model_spec(cfg, kind, 1, device).overrides
        convs.add("spconv" if uses_spconv(overrides.get("conv_backend", "auto"), cuda) else "ours (torch)")
        flash = uses_flash(overrides.get("attn_backend", "auto"), cuda, half=cfg.amp)  # AMP: fp16/bf16 on CUDA
        attentions.add("flash-attn" if flash else "PyTorch SDPA")
    if not any(distill_settings(cfg, s).active("topo") for s in stages):
        tps = "not used (no topological term)"
    elif cfg.topo_tps == "auto":
        teacher = model_spec(cfg, "teacher", 1, device)
        width = {**PRESETS[teacher.preset], **teacher.overrides}["dec_channels"][0]
        place, why = auto_tps_place(device, width)
        tps = f"{place} ({why})"
    else:
        tps = f"{cfg.topo_tps} (--topo-tps {cfg.topo_tps})"
    return (f"backends on {device.type}: convolution {' / '.join(sorted(convs))}; attention "
            f"{' / '.join(sorted(attentions))}; TPS {tps}; DataLoader workers {cfg.num_workers} per process")


def write_run_plots(cfg: RunConfig, out: Path, models: dict[str, torch.nn.Module], results: dict[str, dict[str, Any]],
                    data: SplitData, info: DistInfo) -> None:
    """The run's pictures (``train.plots``) from the first validation scan; rank 0 only."""
    from train.plots import write_plots
    from train.steps import to_device

    scan = to_device(data.collate([data.val_views(False)[0][0]]), info.device)
    t0 = time.perf_counter()
    written = write_plots(out, models, {s: stage_label(cfg, s) for s in models}, results, scan, data.class_names,
                          cfg.topo_m, cfg.topo_normalize)
    if cfg.progress:
        print(f"pictures ({time.perf_counter() - t0:.1f} s): " + ", ".join(p.name for p in written), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: options resolved and every input checked (:func:`train.preflight.check_inputs`)
    before any work starts, by the launching process only; a refusal is one line, exit code 2."""
    from train.distributed import SPAWNED_ENV
    from train.preflight import check_inputs, refuse

    try:
        cfg = resolve(argv)
        if SPAWNED_ENV not in os.environ:  # the launching process checked them for its ranks
            check_inputs(cfg)
    except (ValueError, FileNotFoundError) as err:
        return refuse(f"train.run: error: {err}")
    keep_caches_under(Path(cfg.out))
    return launch(main, sys.argv[1:] if argv is None else argv, cfg.procs, cfg.device, cfg.deterministic,
                  lambda info: run(cfg, info), "train.run", RUN_ERRORS, parse_signals(cfg.preempt_signal))


if __name__ == "__main__":
    sys.exit(main())
