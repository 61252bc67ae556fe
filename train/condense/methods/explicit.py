"""Gradient matching (GM) and distribution matching (DM) on explicit synthetic clouds: the DD3D
paper's distillation baselines (Sec. 5, Table 1) and Table 6's "DD" with and without real
initialisation (decision 78).

The synthetic set is a (K x CPC, N, 3) tensor optimised point by point, by Adam or by Dataset
Condensation's SGD with momentum 0.5 (its ``optimizer_img``), without weight decay (it would pull
every point to the origin); :data:`CLOUD_STEPS` holds each method's optimiser and learning rate
chosen on the validation split (decision 93). It is initialised from CPC real training clouds per class drawn
as the Random baseline draws them (``init="real"``; a class with fewer is refused before, decision 90) or from points
uniform in the unit ball (``init="noise"``, the data's normalisation). For part segmentation (GM,
Eq. 11, decision 81) every point keeps its real cloud's part and the matching alternates global
and per-part steps. Several processes share the classes (decision 84).
"""
from __future__ import annotations

import numpy as np
import torch

from train.condense.methods.coreset import random_order, select_per_class
from train.condense.files.distill_checkpoint import Checkpoint
from train.condense.matching.controls import StepNorms, matched_strength
from train.condense.matching.matching_loops import (STATISTICS_CLOUDS, Batch, DistillSpec, match_distributions,
                                                    match_gradients, real_sampler)
from train.condense.matching.released import loops_of
from train.data.objects import ObjectSet
from train.runtime.distributed import DistInfo

INITS = ("real", "noise")
SGD_MOMENTUM = 0.5  # Dataset Condensation's optimizer_img
OPTIMIZERS = ("adam", "sgd")
# per explicit method, its default optimiser and the learning rates chosen on validation (decision 93);
# an optimiser without one here takes a rate only when it is given
CLOUD_STEPS: dict[str, tuple[str, dict[str, float]]] = {
    "gm": ("adam", {"adam": 1e-3, "sgd": 1e-5}),
    "dm": ("sgd", {"sgd": 1e-3, "adam": 1e-2}),
    "tm": ("adam", {"adam": 1e-3}),
}


def cloud_step(method: str, spec: DistillSpec) -> tuple[str, float]:
    """The optimiser and learning rate of ``method``'s clouds: ``spec``'s, else the method's
    default optimiser, and that optimiser's validated rate unless ``spec`` gives one."""
    default, rates = CLOUD_STEPS[method]
    name = default if spec.cloud_optimizer is None else spec.cloud_optimizer
    if name not in OPTIMIZERS:
        raise ValueError(f"cloud optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
    if spec.cloud_lr is None and name not in rates:
        raise ValueError(f"{method} has no {name} learning rate chosen on validation: give one (--cloud-lr)")
    lr = rates[name] if spec.cloud_lr is None else spec.cloud_lr
    if not lr > 0:
        raise ValueError(f"the clouds' learning rate (--cloud-lr) must be positive, got {lr}")
    return name, lr


def cloud_optimizer(method: str, spec: DistillSpec, clouds: torch.Tensor) -> torch.optim.Optimizer:
    """The optimiser of ``method``'s synthetic clouds (:func:`cloud_step`; no weight decay)."""
    name, lr = cloud_step(method, spec)
    if name == "sgd":
        return torch.optim.SGD([clouds], lr=lr, momentum=SGD_MOMENTUM)
    return torch.optim.Adam([clouds], lr=lr)


def check_init(init: str, parts: bool) -> None:
    """ValueError in one line for a start that is not one of :data:`INITS`, or noise for a part
    segmentation set (``parts``)."""
    if init not in INITS:
        raise ValueError(f"init {init!r} is not one of {', '.join(INITS)}")
    if init == "noise" and parts:
        raise ValueError("init 'noise' gives no part labels: part segmentation starts from real clouds")


def initial_clouds(train: ObjectSet, cpc: int, seed: int, init: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The starting synthetic clouds (M, N, 3) float32, their labels (M,) and, for part segmentation,
    their points' parts (M, N) (the real clouds' own), class by class."""
    check_init(init, train.parts is not None)
    if init == "real":
        index = select_per_class(train.labels, np.empty((len(train), 0)), cpc, random_order, seed)
        parts = None if train.parts is None else train.parts[index].copy()
        return train.points[index].copy(), train.labels[index].copy(), parts
    classes = np.unique(train.labels)
    rng = np.random.default_rng(seed)
    shape = (len(classes) * cpc, train.points.shape[1])
    direction = rng.normal(size=(*shape, 3))
    radius = rng.uniform(size=(*shape, 1)) ** (1.0 / 3.0)  # uniform in the ball's volume
    points = direction / np.linalg.norm(direction, axis=-1, keepdims=True) * radius
    return points.astype(np.float32), np.repeat(classes, cpc).astype(np.int64), None


def distill_explicit(train: ObjectSet, cpc: int, seed: int, spec: DistillSpec, info: DistInfo, method: str,
                     checkpoint: Checkpoint | None = None, norms: list[StepNorms] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[float]]:
    """``method`` ("gm" or "dm") on explicit clouds: the synthetic points, their labels, their parts
    (part segmentation, GM only: the initial clouds' parts, kept) and the loss history; with
    ``spec.control`` or ``spec.topo_ratio`` the matched steps' gradient norms appended to ``norms``
    (:class:`train.condense.matching.controls.MatchedStrength`, whose start is each initial cloud)."""
    if method not in ("gm", "dm"):
        raise ValueError(f"explicit clouds are distilled by gm or dm, got {method!r}")
    points, labels, parts = initial_clouds(train, cpc, seed, spec.init)
    torch.manual_seed(seed)
    draws = torch.Generator().manual_seed(seed)
    synthetic = torch.nn.Parameter(torch.from_numpy(points).to(info.device))
    rows = {int(k): torch.from_numpy(np.flatnonzero(labels == k)).to(info.device) for k in np.unique(labels)}
    classes = sorted(rows)
    real_parts = None if train.parts is None else torch.from_numpy(train.parts).to(info.device)
    real = real_sampler(torch.from_numpy(train.points).to(info.device), train.labels, spec.real_batch, draws,
                        real_parts)
    synthetic_parts = None if parts is None else torch.from_numpy(parts).to(info.device)

    def batch(k: int) -> Batch:
        return synthetic[rows[k]], None if synthetic_parts is None else synthetic_parts[rows[k]]
    optimizer = cloud_optimizer(method, spec, synthetic)
    num_classes = len(train.class_names)
    if method == "gm":
        num_parts = None if train.part_classes is None else len(train.part_classes)
        statistics = None if real_parts is None else real_sampler(
            torch.from_numpy(train.points).to(info.device), train.labels, STATISTICS_CLOUDS, draws, real_parts)
        strength = matched_strength(spec.control, spec.topo_ratio, [synthetic],
                                    {k: synthetic.detach()[r].clone() for k, r in rows.items()}, norms)
        history = match_gradients(optimizer, classes, num_classes, loops_of(train, cpc), real, batch, spec, draws, info,
                                  checkpoint, desc=f"GM CPC {cpc}", num_parts=num_parts, statistics=statistics,
                                  strength=strength)
    else:
        history = match_distributions(optimizer, classes, num_classes, real, batch, spec, draws, info, checkpoint,
                                      desc=f"DM CPC {cpc}")
    return synthetic.detach().cpu().numpy(), labels, parts, history
