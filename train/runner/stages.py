"""The stages of one ``python -m train.run``: each trained (or, on resume, reused) and evaluated,
then the results table, the reports and the run's pictures.

:func:`run` is what every process of the command runs (:mod:`train.run` resolves the options,
checks the inputs and starts the processes); ``python -m train.study`` trains and scores its units
with the same :func:`train_or_reuse` and :func:`evaluate_split`.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from train.config import RunConfig
from train.data.validation import BadScanError
from train.engine.loop import FINAL, distill_settings, load_frozen_teacher, model_spec, train_stage, unlabelled_reads
from train.engine.profiling import StepTimer
from train.engine.steps import start_persistence, step_clouds
from train.evaluation.cost import count_parameters
from train.evaluation.evaluate import evaluate, inference_latency_ms, stage_result, write_report
from train.evaluation.validation import validator
from train.options.resolve import save_config
from train.runner.backends import backends_line
from train.runner.datasets import SplitData, prepare_splits
from train.runtime.checkpoint_errors import CheckpointError, CheckpointWriteError
from train.runtime.distributed import DistInfo, barrier
from train.runtime.files import NoRoomError
from train.runtime.logging_utils import progress

# Failures whose message says what to fix (a missing dataset or checkpoint, an unreadable scan or
# checkpoint, a full disk while a checkpoint or any other output is written): printed as one error
# line, not a traceback.
RUN_ERRORS: tuple[type[Exception], ...] = (FileNotFoundError, BadScanError, CheckpointError, CheckpointWriteError,
                                           NoRoomError, FloatingPointError)


def stage_label(cfg: RunConfig, stage: str) -> str:
    """Column name of a stage in the results table: the loss terms it trained with ("pseudo": L_seg
    on the camera's pseudo-labels too, decision 65)."""
    if stage == "teacher":
        return "teacher"
    s = distill_settings(cfg, stage)
    terms = ["seg"] + ["pseudo"] * s.pseudo_labels + [t for t in ("kld", "topo", "grad") if s.active(t)]
    return "student " + "+".join(terms)


def train_or_reuse(cfg: RunConfig, stage: str, out_dir: Path, data: SplitData, info: DistInfo,
                   teacher_ckpt: Path | None, timer: StepTimer,
                   on_validation: Callable[[int, dict[str, float]], None] | None = None) -> tuple[torch.nn.Module, str]:
    """Train ``stage`` into ``out_dir`` (resuming a killed run with ``--resume``), or, on resume of a
    finished stage, reload its final weights. Returns the model and its preset name.
    ``on_validation``: see :func:`train.engine.loop.train_stage`."""
    spec = model_spec(cfg, "teacher" if stage == "teacher" else "student", data.num_classes, info.device)
    final = out_dir / FINAL
    if cfg.resume and final.is_file():
        model, _ = load_frozen_teacher(final, info.device)  # finished earlier: reuse its weights
        return model, spec.preset
    teacher = None
    settings = distill_settings(cfg, stage)
    if settings.uses_teacher and not settings.camera:  # the camera teacher is the batch's (decision 61)
        if teacher_ckpt is None:
            raise ValueError(f"stage {stage} needs --teacher-checkpoint")
        # a Pointcept checkpoint (spec H) is built as the --teacher-preset for these classes
        teacher_spec = model_spec(cfg, "teacher", data.num_classes, info.device)
        teacher, _ = load_frozen_teacher(teacher_ckpt, info.device, pointcept=teacher_spec)
    validate = validator(data.val_views(False), cfg, data.num_classes, info.device, data.collate)
    return train_stage(cfg, stage, out_dir, data.training_set(cfg, stage), data.collate, spec, info, teacher, timer,
                       validate, on_validation), spec.preset


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
    unlabelled = unlabelled_summary(cfg, stage, data, info)
    if unlabelled is not None:
        result["unlabelled_scans"] = unlabelled
    settings = distill_settings(cfg, stage)
    if settings.camera and settings.uses_teacher:
        result["camera_teacher"] = data.camera
    return result, model


def unlabelled_summary(cfg: RunConfig, stage: str, data: SplitData, info: DistInfo) -> dict[str, Any] | None:
    """The unlabelled scans ``stage`` trained on: split, ratio, entries read, distinct scans read and
    the split's size (None for a stage without an unlabelled split; decision 57)."""
    reads = unlabelled_reads(cfg, data.training_set(cfg, stage), info.world_size)
    if reads is None:
        return None
    return {"split": cfg.unlabelled_split, "ratio": cfg.unlabelled_ratio, "read": reads[0], "distinct": reads[1],
            "in_split": len(data.unlabelled)}


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
    stages = cfg.stages()
    if info.is_main:  # one line, with or without --progress
        print(backends_line(cfg, stages, info.device), flush=True)
        if cfg.teacher == "images" and cfg.stage == "all":
            print(f"--teacher images: --stage all trains {', '.join(stages)} (no teacher stage: the camera predictions "
                  f"of {cfg.image_predictions} are the teacher)", flush=True)
    if any(distill_settings(cfg, stage).active("topo") for stage in stages):
        # the persistence workers start now, and on a new machine compile, during the earlier stages
        start_persistence(cfg.topo_workers, step_clouds(cfg.batch_size, info.world_size))
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
        lines = "".join(unlabelled_line(label, r) + camera_line(label, r) for label, r in results.items())
        table = write_report(out / "results", results, data.class_names, header=header,
                             footer=lines.lstrip("\n") + "\n" if lines else "")
        if lines:
            table += "\n" + lines
        print("\n" + header + "\n\n" + table + f"\n\nreports and logs in {out}/", flush=True)
        if cfg.plots:
            write_run_plots(cfg, out, models, results, data, info)
    return results


def unlabelled_line(label: str, result: dict[str, Any]) -> str:
    """The line under the results table that says how many unlabelled scans a stage read ('' if none)."""
    u = result.get("unlabelled_scans")
    if u is None:
        return ""
    return (f"\n{label}: trained on {u['read']} unlabelled scans of split {u['split']!r} (ratio {u['ratio']:g}; "
            f"{u['distinct']} distinct of its {u['in_split']})")


def camera_line(label: str, result: dict[str, Any]) -> str:
    """The line under the results table that says how much of the scans the camera teacher covered
    ('' for a stage without it; decision 61)."""
    c = result.get("camera_teacher")
    if c is None:
        return ""
    share = 100 * c["seen_per_scan"] / max(c["points_per_scan"], 1)
    return (f"\n{label}: camera teacher {c['predictions']}: a camera sees {c['seen_per_scan']:.0f} of "
            f"{c['points_per_scan']:.0f} points per scan on average ({share:.1f}%; {c['scans_counted']} "
            "training scans)")


def write_run_plots(cfg: RunConfig, out: Path, models: dict[str, torch.nn.Module], results: dict[str, dict[str, Any]],
                    data: SplitData, info: DistInfo) -> None:
    """The run's pictures (``train.evaluation.plots``) from the first validation scan; rank 0 only."""
    from train.engine.steps import to_device
    from train.evaluation.plots import write_plots

    scan = to_device(data.collate([data.val_views(False)[0][0]]), info.device)
    t0 = time.perf_counter()
    written = write_plots(out, models, {s: stage_label(cfg, s) for s in models}, results, scan, data.class_names,
                          cfg.topo_m, cfg.topo_normalize)
    if cfg.progress:
        print(f"pictures ({time.perf_counter() - t0:.1f} s): " + ", ".join(p.name for p in written), flush=True)
