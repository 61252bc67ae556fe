"""Dispatched ops and host syncs of one training step (``train.engine.op_count``), with the real step code.

Three measurements at a given size (paper presets: 4 clouds x 30,000 points, the batch of
``benchmarks.gpu``'s distillation section):

* ``student CE step``: ``train.engine.steps.segmentation_step`` of the student (L_seg = CE + Lovasz, the
  default) then ``train.engine.update.apply_update`` (backward, AdamW of ``train.engine.optim``) and the read of the
  logged scalars (``train.runtime.logging_utils.read_scalars``), as ``train.engine.loop`` runs a step;
* ``KD + saliency step``: ``train.engine.steps.distillation_step`` with L_kld and L_grad on (L_topo off: its
  persistence runs in worker processes, outside the device's stream), then ``apply_update``;
* ``teacher forward``: the frozen teacher's forward pass in eval mode without autograd.

Each is run once to warm up (lazy buffers, the optimiser's state), then counted once. The loss
scaler is disabled (no AMP) for the counts, as ``train.engine.loop`` runs on a CPU; ``benchmarks.gpu``
times the same steps with AMP on CUDA.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from fast.topo_loss import DEFAULT_M
from train.engine.op_count import OpCount, count_ops

NUM_CLASSES = 16  # nuScenes-like label count, as in benchmarks.gpu_campaign.sections
PAPER = {"teacher": "teacher", "student": "student", "clouds": 4, "points": 30_000}
SMOKE = {"teacher": "teacher-demo", "student": "student-demo", "clouds": 2, "points": 400}

# Before the work of decision 39: (ops, syncs) as first measured on the GPU campaign's step ("quoted"),
# and this module's count at commit 7965517 (the step without the log read, which then read each term alone).
BEFORE = {
    "student CE step": {"quoted": (13_945, 887), "7965517": (10_491, 577)},
    "KD + saliency step": {"quoted": (16_498, 945), "7965517": (18_150, 972)},
    "teacher forward": {"quoted": (4_874, None), "7965517": (5_090, 324)},
}
# The targets: worst training step <= 4,000 ops and <= 20 syncs; teacher forward <= 1,200 ops.
TARGETS = {"student CE step": (4_000, 20), "KD + saliency step": (4_000, 20), "teacher forward": (1_200, None)}


@dataclass
class StepRig:
    """Models, optimiser and one labelled batch on ``device``."""

    teacher: torch.nn.Module
    student: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    batch: dict[str, torch.Tensor]
    amp: bool


def build_rig(size: dict[str, Any], device: torch.device, seed: int = 0, amp: bool = False,
              planned: bool = False) -> StepRig:
    """The student (``size["student"]``, trained), the frozen teacher, AdamW and a labelled batch of
    ``size["clouds"]`` x ``size["points"]``; ``amp`` as ``train.engine.loop`` runs on CUDA. ``planned``: the
    batch comes with its plan for both models, built on the host and moved to ``device`` with the
    batch as the loader's workers and ``train.engine.input_pipeline.device_batches`` hand it over
    (decision 47), so no step builds it; otherwise the models plan the batch in every forward."""
    from train.evaluation.cost import lidar_like_batch
    from train.engine.input_pipeline import device_batches, planned_collate
    from train.models import build_model
    from train.engine.optim import build_optimizer
    from train.engine.update import make_scaler

    torch.manual_seed(seed)
    teacher = build_model(size["teacher"], NUM_CLASSES).to(device).eval()
    teacher.requires_grad_(False)
    student = build_model(size["student"], NUM_CLASSES).to(device).train()
    batch = lidar_like_batch([size["points"]] * size["clouds"], seed=seed)
    gen = torch.Generator().manual_seed(seed)
    batch["segment"] = torch.randint(0, NUM_CLASSES, (batch["coord"].shape[0],), generator=gen)
    if planned:
        batch = planned_collate(lambda samples: samples[0], [teacher, student], device)([batch])
    batch = next(device_batches([batch], device))
    return StepRig(teacher, student, build_optimizer(student), make_scaler(device, amp), batch, amp)


def measurements(rig: StepRig, topo_m: int = DEFAULT_M) -> dict[str, Callable[[], None]]:
    """The step functions, by name, each a full step on ``rig``; the ``full objective step`` (Eq. 8:
    also L_topo at TPS budget ``topo_m``, training's defaults otherwise) needs the persistence pool."""
    from train.engine.profiling import StepTimer
    from train.engine.steps import DistillSettings, distillation_step, model_inputs, segmentation_step
    from train.runtime.logging_utils import read_scalars
    from train.engine.update import apply_update

    timer = StepTimer()
    kd = DistillSettings(kld=True, grad=True)
    full = DistillSettings(kld=True, grad=True, topo=True, topo_m=topo_m)

    def update(loss: torch.Tensor, logs: dict[str, torch.Tensor]) -> None:
        rig.optimizer.zero_grad(set_to_none=True)
        apply_update(loss, logs.pop("saliency_overflow", False), rig.student, rig.optimizer, rig.scaler, None, timer)
        read_scalars(logs)  # train.engine.loop logs every step

    def student_ce() -> None:
        update(*segmentation_step(rig.student, rig.batch, rig.amp, timer))

    def distillation(settings: DistillSettings) -> Callable[[], None]:
        def step() -> None:
            scale = rig.scaler.get_scale() if rig.amp else 1.0
            update(*distillation_step(rig.student, rig.teacher, rig.batch, settings, rig.amp, timer,
                                      grad_scale=scale))
        return step

    def teacher_forward() -> None:
        with torch.no_grad():
            rig.teacher(model_inputs(rig.batch))

    return {"student CE step": student_ce, "KD + saliency step": distillation(kd),
            "full objective step": distillation(full), "teacher forward": teacher_forward}


def count_step(fn: Callable[[], None]) -> OpCount:
    """One warm-up call, then the counted one."""
    fn()
    return count_ops(fn)
