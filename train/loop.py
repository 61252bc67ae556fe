"""Training loop of one stage (teacher, student, kd, distill) with checkpoints, resume and DDP.

Per iteration: one step of :mod:`train.steps`, AdamW + OneCycleLR stepped per iteration
(:mod:`train.optim`), optional gradient clipping, AMP on CUDA only. Checkpoints
(:mod:`train.checkpoint`) are written atomically at the end of every epoch and, optionally, every
K iterations; ``resume`` continues from the last one exactly: the data order and augmentation of an
epoch are functions of (seed, epoch, sample index) (``ResumableDistributedSampler`` and the
dataset's per-sample generator), the sampler restarts mid-epoch where the checkpoint was taken,
and every random-number state is restored. Under torchrun the model is wrapped in
DistributedDataParallel and only rank 0 logs, draws progress bars and writes files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from train.checkpoint import load_checkpoint, restore_training_state, save_checkpoint, unwrap
from train.config import RunConfig
from train.data.base import label_frequencies
from train.distributed import DistInfo, ResumableDistributedSampler, barrier, broadcast_buffers
from train.logging_utils import MetricLogger, progress
from train.losses import class_weights
from train.optim import build_optimizer, build_scheduler
from train.profiling import StepTimer
from train.steps import DistillSettings, distillation_step, segmentation_step, to_device, warm_up_persistence

LAST = "checkpoint_last.pt"
FINAL = "model_final.pt"


@dataclass
class ModelSpec:
    """How to rebuild a model: preset name, overrides and class count (stored with its weights)."""

    preset: str
    num_classes: int
    overrides: dict[str, Any]

    def build(self) -> nn.Module:
        from train.models import build_model

        return build_model(self.preset, self.num_classes, in_channels=4, **self.overrides)


def distill_settings(cfg: RunConfig, stage: str) -> DistillSettings:
    """The loss terms of ``stage`` (ablation flags of the config applied to kd/distill)."""
    terms = {"kld": False, "topo": False, "grad": False}
    if stage in ("kd", "distill"):
        terms = RunConfig(**{**cfg.to_dict(), "stage": stage}).terms()
    return DistillSettings(
        kld=terms["kld"], topo=terms["topo"], grad=terms["grad"],
        lambda_kld=cfg.lambda_kld, lambda_topo=cfg.lambda_topo, lambda_grad=cfg.lambda_grad,
        temperature=cfg.kld_temperature, topo_m=cfg.topo_m, topo_normalize=cfg.topo_normalize,
        topo_dims=tuple(cfg.topo_dims), topo_time_budget=cfg.topo_time_budget,
        saliency_layers=tuple(cfg.saliency_layers), saliency_eps=cfg.saliency_eps, seg_loss=cfg.seg_loss,
    )


def stage_settings(cfg: RunConfig, stage: str, train_set: Any) -> DistillSettings:
    """:func:`distill_settings` plus the cross-entropy class weights of ``--class-weights``, from
    the label shares of ``train_set`` (counted once per stage)."""
    settings = distill_settings(cfg, stage)
    if cfg.class_weights == "none":
        return settings
    return replace(settings, class_weight=class_weights(label_frequencies(train_set), cfg.class_weights))


def load_frozen_teacher(path: str | Path, device: torch.device) -> tuple[nn.Module, ModelSpec]:
    """Teacher from a ``model_final.pt``: frozen parameters, eval mode (decisions 15)."""
    state = load_checkpoint(path)
    spec_d = state.get("extra", {}).get("model_spec")
    if spec_d is None:
        raise ValueError(f"{path} holds no model_spec; pass a model_final.pt written by --stage teacher")
    spec = ModelSpec(**spec_d)
    teacher = spec.build()
    teacher.load_state_dict(state["model"])
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, spec


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
) -> nn.Module:
    """Train one stage to the end (or resume it); returns the trained model (unwrapped).

    Writes ``checkpoint_last.pt`` (full state) and ``model_final.pt`` (weights + model spec) in
    ``out_dir`` on rank 0.
    """
    device = info.device
    settings = stage_settings(cfg, stage, train_set)
    if settings.uses_teacher and teacher is None:
        raise ValueError(f"stage {stage} uses a teacher term but no teacher model was given")
    epochs = cfg.teacher_epochs if stage == "teacher" else cfg.epochs
    if cfg.batch_size % info.world_size:
        raise ValueError(
            f"--batch-size {cfg.batch_size} is the total over {info.world_size} processes and must be divisible by it"
        )
    per_rank = cfg.batch_size // info.world_size
    timer = timer or StepTimer(cfg.profile, device)
    amp = bool(cfg.amp and device.type == "cuda")

    _seed_all(cfg.seed)  # the same initial weights on every rank and in every rerun
    model = spec.build().to(device)
    model.train()
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.block_keyword, cfg.block_lr_scale)
    sampler = ResumableDistributedSampler(train_set, info.world_size, info.rank, shuffle=True, seed=cfg.seed)
    iters = math.ceil(sampler.num_samples / per_rank)
    if cfg.iters_per_epoch is not None:
        iters = min(iters, cfg.iters_per_epoch)
    total_steps = epochs * iters
    scheduler = build_scheduler(optimizer, total_steps, cfg.pct_start, cfg.div_factor, cfg.final_div_factor)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    step, start_epoch = 0, 0
    last = out_dir / LAST
    resumed = cfg.resume and last.is_file()
    if resumed:
        step, start_epoch = restore_training_state(load_checkpoint(last, device), model, optimizer, scheduler, scaler)
    ddp_model: nn.Module = model
    if info.world_size > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    # Under DDP the norms are rank 0's local gradients (its share of the batch): torch.autograd.grad
    # does not fire DDP's all-reduce hooks, and the step's own backward still all-reduces as usual.
    log_grads = cfg.log_term_grads > 0
    if settings.active("topo"):
        warm_up_persistence(cfg.topo_workers)
    logger = MetricLogger(out_dir, enabled=info.is_main, tensorboard=cfg.tensorboard, append=resumed)
    bar = progress(total=total_steps, initial=step, desc=f"{stage:>8}", enabled=info.is_main and cfg.progress)
    config_dict = cfg.to_dict()
    extra = {"model_spec": spec.__dict__, "stage": stage}
    try:
        for epoch in range(start_epoch, epochs):
            position = step - epoch * iters  # > 0 only when resuming mid-epoch
            sampler.set_epoch(epoch)
            sampler.set_start(position * per_rank)
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            # An explicit generator: creating the iterator would otherwise draw from the global torch
            # RNG, which a mid-epoch resume restores *after* that draw.
            loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, collate_fn=collate_fn,
                                num_workers=cfg.num_workers,
                                generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
            for batch in loader:
                if position >= iters:
                    break
                batch = to_device(batch, device)
                optimizer.zero_grad(set_to_none=True)
                if settings.uses_teacher:
                    loss, logs = distillation_step(ddp_model, teacher, batch, settings, amp, timer,
                                                   topo_seed=cfg.seed + step * per_rank * info.world_size,
                                                   grad_scale=scaler.get_scale() if amp else 1.0,
                                                   term_grad_norms=log_grads and step % cfg.log_term_grads == 0)
                else:
                    loss, logs = segmentation_step(ddp_model, batch, amp, timer, settings.seg_loss,
                                                   settings.seg_weight())
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"stage {stage}: loss is {loss.item()} at step {step} (terms {_as_floats(logs)}); "
                        "lower --lr or the lambda_* weights, or set --grad-clip"
                    )
                with timer.section("backward"):
                    scaler.scale(loss).backward()
                lr_used = optimizer.param_groups[0]["lr"]
                with timer.section("optimizer"):
                    if cfg.grad_clip is not None:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                timer.step_done()
                step += 1
                position += 1
                values = _as_floats(logs)
                values["lr"] = lr_used
                logger.log(step, {"epoch": epoch, **values})
                bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{values['loss']:.3f}")
                bar.update(1)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and position < iters:
                    _save(info, last, model, optimizer, scheduler, scaler, step, epoch, config_dict, extra)
            broadcast_buffers(model)
            _save(info, last, model, optimizer, scheduler, scaler, step, epoch + 1, config_dict, extra)
        if info.is_main:
            save_checkpoint(out_dir / FINAL, model, None, None, None, step, epochs, config_dict, extra)
        barrier()
    finally:
        bar.close()
        logger.close()
    if cfg.profile and info.is_main:
        summary = timer.summary(f"{stage} step profile")
        print(summary, flush=True)
        (out_dir / "profile.txt").write_text(summary + "\n")
    timer.reset()
    return unwrap(model)


def _save(info: DistInfo, path: Path, model: nn.Module, optimizer: Any, scheduler: Any, scaler: Any, step: int,
          epoch: int, config: dict, extra: dict) -> None:
    if info.is_main:
        save_checkpoint(path, model, optimizer, scheduler, scaler, step, epoch, config, extra)
    barrier()


def _as_floats(logs: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in logs.items()}
