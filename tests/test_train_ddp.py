"""Two-process DistributedDataParallel (gloo, CPU) training and evaluation against one process
with the doubled batch.

Training: both ranks end with identical parameters (gradients were all-reduced) and buffers (rank
0's BatchNorm statistics are broadcast at each epoch end). The parameters equal (to float
rounding) one process that averages the gradients of the two half batches, which is what DDP
computes, and are close to one process with the doubled batch as one batch. The last comparison
cannot be exact, by design of data parallelism: BatchNorm statistics, the cross-entropy mean and
the Lovasz-softmax are computed per process over its half of the batch. Evaluation: the sharded,
all-reduced intersection/union equal exactly those of one process over the whole split, also in
the validation pass made during training (``--eval-every-epochs``) and logged by rank 0.
"""
from __future__ import annotations

import csv
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from test_train_support import tiny_config, tiny_data
from train.config import RunConfig
from train.runtime.distributed import DistInfo, cleanup, init_from_env
from train.runtime.leaving import leave
from train.evaluation.evaluate import evaluate
from train.evaluation.validation import validator
from train.runtime.distributed import ResumableDistributedSampler
from train.engine.loop import FINAL, ModelSpec, load_frozen_teacher, stage_settings, train_stage
from train.engine.optim import build_optimizer, build_scheduler
from train.engine.steps import distillation_step, segmentation_step, to_device
from train.engine.profiling import StepTimer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spec(cfg: RunConfig) -> ModelSpec:
    return ModelSpec("student", 22, {**cfg.student_overrides, "deterministic": True})


def _rank_main(rank: int, world: int, port: int, cfg: RunConfig, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = init_from_env("cpu")
    try:
        data = tiny_data(cfg)
        teacher = load_frozen_teacher(cfg.teacher_checkpoint, info.device)[0] if cfg.teacher_checkpoint else None
        model = train_stage(cfg, cfg.stage, Path(out) / "ddp", data.train, data.collate, _spec(cfg), info, teacher,
                            validate=validator(data.val_views(False), cfg, data.num_classes, info.device,
                                               data.collate))
        acc = evaluate(model, data.val_views(False), data.num_classes, info.device, data.collate)
        torch.save({"model": model.state_dict(), "iou_state": acc.state(), "scans": acc.scans}, Path(out) / f"rank{rank}.pt")
    finally:
        cleanup()
    leave(0)  # as a rank of a run ends: gloo's threads outlive the group (decision 46)


def test_two_process_gloo_ddp_matches_one_process_with_the_doubled_batch(tmp_path: Path) -> None:
    # 6 training scans: 3 steps of a total batch of 2 (1 per rank under DDP, 2 in one process)
    cfg = tiny_config(tmp_path, stage="student", synthetic_scenes=8, synthetic_val_fraction=0.25,
                      synthetic_test_fraction=0.0, epochs=1,
                      iters_per_epoch=None, batch_size=2, eval_every_epochs=1)
    data = tiny_data(cfg)
    assert len(data.train) == 6
    single = train_stage(cfg, "student", tmp_path / "single", data.train, data.collate, _spec(cfg),
                         DistInfo(0, 1, 0, torch.device("cpu")))
    mp.spawn(_rank_main, args=(2, _free_port(), cfg, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))

    for name, value in r0["model"].items():
        assert torch.equal(value, r1["model"][name]), f"ranks disagree on {name}"
    torch.manual_seed(cfg.seed)
    init = _spec(cfg).build().state_dict()
    one = single.state_dict()
    params = [n for n, _ in single.named_parameters()]
    moved = sum(float((one[n] - init[n]).pow(2).sum()) for n in params)
    apart = sum(float((one[n] - r0["model"][n]).pow(2).sum()) for n in params)
    assert moved > 0
    # doubled batch as one batch: same direction of travel (cosine of the parameter updates)
    dot = sum(float(((one[n] - init[n]) * (r0["model"][n] - init[n])).sum()) for n in params)
    ddp_moved = sum(float((r0["model"][n] - init[n]).pow(2).sum()) for n in params)
    assert dot / (moved * ddp_moved) ** 0.5 > 0.7, f"updates differ: |apart| {apart ** 0.5:.3g}, |moved| {moved ** 0.5:.3g}"
    # half batches with averaged gradients: what DDP computes, so equal up to float rounding
    emulated = _averaged_half_batches(cfg, data)
    for n in params:
        torch.testing.assert_close(r0["model"][n], emulated[n], rtol=1e-4, atol=1e-6, msg=f"DDP differs on {n}")

    whole = evaluate(_load(r0["model"], cfg), data.val_views(False), data.num_classes, torch.device("cpu"),
                     data.collate)
    assert torch.equal(r0["iou_state"], whole.state()) and torch.equal(r1["iou_state"], whole.state())
    # each scan's counts, from the rank that evaluated it, joined in the split's order
    assert torch.equal(r0["scans"], whole.scans) and torch.equal(r1["scans"], whole.scans)
    # the pass at the end of the epoch, shared out between the ranks during training, logged by rank 0
    with (tmp_path / "ddp" / "val_log.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert (row["step"], float(row["val_miou"])) == ("3", whole.miou())


def _averaged_half_batches(cfg: RunConfig, data: Any, stage: str = "student") -> dict[str, torch.Tensor]:
    """One process, each step: the loss of rank 0's scan and of rank 1's scan, gradients averaged
    (the distillation stages with the TPS seed each rank uses in that step)."""
    settings = stage_settings(cfg, stage, data.train)
    teacher = load_frozen_teacher(cfg.teacher_checkpoint, torch.device("cpu"))[0] if settings.uses_teacher else None
    torch.manual_seed(cfg.seed)
    model = _spec(cfg).build()
    model.train()
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.block_keyword, cfg.block_lr_scale)
    steps = len(data.train) // cfg.batch_size
    scheduler = build_scheduler(optimizer, steps, cfg.pct_start, cfg.div_factor, cfg.final_div_factor)
    shards = []
    for rank in (0, 1):
        sampler = ResumableDistributedSampler(data.train, 2, rank, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(0)
        shards.append(list(sampler))
    data.train.set_epoch(0)
    for k in range(steps):
        optimizer.zero_grad()
        for shard in shards:
            batch = to_device(data.collate([data.train[shard[k]]]), torch.device("cpu"))
            if teacher is None:
                loss, _ = segmentation_step(model, batch, amp=False, timer=StepTimer())
            else:  # train.engine.loop: topo_seed = seed + step * per_rank * world_size, the same on both ranks
                loss, _ = distillation_step(model, teacher, batch, settings, amp=False, timer=StepTimer(),
                                            topo_seed=cfg.seed + k * 2)
            (loss / 2).backward()
        optimizer.step()
        scheduler.step()
    return {n: p.detach() for n, p in model.named_parameters()}


def _load(state: dict[str, Any], cfg: RunConfig) -> torch.nn.Module:
    model = _spec(cfg).build()
    model.load_state_dict(state)
    return model


@pytest.mark.parametrize("stage", ["kd", "distill"])
def test_two_process_distillation_equals_one_process_averaging_the_half_batch_gradients(
    tmp_path: Path, stage: str
) -> None:
    """kd (+KLD) and distill (+KLD +topo +grad) under 2-process DDP: identical weights on both
    ranks, and the same training as one process that averages the gradients of each rank's half
    batch (with the TPS seeds each rank uses). Compared as whole updates, not element by element:
    AdamW divides each element's gradient by its own running magnitude, so an element whose true
    gradient is zero (a bias feeding a BatchNorm) turns float rounding into a full learning-rate
    step in either direction."""
    teacher_cfg = tiny_config(tmp_path, stage="teacher", synthetic_scenes=8, synthetic_val_fraction=0.25,
                              synthetic_test_fraction=0.0, teacher_epochs=1, iters_per_epoch=1)
    data = tiny_data(teacher_cfg)
    train_stage(teacher_cfg, "teacher", tmp_path / "teacher", data.train, data.collate,
                ModelSpec("teacher", 22, {**teacher_cfg.teacher_overrides, "deterministic": True}),
                DistInfo(0, 1, 0, torch.device("cpu")))
    cfg = tiny_config(tmp_path, stage=stage, synthetic_scenes=8, synthetic_val_fraction=0.25, synthetic_test_fraction=0.0,
                      epochs=1, iters_per_epoch=None, batch_size=2, teacher_checkpoint=str(tmp_path / "teacher" / FINAL))
    mp.spawn(_rank_main, args=(2, _free_port(), cfg, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for name, value in r0["model"].items():
        assert torch.equal(value, r1["model"][name]), f"ranks disagree on {name}"
    emulated = _averaged_half_batches(cfg, data, stage)
    torch.manual_seed(cfg.seed)
    init = _spec(cfg).build().state_dict()
    ddp_update = torch.cat([(r0["model"][n] - init[n]).flatten() for n in emulated])
    one_update = torch.cat([(emulated[n] - init[n]).flatten() for n in emulated])
    cosine = float(ddp_update @ one_update / (ddp_update.norm() * one_update.norm()))
    weights = [n for n in emulated if not n.endswith("bias")]
    worst = max(float((r0["model"][n] - emulated[n]).abs().max()) for n in weights)
    assert one_update.norm() > 0 and cosine > 0.99 and worst < 1e-4, (cosine, worst)
