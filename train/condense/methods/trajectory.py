"""Trajectory matching (TM; Cazenavette et al. 2022, Algorithm 1), the DD3D paper's third
distillation baseline (Table 1 at CPC 1 and 10), on explicit clouds (decision 79), in miniature:
3 experts of 5 epochs trained in the run where MTT buffers 100 of 50 (decision 93).

Expert trajectories (:class:`TrajectorySpec` names the settings): lightweight PointNets trained
from scratch on the real ``train`` split by SGD, their flat weights kept after every epoch. Every
iteration picks an expert and a start epoch t, starts a student at the expert's weights of epoch t
and takes N differentiable SGD steps on the whole synthetic set with a learned step size; the loss
is the student's squared distance to the expert's weights of epoch t + M, divided by the expert's
own squared distance over those epochs. The clouds take the explicit clouds' optimiser
(:func:`train.condense.methods.explicit.cloud_optimizer`) and SGD the log of the step size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from train.condense.files.distill_checkpoint import Checkpoint
from train.condense.methods.explicit import cloud_optimizer, initial_clouds
from train.condense.matching.matching_loops import DistillSpec, decay_at_half, fresh_network
from train.condense.evaluation.training import batch_stream
from train.data.objects import ObjectSet
from train.runtime.distributed import DistInfo
from train.runtime.logging_utils import progress



@dataclass(frozen=True)
class TrajectorySpec:
    """TM's settings (decision 79): ``experts`` trajectories, ``expert_epochs`` M matched,
    ``max_start_epoch`` (t below it; experts train ``max_start_epoch - 1 + M`` epochs),
    ``synthetic_steps`` N, ``teacher_lr`` (the experts' SGD and the student's first step size),
    ``expert_batch`` real clouds an expert step, ``lr_lr`` the SGD rate of the log step size."""

    experts: int = 3
    expert_epochs: int = 2
    max_start_epoch: int = 4
    synthetic_steps: int = 20
    teacher_lr: float = 1e-2
    expert_batch: int = 32
    lr_lr: float = 1e-5

    @property
    def epochs(self) -> int:
        return self.max_start_epoch - 1 + self.expert_epochs


def expert_trajectories(train: ObjectSet, tm: TrajectorySpec, generator: torch.Generator, device: torch.device
                        ) -> list[list[torch.Tensor]]:
    """``tm.experts`` lists of ``tm.epochs + 1`` flat weight vectors: at the start and after every epoch."""
    points, labels = torch.from_numpy(train.points).to(device), torch.from_numpy(train.labels).to(device)
    steps = -(-len(labels) // tm.expert_batch)
    trajectories = []
    for _ in range(tm.experts):
        net = fresh_network(len(train.class_names), device)
        step = torch.optim.SGD(net.parameters(), lr=tm.teacher_lr)
        stream = batch_stream(len(labels), min(tm.expert_batch, len(labels)), generator)
        weights = [torch.nn.utils.parameters_to_vector(net.parameters()).detach().clone()]
        for _ in range(tm.epochs):
            for _ in range(steps):
                rows = next(stream).to(device)
                step.zero_grad()
                F.cross_entropy(net(points[rows]), labels[rows]).backward()
                step.step()
            weights.append(torch.nn.utils.parameters_to_vector(net.parameters()).detach().clone())
        trajectories.append(weights)
    return trajectories


def trajectory_loss(net: torch.nn.Module, start: torch.Tensor, target: torch.Tensor, points: torch.Tensor,
                    labels: torch.Tensor, log_lr: torch.Tensor, steps: int) -> torch.Tensor:
    """The normalised distance of a student, ``steps`` SGD steps on the set from ``start``, to ``target``."""
    shapes = {name: p.shape for name, p in net.named_parameters()}
    weights = start.clone().requires_grad_(True)
    for _ in range(steps):
        named, offset = {}, 0
        for name, shape in shapes.items():
            named[name] = weights[offset:offset + shape.numel()].view(shape)
            offset += shape.numel()
        loss = F.cross_entropy(functional_call(net, named, (points,)), labels)
        (grad,) = torch.autograd.grad(loss, weights, create_graph=True)
        weights = weights - log_lr.exp() * grad
    return (weights - target).square().sum() / (start - target).square().sum()


def check_one_process(processes: int) -> None:
    """ValueError in one line when TM would run in ``processes`` > 1 ranks."""
    if processes > 1:
        raise ValueError("tm runs in one process: its loss is one student's path through every class, not a sum "
                         "over classes that ranks could share (decision 84)")


def distill_trajectories(train: ObjectSet, cpc: int, seed: int, spec: DistillSpec, info: DistInfo,
                         checkpoint: Checkpoint | None = None, tm: TrajectorySpec = TrajectorySpec()
                         ) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """TM on explicit clouds (module docstring): the synthetic points, their labels and the loss history."""
    check_one_process(info.world_size)
    points, labels, _ = initial_clouds(train, cpc, seed, spec.init)  # classification only (methods.py)
    torch.manual_seed(seed)
    draws = torch.Generator().manual_seed(seed)
    experts = expert_trajectories(train, tm, draws, info.device)
    net = fresh_network(len(train.class_names), info.device)
    synthetic = torch.nn.Parameter(torch.from_numpy(points).to(info.device))
    log_lr = torch.nn.Parameter(torch.tensor(float(np.log(tm.teacher_lr)), device=info.device))
    optimizer = cloud_optimizer("tm", spec, synthetic)
    lr_step = torch.optim.SGD([log_lr], lr=tm.lr_lr)
    targets = torch.from_numpy(labels).to(info.device)
    start, history = (0, []) if checkpoint is None else checkpoint.restore([optimizer, lr_step], draws)
    for iteration in progress(range(start, spec.iterations), desc=f"TM CPC {cpc}"):
        decay_at_half(optimizer, iteration, spec.iterations)
        pick = torch.randint(len(experts), (1,), generator=draws).item()
        start = torch.randint(tm.max_start_epoch, (1,), generator=draws).item()
        trajectory = experts[pick]
        loss = trajectory_loss(net, trajectory[start], trajectory[start + tm.expert_epochs], synthetic, targets,
                               log_lr, tm.synthetic_steps)
        optimizer.zero_grad()
        lr_step.zero_grad()
        loss.backward()
        optimizer.step()
        lr_step.step()
        history.append(loss.item())
        if checkpoint is not None:
            checkpoint.save_if_due(iteration + 1, [optimizer, lr_step], draws, history)
    return synthetic.detach().cpu().numpy(), labels, history
