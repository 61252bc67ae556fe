"""Training loop of one stage (teacher, student, kd, distill) with checkpoints, resume and DDP.

Per iteration: one step of :mod:`train.engine.steps`, AdamW + OneCycleLR stepped per iteration
(:mod:`train.engine.optim`), optional gradient clipping, AMP on CUDA only; an AMP overflow or a NaN/Inf
loss skips the update and is counted, and ``--max-bad-steps`` NaN/Inf steps in a row stop the run
(:mod:`train.engine.update`, decision 23). Every ``--eval-every-epochs`` epochs the model is evaluated on the
validation split by the pass the caller hands in (:func:`train.evaluation.validation.validator`: the
engine does not import the evaluation, decision 49), and rank 0 logs its mIoU in ``val_log.csv``;
the pass puts back every random-number state and the model's mode, so the weights at the end are
those of a run without it (decision 35). Checkpoints
(:mod:`train.runtime.checkpoint`) are written atomically at the end of every epoch and, optionally, every
K iterations; ``resume`` continues from the last one exactly: the data order and augmentation of an
epoch are functions of (seed, epoch, sample index) (``ResumableDistributedSampler`` and the
dataset's per-sample generator), the sampler restarts mid-epoch where the checkpoint was taken,
and every process gets back its own random-number states, saved by each and gathered into the
checkpoint by rank 0 (decision 37; a resume with another number of processes re-shards the rest
of the epoch, decision 46). A preemption signal stops every process after the same step with one
checkpoint (:mod:`train.runtime.preemption`), as ``--checkpoint-minutes`` adds timed ones. The
checkpoint a save replaces is kept as ``checkpoint_prev.pt``: a resume whose latest file is unreadable (truncated, corrupt) falls back to
it with a warning, and a stray temporary file of a killed write is deleted. With
``--skip-bad-scans`` the bad scans a batch met are warned about and counted (decision 25). Under
torchrun the model is wrapped in DistributedDataParallel and only rank 0 logs, draws progress bars
and writes files.
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from train.config import MIXED_STAGES, RunConfig
from train.data.base import label_frequencies
from train.data.mixed import MixedSplit
from train.data.validation import BadScanError
from train.engine.input_pipeline import EpochDataset, EpochSampler, device_batches, planned_collate
from train.engine.losses import class_weights
from train.engine.optim import build_optimizer, build_scheduler
from train.engine.profiling import StepTimer
from train.engine.steps import (DistillSettings, distillation_step, segmentation_step, start_persistence, step_clouds,
                                warm_up_persistence)
from train.engine.update import (NONFINITE, OVERFLOW, SkipCounter, apply_update, buffer_snapshot, make_scaler,
                                 restore_buffers)
from train.models.pointcept import from_pointcept, is_pointcept_state_dict, pointcept_overrides, read_model_config
from train.runtime.checkpoint import (CheckpointError, RefusedObject, load_latest, native_checkpoint, rank_state,
                                      read_weights, remove_stale_temporaries, restore_training_state, save_checkpoint,
                                      unwrap)
from train.runtime.checkpoint_errors import ResumeMismatchError, one_line
from train.runtime.distributed import (DistInfo, ResumableDistributedSampler, all_gather_objects, all_reduce_sum,
                                       barrier, broadcast_buffers)
from train.runtime.logging_utils import MetricLogger, progress, read_scalars
from train.runtime.preemption import CheckpointClock, Preempted, StepVote, parse_signals
from train.runtime.preemption import requested as preempted
from train.runtime.whole_files import write_text

LAST = "checkpoint_last.pt"
PREV = "checkpoint_prev.pt"  # the one LAST replaced: the fallback of a resume
UNREADABLE = "checkpoint_last.unreadable.pt"  # an unreadable LAST a resume passed over
FINAL = "model_final.pt"
LOSS_TERMS = ("loss", "seg", "kld", "topo", "grad")  # the loss terms the progress shows, of those a step logs
PREFETCH = 4  # batches each DataLoader worker prepares ahead: a slow scan does not stall the step
_LOG = logging.getLogger(__name__)


@dataclass
class ModelSpec:
    """How to rebuild a model: preset name, overrides and class count (stored with its weights)."""

    preset: str
    num_classes: int
    overrides: dict[str, Any]

    def build(self) -> nn.Module:
        from train.models import build_model

        return build_model(self.preset, self.num_classes, in_channels=4, **self.overrides)


def model_spec(cfg: RunConfig, kind: str, num_classes: int, device: torch.device) -> ModelSpec:
    """The ``kind`` ("teacher" or "student") model a run on ``device`` builds: ``--<kind>-preset``
    (auto: the demo preset for the synthetic set on a CPU) with its overrides, deterministic
    serialization under ``--deterministic``."""
    chosen = cfg.teacher_preset if kind == "teacher" else cfg.student_preset
    demo = cfg.dataset == "synthetic" and device.type == "cpu"
    preset = chosen if chosen != "auto" else f"{kind}-demo" if demo else kind
    overrides = {"conv_backend": cfg.conv_backend,
                 **(cfg.teacher_overrides if kind == "teacher" else cfg.student_overrides)}
    if cfg.deterministic:
        overrides.setdefault("deterministic", True)
    return ModelSpec(preset, num_classes, overrides)


def distill_settings(cfg: RunConfig, stage: str) -> DistillSettings:
    """The loss terms of ``stage`` (ablation flags of the config applied to kd/distill; the camera's
    pseudo-labels to those stages only, decision 65)."""
    terms = {"kld": False, "topo": False, "grad": False}
    if stage in MIXED_STAGES:
        terms = RunConfig(**{**cfg.to_dict(), "stage": stage}).terms()
    return DistillSettings(
        kld=terms["kld"], topo=terms["topo"], grad=terms["grad"],
        lambda_kld=cfg.lambda_kld, lambda_topo=cfg.lambda_topo, lambda_grad=cfg.lambda_grad,
        temperature=cfg.kld_temperature, topo_m=cfg.topo_m, topo_normalize=cfg.topo_normalize,
        topo_dims=tuple(cfg.topo_dims), topo_time_budget=cfg.topo_time_budget, topo_distance=cfg.topo_distance,
        topo_tps=cfg.topo_tps,
        sinkhorn_eps=cfg.sinkhorn_eps, pi_norm=cfg.pi_norm,
        saliency_layers=tuple(cfg.saliency_layers), saliency_eps=cfg.saliency_eps,
        saliency_detach_range=cfg.saliency_detach_range, kld_class_weights=cfg.kld_class_weights,
        seg_loss=cfg.seg_loss, camera=cfg.teacher == "images",
        pseudo_labels=cfg.camera_pseudo_labels and stage in MIXED_STAGES,
        pseudo_label_threshold=cfg.pseudo_label_threshold,
    )


def stage_settings(cfg: RunConfig, stage: str, train_set: Any) -> DistillSettings:
    """:func:`distill_settings` plus the cross-entropy class weights of ``--class-weights``, from
    the label shares of ``train_set`` (counted once per stage)."""
    settings = distill_settings(cfg, stage)
    if cfg.class_weights == "none":
        return settings
    labelled = train_set.labelled_set if isinstance(train_set, MixedSplit) else train_set
    return replace(settings, class_weight=class_weights(label_frequencies(labelled), cfg.class_weights))


def steps_per_epoch(cfg: RunConfig, scans: int, processes: int) -> int:
    """Steps of an epoch over a training list of ``scans`` entries: every entry once (the list padded
    for the processes, as ``DistributedSampler`` pads it), at most ``--iters-per-epoch``."""
    steps = math.ceil(math.ceil(scans / processes) / (cfg.batch_size // processes))
    return steps if cfg.iters_per_epoch is None else min(steps, cfg.iters_per_epoch)


def unlabelled_reads(cfg: RunConfig, train_set: Any, processes: int) -> tuple[int, int] | None:
    """(unlabelled scans read, distinct ones) by a student stage of ``cfg`` training on ``train_set``
    over ``processes`` processes (:meth:`MixedSplit.reads`); None for a set without an unlabelled split."""
    if not isinstance(train_set, MixedSplit):
        return None
    return train_set.reads(cfg.epochs, steps_per_epoch(cfg, len(train_set), processes), cfg.batch_size, processes)


def load_frozen_teacher(path: str | Path, device: torch.device,
                        pointcept: ModelSpec | None = None) -> tuple[nn.Module, ModelSpec]:
    """Teacher from a ``model_final.pt``, or from a Pointcept PTv3 checkpoint (recognised by its
    keys, spec H) built as ``pointcept`` (preset, classes, overrides) with upstream's behaviour:
    frozen parameters, eval mode (decisions 15). Any reason the file cannot be used is one
    :class:`CheckpointError` line naming it."""
    teacher, spec, _ = model_from_weights(path, *read_weights(path), pointcept)
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, spec


def model_from_weights(path: str | Path, state: Any, refused: list[str],
                       pointcept: ModelSpec | None) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """The model in ``state``, read from ``path`` by :func:`read_weights`: that of a
    ``model_final.pt`` or ``checkpoint_last.pt`` (with its spec and the run config it was trained
    with), or of a Pointcept checkpoint built as ``pointcept`` (no run config: ``{}``); see
    :func:`load_frozen_teacher`."""
    weights = state.get("state_dict") if isinstance(state, dict) else None
    try:
        if isinstance(weights, dict) and is_pointcept_state_dict(weights):
            return (*_pointcept_teacher(path, state, refused, pointcept), {})
        state = native_checkpoint(path, state, refused)
        spec_d = state.get("extra", {}).get("model_spec")
        if not isinstance(spec_d, dict):
            raise CheckpointError(f"{path} holds no model_spec: pass a model_final.pt written by python -m train.run")
        spec = ModelSpec(**spec_d)
        model = spec.build()
        model.load_state_dict(state["model"])
        config = state.get("config")
        return model, spec, config if isinstance(config, dict) else {}
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, RuntimeError) as err:  # a spec or weights that do not fit
        raise CheckpointError(f"{path} cannot be used as a model: {one_line(str(err))}") from None


def _holds_refused(value: Any) -> bool:
    if isinstance(value, RefusedObject):
        return True
    if isinstance(value, dict):
        return any(_holds_refused(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_refused(v) for v in value)
    return False


def _pointcept_teacher(path: str | Path, state: dict[str, Any], refused: list[str],
                       spec: ModelSpec | None) -> tuple[nn.Module, ModelSpec]:
    """Our PTv3 holding a Pointcept checkpoint's ``state_dict`` (only that entry is used). The
    architecture is ``spec``'s, or, when the file sits in a Pointcept experiment folder, the one of
    its ``config.py`` (``spec``'s explicit overrides still win)."""
    if spec is None:
        raise CheckpointError(f"{path} is a Pointcept checkpoint: pass the preset it matches (--teacher-preset)")
    if _holds_refused(state["state_dict"]):
        raise CheckpointError(f"{path}: its 'state_dict' holds objects other than tensors ({', '.join(refused)}); "
                         "re-save the weights alone with torch.save({'state_dict': model.state_dict()}, FILE)")
    if refused:
        skipped = sorted(k for k, v in state.items() if _holds_refused(v))
        print(f"teacher {path}: Pointcept checkpoint; entries {skipped} hold objects that weights_only loading "
              f"refuses ({', '.join(refused)}): they were not rebuilt (no code from the file ran) and are not "
              "needed; only 'state_dict' is used", file=sys.stderr, flush=True)
    overrides = dict(spec.overrides)
    config = Path(path).parent.parent / "config.py"  # Pointcept keeps <experiment>/{config.py,model/*.pth}
    if config.is_file():
        try:
            overrides = {**pointcept_overrides(read_model_config(config)), **overrides}
        except ValueError as err:
            raise CheckpointError(f"{config} (the Pointcept config beside {path}) cannot be used: "
                                  f"{one_line(str(err))}") from None
        print(f"teacher {path}: architecture from {config}", file=sys.stderr, flush=True)
    spec = replace(spec, overrides={**overrides, "upstream_unpool_cpe": True})
    teacher = from_pointcept(state["state_dict"], num_classes=spec.num_classes, preset=spec.preset, **spec.overrides)
    return teacher, spec


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class _Stage:
    """The live state of one stage's training that the named steps of :func:`train_stage` share."""

    cfg: RunConfig
    stage: str
    out_dir: Path
    info: DistInfo
    spec: ModelSpec
    settings: DistillSettings
    timer: StepTimer
    teacher: nn.Module | None
    epochs: int
    per_rank: int
    amp: bool
    model: nn.Module
    optimizer: Any
    scheduler: Any
    scaler: Any
    sampler: ResumableDistributedSampler
    skips: SkipCounter
    iters: int
    ddp_model: nn.Module  # the model itself, or its DistributedDataParallel wrapper
    step: int = 0
    start_epoch: int = 0
    list_world: int = 1  # the run whose padded list the first epoch's scans follow (decision 46)
    camera: dict[str, Any] | None = None  # the camera teacher's files (decision 61): kind, folder, digest
    resumed: bool = False
    validating: bool = False

    @property
    def last(self) -> Path:
        return self.out_dir / LAST

    @property
    def prev(self) -> Path:
        return self.out_dir / PREV


@dataclass
class _Outputs:
    """What a stage writes and shows while it trains: logs, progress, the preemption vote and clock."""

    logger: MetricLogger
    bar: Any
    vote: StepVote
    clock: CheckpointClock
    config: dict[str, Any]
    extra: dict[str, Any]


def train_stage(
    cfg: RunConfig,
    stage: str,
    out_dir: Path,
    train_set: Any,
    collate_fn: Callable,
    spec: ModelSpec,
    info: DistInfo,
    teacher: nn.Module | None = None,
    timer: StepTimer | None = None,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    on_validation: Callable[[int, dict[str, float]], None] | None = None,
) -> nn.Module:
    """Train one stage to the end (or resume it); returns the trained model (unwrapped).

    Writes ``checkpoint_last.pt`` (full state) and ``model_final.pt`` (weights + model spec) in
    ``out_dir`` on rank 0. ``validate(model)``: the validation pass run every
    ``cfg.eval_every_epochs`` epochs (:func:`train.evaluation.validation.validator`; none: no
    evaluation during training). ``on_validation(step, values)`` is called on every process after
    each pass is logged (the values are all-reduced, the same on every process); an exception it
    raises stops the stage there.
    """
    settings = _checked_settings(cfg, stage, train_set, info, teacher)
    run = _build(cfg, stage, out_dir, train_set, spec, info, settings, teacher, timer)
    _resume_or_start(run, train_set.checkpoint_entries().get("unlabelled"))
    _wrap_for_ddp(run)
    out = _open_outputs(run, train_set)
    loader = _stage_loader(run, train_set, collate_fn)
    try:
        for epoch in range(run.start_epoch, run.epochs):
            _train_epoch(run, out, loader, epoch)
            _end_epoch(run, out, epoch, validate, on_validation)
        if info.is_main:
            save_checkpoint(out_dir / FINAL, run.model, None, None, None, run.step, run.epochs, out.config, out.extra)
        barrier()
    except BadScanError as err:
        if cfg.skip_bad_scans or run.validating:  # evaluation never skips a scan (decision 25)
            raise
        raise type(err)(f"{err} (or pass --skip-bad-scans to train on without such scans)") from err
    finally:
        out.bar.close()
        out.logger.close()
    _write_profile(run)
    return unwrap(run.model)


def _checked_settings(cfg: RunConfig, stage: str, train_set: Any, info: DistInfo,
                      teacher: nn.Module | None) -> DistillSettings:
    """The stage's loss terms, refused when they need a teacher that was not given or the batch
    does not divide over the processes."""
    settings = stage_settings(cfg, stage, train_set)
    if settings.uses_teacher and teacher is None and not settings.camera:
        raise ValueError(f"stage {stage} uses a teacher term but no teacher model was given")
    if cfg.batch_size % info.world_size:
        raise ValueError(
            f"--batch-size {cfg.batch_size} is the total over {info.world_size} processes and must be divisible by it"
        )
    return settings


def _build(cfg: RunConfig, stage: str, out_dir: Path, train_set: Any, spec: ModelSpec, info: DistInfo,
           settings: DistillSettings, teacher: nn.Module | None, timer: StepTimer | None) -> _Stage:
    """The seeded model, its optimiser, the sampler, the schedule over every step, the AMP scaler
    and the bad-step counter; the persistence workers start meanwhile when L_topo is on."""
    epochs = cfg.teacher_epochs if stage == "teacher" else cfg.epochs
    per_rank = cfg.batch_size // info.world_size
    device = info.device
    if settings.active("topo"):
        start_persistence(cfg.topo_workers, step_clouds(cfg.batch_size, info.world_size))  # while the model is built
    _seed_all(cfg.seed)  # the same initial weights on every rank and in every rerun
    model = spec.build().to(device)
    model.train()
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.block_keyword, cfg.block_lr_scale)
    # a mixed split's list is seeded and interleaved by itself (train.data.mixed, decision 57)
    sampler = ResumableDistributedSampler(train_set, info.world_size, info.rank,
                                          shuffle=not isinstance(train_set, MixedSplit), seed=cfg.seed)
    iters = steps_per_epoch(cfg, len(train_set), info.world_size)
    scheduler = build_scheduler(optimizer, epochs * iters, cfg.pct_start, cfg.div_factor, cfg.final_div_factor)
    amp = bool(cfg.amp and device.type == "cuda")
    files = getattr(train_set, "camera_teacher", None) if settings.camera and settings.uses_teacher else None
    return _Stage(cfg, stage, out_dir, info, spec, settings, timer or StepTimer(cfg.profile, device), teacher, epochs,
                  per_rank, amp, model, optimizer, scheduler, make_scaler(device, amp), sampler,
                  SkipCounter(cfg.max_bad_steps), iters, ddp_model=model, list_world=info.world_size,
                  camera=None if files is None else _camera_entry(files.checkpoint_entry(), settings))


def _camera_entry(files: dict[str, Any], settings: DistillSettings) -> dict[str, Any]:
    """The camera teacher's checkpoint entry: its files' (decision 61) and, where L_seg reads its
    pseudo-labels, their threshold (decision 65); a resume compares the whole entry."""
    return {**files, "pseudo_label_threshold": settings.pseudo_label_threshold} if settings.pseudo_labels else files


def _resume_or_start(run: _Stage, unlabelled: dict[str, Any] | None) -> None:
    """With ``--resume``, continue from the newest readable checkpoint (the previous one when the
    latest is unreadable, which is then kept aside), or say that the stage starts afresh.
    ``unlabelled``: the checkpoint entry of the training list's unlabelled split, or None."""
    cfg, info = run.cfg, run.info
    found = load_latest([run.last, run.prev], info.device, warn=info.is_main) if cfg.resume else None
    run.resumed = found is not None
    if found is not None:
        _check_camera_teacher(found, run.camera)
        _check_unlabelled_scans(found, unlabelled)
        run.step, run.start_epoch, run.list_world = _resume(found, cfg, info, run.iters, run.model, run.optimizer,
                                                            run.scheduler, run.scaler)
    elif cfg.resume and info.is_main:
        print(f"{run.stage}: --resume found no checkpoint in {run.out_dir}: starting the stage", file=sys.stderr,
              flush=True)
    if cfg.resume and info.is_main:
        remove_stale_temporaries(run.last)
        if found is not None and found[1] == run.prev and run.last.exists():
            # the next save would demote the unreadable file to PREV, over the good one: keep it aside
            run.last.replace(run.out_dir / UNREADABLE)
            _LOG.warning("moved the unreadable %s to %s", run.last, run.out_dir / UNREADABLE)


def _wrap_for_ddp(run: _Stage) -> None:
    """DistributedDataParallel over the model when there are several processes; then the
    persistence workers started in :func:`_build` are waited for."""
    if run.info.world_size > 1:
        device = run.info.device
        run.ddp_model = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if run.settings.active("topo"):
        warm_up_persistence()  # started before the model was built (start_persistence in _build)


def _open_outputs(run: _Stage, train_set: Any) -> _Outputs:
    """The CSV/TensorBoard logs (continued on resume), the progress bar, the preemption vote and
    the timed-checkpoint clock, and what every checkpoint stores beside the state: the model spec,
    the stage and what the training scans say a model of them expects (a scan folder's description:
    ``PointCloudDataset.checkpoint_entries``)."""
    cfg, info = run.cfg, run.info
    logger = MetricLogger(run.out_dir, enabled=info.is_main, tensorboard=cfg.tensorboard, tables=("train", "val"),
                          resume_step=run.step if run.resumed else None)
    bar = progress(total=run.epochs * run.iters, initial=run.step, desc=f"{run.stage:>8}",
                   enabled=info.is_main and cfg.progress, every_steps=cfg.progress_steps,
                   every_seconds=cfg.progress_seconds)
    vote = StepVote(info.world_size, needed=bool(parse_signals(cfg.preempt_signal)) or cfg.checkpoint_minutes > 0)
    reads = unlabelled_reads(cfg, train_set, info.world_size)
    if reads is not None and info.is_main:
        print(f"{run.stage}: {train_set.per_epoch} scans of the unlabelled split {train_set.split!r} mixed into each "
              f"epoch with the {len(train_set.labelled_set)} labelled ones (ratio {train_set.ratio:g}): {reads[0]} "
              f"unlabelled reads over {run.epochs} epochs, {reads[1]} of its {len(train_set.unlabelled_set)} scans",
              file=sys.stderr, flush=True)
    return _Outputs(logger, bar, vote, CheckpointClock(cfg.checkpoint_minutes), cfg.to_dict(),
                    {"model_spec": run.spec.__dict__, "stage": run.stage, **train_set.checkpoint_entries(),
                     **({} if run.camera is None else {"camera_teacher": run.camera})})


def _stage_loader(run: _Stage, train_set: Any, collate_fn: Callable) -> DataLoader:
    """One loader for the stage: its workers live through every epoch (decision 47), and every
    batch is planned for the models of the stage where it is collated (decision 47). An explicit
    generator: creating an iterator would otherwise draw from the global torch RNG, which a
    mid-epoch resume restores *after* that draw."""
    cfg, device = run.cfg, run.info.device
    planned = planned_collate(collate_fn, [run.model] + ([run.teacher] if run.teacher is not None else []), device)
    return DataLoader(EpochDataset(train_set), batch_size=run.per_rank, sampler=EpochSampler(run.sampler),
                      collate_fn=planned, num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                      prefetch_factor=PREFETCH if cfg.num_workers else None, persistent_workers=cfg.num_workers > 0,
                      generator=torch.Generator().manual_seed(cfg.seed))


def _train_epoch(run: _Stage, out: _Outputs, loader: DataLoader, epoch: int) -> None:
    """The steps of ``epoch`` (from where a mid-epoch resume left it), each logged, with the
    checkpoints every K iterations, timed or asked for by a preemption signal."""
    position = run.step - epoch * run.iters  # > 0 only when resuming mid-epoch
    run.sampler.set_epoch(epoch)  # the workers learn the epoch from the items they are asked for
    run.sampler.set_start(position * run.per_rank, run.list_world)
    for batch in device_batches(loader, run.info.device):  # on CUDA the next batch is copied meanwhile
        if position >= run.iters:
            break
        values = _train_step(run, batch)
        position += 1
        out.logger.log(run.step, {"epoch": epoch, **values})
        out.bar.set_postfix(epoch=f"{epoch + 1}/{run.epochs}", **{k: f"{values[k]:.3f}" for k in LOSS_TERMS
                                                                  if k in values},
                            lr=f"{values['lr']:.2e}", **run.skips.postfix())
        out.bar.update(1)
        run.skips.stop_if_exhausted(run.stage, run.step, values)
        stop, timed = out.vote(preempted() is not None, run.info.is_main and out.clock.due())
        every = bool(run.cfg.checkpoint_every) and run.step % run.cfg.checkpoint_every == 0
        # while the latest steps are bad, checkpoint_last.pt stays the one of the last good step
        if stop or ((every or timed) and position < run.iters and not run.skips.streak):
            _save_stage(run, out, _data_state(run.cfg, epoch, position * run.per_rank, run.list_world,
                                              run.info.world_size), epoch)
        if stop:
            raise Preempted(preempted(), run.step, run.last)
    run.list_world = run.info.world_size


def _train_step(run: _Stage, batch: dict[str, Any]) -> dict[str, float]:
    """One step on ``batch``: the loss of the stage's terms, the guarded update (a NaN/Inf step
    puts the buffers back), the schedule; returns the values the step logs."""
    cfg, info, model, timer = run.cfg, run.info, run.model, run.timer
    skipped = batch.pop("skipped")
    for message in skipped:
        _LOG.warning("stage %s, step %d: skipped a bad training scan: %s", run.stage, run.step + 1, message)
    run.optimizer.zero_grad(set_to_none=True)
    buffers = buffer_snapshot(model)
    if run.settings.uses_teacher:
        # Under DDP the norms are rank 0's local gradients (its share of the batch): torch.autograd.grad
        # does not fire DDP's all-reduce hooks, and the step's own backward still all-reduces as usual.
        log_grads = cfg.log_term_grads > 0
        loss, logs = distillation_step(run.ddp_model, run.teacher, batch, run.settings, run.amp, timer,
                                       topo_seed=cfg.seed + run.step * run.per_rank * info.world_size,
                                       grad_scale=run.scaler.get_scale() if run.amp else 1.0,
                                       term_grad_norms=log_grads and run.step % cfg.log_term_grads == 0)
    else:
        loss, logs = segmentation_step(run.ddp_model, batch, run.amp, timer, run.settings.seg_loss,
                                       run.settings.seg_weight())
    saliency_overflow = logs.pop("saliency_overflow", False)
    lr_used = run.optimizer.param_groups[0]["lr"]
    outcome = apply_update(loss, saliency_overflow, model, run.optimizer, run.scaler, cfg.grad_clip, timer)
    if outcome == NONFINITE:
        restore_buffers(model, buffers)
    run.scheduler.step()  # the schedule runs on through skipped steps, as under GradScaler
    timer.step_done()
    run.step += 1
    values = read_scalars(logs)
    run.skips.record(outcome)
    values.update(lr=lr_used, skipped_overflow=float(outcome == OVERFLOW),
                  skipped_nonfinite=float(outcome == NONFINITE))
    if cfg.skip_bad_scans:
        values["skipped_scans"] = float(all_reduce_sum(torch.tensor(float(len(skipped)), device=info.device)))
    return values


def _end_epoch(run: _Stage, out: _Outputs, epoch: int, validate: Callable[[nn.Module], dict[str, float]] | None,
               on_validation: Callable[[int, dict[str, float]], None] | None) -> None:
    """The epoch's end: buffers made equal over the processes, the validation pass when one is due,
    then the epoch's checkpoint (not while the latest steps are bad) or the stop a signal asked for."""
    cfg = run.cfg
    broadcast_buffers(run.model)
    if validate is not None and cfg.eval_every_epochs and (epoch + 1) % cfg.eval_every_epochs == 0:
        # before the checkpoint: a run killed in between redoes the epoch's end and this pass
        run.validating = True
        passed = validate(run.model)
        out.logger.log(run.step, {"epoch": epoch, **passed}, table="val")
        run.validating = False
        if on_validation is not None:
            on_validation(run.step, passed)
    stop, _ = out.vote(preempted() is not None, False)  # a signal during the validation pass
    if stop or not run.skips.streak:
        _save_stage(run, out, _data_state(cfg, epoch + 1, 0, run.info.world_size, run.info.world_size), epoch + 1)
    if stop:
        raise Preempted(preempted(), run.step, run.last)


def _save_stage(run: _Stage, out: _Outputs, data: dict[str, int], epoch: int) -> None:
    """:func:`_save` of the stage's state at ``epoch``, and the timed-checkpoint clock restarted."""
    _save(run.info, data, run.last, run.prev, run.model, run.optimizer, run.scheduler, run.scaler, run.step, epoch,
          out.config, out.extra)
    out.clock.restart()


def _write_profile(run: _Stage) -> None:
    """With ``--profile``, rank 0 prints and writes the step-time summary; the timer starts afresh."""
    if run.cfg.profile and run.info.is_main:
        summary = run.timer.summary(f"{run.stage} step profile")
        print(summary, flush=True)
        write_text(run.out_dir / "profile.txt", summary + "\n")
    run.timer.reset()


def _data_state(cfg: RunConfig, epoch: int, start: int, list_world: int, world: int) -> dict[str, int]:
    """Where a process's data stream stands: the sampler's epoch, the index of its shard the next
    batch starts at, and ``loader_seed``, a fingerprint of the seed and epoch (it seeded each epoch's
    DataLoader until the loader lived through the stage, decision 47; kept so that a resume with
    another ``--seed`` is refused and earlier checkpoints still resume); in an epoch re-sharded from
    a run of ``list_world`` processes, that number too (decision 46)."""
    state = {"epoch": epoch, "start": start, "loader_seed": cfg.seed * 100003 + epoch}
    return state if list_world == world else {**state, "list_world": list_world}


def _check_camera_teacher(found: tuple[dict[str, Any], Path], camera: dict[str, Any] | None) -> None:
    """A resume reads the camera teacher the checkpoint was trained with, or none if it had none
    (decision 61): the same folder, whose ``image_labels.json`` has the same digest, and its
    pseudo-labels as they were, or none (decision 65)."""
    state, path = found
    extra = state.get("extra") if isinstance(state.get("extra"), dict) else {}
    written = extra.get("camera_teacher")
    if written == camera:
        return

    def said(entry: dict[str, Any] | None) -> str:
        if not isinstance(entry, dict):
            return "the PTv3 teacher network"
        pseudo = entry.get("pseudo_label_threshold")
        labels = "" if pseudo is None else f"; their pseudo-labels of the unlabelled scans at threshold {pseudo:g}"
        return (f"the camera predictions in {entry.get('predictions')} (image_labels.json SHA-256 "
                f"{str(entry.get('image_labels_sha256'))[:12]}{labels})")

    raise ResumeMismatchError(f"{path} was trained with {said(written)} as its teacher and this run reads "
                              f"{said(camera)}: resume with the teacher it was written with, or delete it to start "
                              "the stage afresh")


def _check_unlabelled_scans(found: tuple[dict[str, Any], Path], unlabelled: dict[str, Any] | None) -> None:
    """A resume with an unlabelled split reads the scans it was written with (decision 68): as many,
    and the same names where the checkpoint records their digest. Another split or ratio is
    :func:`_resume`'s refusal (the run's configuration)."""
    state, path = found
    extra = state.get("extra") if isinstance(state.get("extra"), dict) else {}
    written = extra.get("unlabelled")
    if not isinstance(written, dict) or unlabelled is None or written.get("split") != unlabelled["split"]:
        return
    if any(key in written and written[key] != unlabelled[key] for key in ("scans", "scans_sha256")):
        raise ResumeMismatchError(f"{path} was written with {written.get('scans')} scans in the unlabelled split "
                                  f"{unlabelled['split']!r} and this run finds {unlabelled['scans']} (or other names): "
                                  "the training list would change; resume with the split as it was, or delete it to "
                                  "start the stage afresh")


def _resume(found: tuple[dict[str, Any], Path], cfg: RunConfig, info: DistInfo, iters: int, model: nn.Module,
            optimizer: Any, scheduler: Any, scaler: Any) -> tuple[int, int, int]:
    """Load a checkpoint into the live objects; returns (step, epoch, list_world).

    Written by as many processes as this run has: each takes its own random states back and the
    run continues bit for bit (decision 37). By another number: the model, optimiser, scheduler,
    loss scale and step are kept, every process's random streams are seeded afresh from (seed,
    step, rank), and the rest of the unfinished epoch is dealt out over this run's processes
    (:class:`ResumableDistributedSampler`, decision 46), with one warning."""
    state, path = found
    saved = len(state["ranks"])
    same = saved == info.world_size
    mine = state["ranks"][info.rank if same else 0]
    step, epoch = restore_training_state(state, model, optimizer, scheduler, scaler, mine)
    position = step - epoch * iters
    data = mine["data"]
    list_world = int(data.get("list_world", saved))
    expected = _data_state(cfg, epoch, position * (cfg.batch_size // saved), list_world, saved)
    written = state.get("config") if isinstance(state.get("config"), dict) else {}
    mixed = [(k, written.get(k, default), getattr(cfg, k)) for k, default in (("unlabelled_split", None),
                                                                             ("unlabelled_ratio", 1.0))]
    changed = [f"--{k.replace('_', '-')} {then} (now {now})" for k, then, now in mixed if then != now]
    if changed and (written.get("unlabelled_split") or cfg.unlabelled_split):
        raise ResumeMismatchError(f"{path} was written with {', '.join(changed)}, which sets the training list: "
                                  "resume with the values it was written with, or delete it to start the stage afresh")
    if data != expected:
        raise ResumeMismatchError(
            f"{path} was written where this process's data stream stood at {data}, and this run puts it at "
            f"{expected}: resume with the --seed, --batch-size and --iters-per-epoch it was written with, or delete "
            "it to start the stage afresh")
    if same:
        return step, epoch, list_world
    _seed_all(int(np.random.SeedSequence([cfg.seed, step, info.rank]).generate_state(1)[0]))
    if info.is_main:
        print(f"warning: {path} was written by {saved} process(es) and this run has {info.world_size}: continuing "
              f"at step {step} (epoch {epoch + 1}) with the rest of that epoch's scans re-sharded and fresh random "
              "streams; from here the run is no longer bit-identical to an uninterrupted one (decision 46)",
              file=sys.stderr, flush=True)
    return step, epoch, list_world if position else info.world_size


def _save(info: DistInfo, data: dict[str, int], path: Path, previous: Path, model: nn.Module, optimizer: Any,
          scheduler: Any, scaler: Any, step: int, epoch: int, config: dict, extra: dict) -> None:
    """Every process's state (:func:`train.runtime.checkpoint.rank_state`) gathered, written by rank 0."""
    ranks = all_gather_objects(rank_state(data))
    if info.is_main:
        save_checkpoint(path, model, optimizer, scheduler, scaler, step, epoch, config, extra, previous, ranks)
    barrier()
