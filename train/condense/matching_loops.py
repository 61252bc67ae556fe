"""The outer and inner loops of gradient matching (Dataset Condensation, Zhao et al. 2021, Algorithm
1; DD3D Eq. 10) and of distribution matching (Zhao & Bilen 2023), shared by the explicit clouds and
DD3D's generator (decision 78).

Gradient matching, :func:`match_gradients`: every outer iteration draws a fresh lightweight
PointNet; ``outer`` times it takes, per class k, a real batch of class k and that class's synthetic
clouds, the gradients of the cross-entropy with respect to every weight on each side, and Eq. 10's
distance ``D`` (``fast.gradient_match_distance``); the per-class distances are summed and one step
of the synthetic parameters' optimiser is taken; between two such steps the network takes
``inner`` SGD steps on the synthetic set (drawn anew, detached). Distribution matching,
:func:`match_distributions`: every iteration a fresh PointNet with random weights embeds a real
batch per class and the synthetic set (its 1,024-wide global feature), and one step matches the
class means (``fast.distribution_match_loss``). The learning rate is cut by 10 at half the
iterations. Both return each iteration's mean matching loss. For part segmentation (Eq. 11,
decision 81) a batch carries its points' parts, the network is the part segmenter and gradient
matching alternates global and per-part outer steps.

Several processes (decision 84): both losses are sums over classes, so rank r takes the classes
``classes[r::world]`` and sums only their terms; the synthetic parameters' gradients and the loss
are summed over the ranks (one all_reduce) before the optimiser's step, which every rank takes, so
every rank holds the same parameters. Every rank still draws every class's batches, in one
process's order (the others' without gradients), and takes the same inner steps on the whole
synthetic set, so the fresh networks, the inner steps and every draw are one process's.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fast import distribution_match_loss, gradient_match_distance
from train.condense.distill_checkpoint import Checkpoint
from train.condense.topology_term import Term, topology_term
from train.models.objects import build_object_model
from train.runtime.distributed import DistInfo, all_reduce_sum
from train.runtime.logging_utils import progress

# (outer, inner) loops by CPC (the released code's, decision 78); another CPC takes the largest listed below it
LOOPS = {1: (5, 5), 10: (20, 10), 50: (40, 5)}
INNER_BATCH = 256  # synthetic clouds a network step (Dataset Condensation's batch_train)
DECAY_FACTOR = 0.1  # the learning rate at half the iterations

Batch = tuple[torch.Tensor, "torch.Tensor | None"]  # (B, N, 3) clouds and, for part segmentation, (B, N) part ids
ClassClouds = Callable[[int], Batch]  # class k -> a batch of its clouds
IGNORED = -100  # the part id cross-entropy skips: the points outside the part a local match looks at


@dataclass(frozen=True)
class DistillSpec:
    """How a distillation method runs (decision 78 gives the defaults and where they differ from
    the released code): ``iterations`` outer iterations, Adam's ``lr`` and ``weight_decay`` (the
    generator's; explicit clouds take none), the network's SGD ``net_lr``, ``real_batch`` real
    clouds a class, ``init`` of explicit clouds (``real`` or ``noise``, Table 6), a checkpoint every
    ``checkpoint_every`` iterations and ``resume`` from it (decision 80); gradient matching adds
    ``topo_weight`` times the persistence term of reading ``topo`` to each class's distance
    (:mod:`train.condense.topology_term`, decision 96; None: no term)."""

    iterations: int = 400
    lr: float = 1e-3
    weight_decay: float = 5e-4
    net_lr: float = 1e-3
    real_batch: int = 32
    init: str = "real"
    checkpoint_every: int = 10
    resume: bool = False
    topo: str | None = None
    topo_weight: float = 0.0


def loops_for(cpc: int) -> tuple[int, int]:
    """The (outer, inner) loops at ``cpc`` clouds per class (:data:`LOOPS`)."""
    return LOOPS[max(c for c in LOOPS if c <= cpc)]


def real_sampler(points: torch.Tensor, labels: np.ndarray, batch: int, generator: torch.Generator,
                 parts: torch.Tensor | None = None) -> ClassClouds:
    """Class k -> ``min(batch, n_k)`` of its real clouds (and their parts), drawn without replacement each call."""
    members = {int(k): torch.from_numpy(np.flatnonzero(labels == k)) for k in np.unique(labels)}

    def draw(k: int) -> Batch:
        rows = members[k]
        chosen = rows[torch.randperm(len(rows), generator=generator)[:batch]]
        return points[chosen], None if parts is None else parts[chosen]
    return draw


def fresh_network(num_classes: int, device: torch.device, num_parts: int | None = None) -> torch.nn.Module:
    """The lightweight PointNet (the part segmenter with ``num_parts``) with new weights (from torch's
    global seed), in training mode."""
    task = "classification" if num_parts is None else "parts"
    return build_object_model("pointnet", num_classes, task, num_parts).to(device).train()


def _logits(net: torch.nn.Module, points: torch.Tensor, labels: torch.Tensor, segment: bool) -> torch.Tensor:
    """The class logits (B, K), or with ``segment`` the part logits (B, N, P) given the clouds' classes."""
    return net(points, F.one_hot(labels, net.num_categories)) if segment else net(points)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, parts: torch.Tensor | None) -> torch.Tensor:
    if parts is None:
        return F.cross_entropy(logits, labels)
    return F.cross_entropy(logits.flatten(0, 1), parts.flatten(), ignore_index=IGNORED)


def task_loss(net: torch.nn.Module, points: torch.Tensor, parts: torch.Tensor | None, labels: torch.Tensor
              ) -> torch.Tensor:
    """The mean cross-entropy of the classes, or of the parts (ids :data:`IGNORED` skipped)."""
    return _cross_entropy(_logits(net, points, labels, parts is not None), labels, parts)


def _gradients(net: torch.nn.Module, batch: Batch, k: int, parts: list[int | None], create_graph: bool
               ) -> list[list[torch.Tensor]]:
    """Per entry of ``parts``, the weights' gradients of class k's loss on the batch: on every point
    (None) or on that part's points alone. One forward pass serves every part: each part's loss
    reads the same logits (the network sees the whole clouds either way), so only the backward
    passes are per part."""
    points, point_parts = batch
    labels = torch.full((len(points),), k, dtype=torch.long, device=points.device)
    logits = _logits(net, points, labels, point_parts is not None)
    params = list(net.parameters())
    out = []
    for i, part in enumerate(parts):
        masked = point_parts if part is None else point_parts.masked_fill(point_parts != part, IGNORED)
        loss = _cross_entropy(logits, labels, masked)
        out.append(list(torch.autograd.grad(loss, params, create_graph=create_graph,
                                            retain_graph=create_graph or i < len(parts) - 1)))
    return out


def own_classes(classes: list[int], info: DistInfo) -> set[int]:
    """The classes whose matching terms this rank sums: ``classes[rank::world]`` (module docstring)."""
    if info.world_size > len(classes):
        raise ValueError(f"{info.world_size} processes share {len(classes)} classes: a rank matches whole classes, "
                         f"so run at most {len(classes)} processes")
    return set(classes[info.rank::info.world_size])


def _draw(k: int, own: Collection[int], sampler: ClassClouds) -> Batch | None:
    """Class k's batch when it is one of ``own``; else it is drawn without gradients, for the draws only, and None."""
    if k in own:
        return sampler(k)
    with torch.no_grad():
        sampler(k)
    return None


def class_distances(net: torch.nn.Module, classes: list[int], real: ClassClouds, synthetic: ClassClouds,
                    local: bool = False, own: Collection[int] | None = None, topo: Term | None = None
                    ) -> Iterator[torch.Tensor]:
    """Eq. (10) (Eq. 11 for parts) class by class: the distance D between the real and the synthetic
    gradients of each of the ``own`` classes (default all); ``local``: per part of the class present
    on both sides, the other parts' points masked out (DD3D Sec. 4.3's local matching), summed.
    ``topo``: a persistence term of the class's real and synthetic clouds added to each distance.
    Every class's batches are drawn, in order, the next class's after the consumer has taken a term."""
    own = classes if own is None else own
    for k in classes:
        real_batch, synthetic_batch = _draw(k, own, real), _draw(k, own, synthetic)
        if real_batch is None or synthetic_batch is None:
            continue
        parts: list[int | None] = [None]
        if local:
            parts = sorted(set(real_batch[1].unique().tolist()) & set(synthetic_batch[1].unique().tolist()))
        targets = _gradients(net, real_batch, k, parts, create_graph=False)
        distance = torch.zeros((), device=next(net.parameters()).device)
        for grads, target in zip(_gradients(net, synthetic_batch, k, parts, create_graph=True), targets):
            distance = distance + gradient_match_distance(grads, [g.detach() for g in target])
        if topo is not None:
            distance = distance + topo(net, real_batch[0], synthetic_batch[0])
        yield distance


def gradient_match_loss(net: torch.nn.Module, classes: list[int], real: ClassClouds, synthetic: ClassClouds,
                        local: bool = False) -> torch.Tensor:
    """Eq. (10) (Eq. 11 for parts): :func:`class_distances` of every class, summed."""
    return sum(class_distances(net, classes, real, synthetic, local), torch.zeros(()))


def decay_at_half(optimizer: torch.optim.Optimizer, iteration: int, iterations: int) -> None:
    """The learning rate times :data:`DECAY_FACTOR` at iteration ``iterations // 2``."""
    if iteration == iterations // 2 and iteration > 0:
        for group in optimizer.param_groups:
            group["lr"] *= DECAY_FACTOR


def _stacked(classes: list[int], batches: list[Batch]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The batches of every class in one: clouds, parts (or None) and class ids."""
    clouds = [b[0] for b in batches]
    labels = torch.cat([torch.full((len(c),), k, dtype=torch.long) for k, c in zip(classes, clouds)])
    parts = None if batches[0][1] is None else torch.cat([b[1] for b in batches])
    return torch.cat(clouds), parts, labels.to(clouds[0].device)


def summed_step(optimizer: torch.optim.Optimizer, terms: Iterable[torch.Tensor], info: DistInfo) -> float:
    """One step of ``optimizer`` on the sum of this rank's loss ``terms`` over all ranks; that sum.
    Each term's gradients (and value) are added in float64, and the ranks' sums added by one
    all_reduce, so the float32 gradient is the same for any split of the terms over the ranks."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sums = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    value = torch.zeros(1, dtype=torch.float64, device=params[0].device)
    for term in terms:
        for total, grad in zip(sums, torch.autograd.grad(term, params, allow_unused=True)):
            if grad is not None:
                total.add_(grad)
        value += term.detach()
    flat = all_reduce_sum(torch.cat([*(total.reshape(-1) for total in sums), value]))
    for p, total in zip(params, flat[:-1].split([p.numel() for p in params])):
        p.grad = total.view_as(p).to(p.dtype)
    optimizer.step()
    return flat[-1].item()


def match_gradients(optimizer: torch.optim.Optimizer, classes: list[int], num_classes: int, cpc: int,
                    real: ClassClouds, synthetic: ClassClouds, spec: DistillSpec, generator: torch.Generator,
                    info: DistInfo, checkpoint: Checkpoint | None = None, desc: str = "gradient matching",
                    num_parts: int | None = None) -> list[float]:
    """Gradient matching (module docstring) of the parameters ``optimizer`` holds, this rank's classes
    matched; the mean D of each iteration. ``checkpoint``: saved as it says and resumed from
    (decision 80). With ``num_parts`` (part segmentation, Eq. 11) the outer steps alternate global
    and local matching (decision 81)."""
    outer, inner = loops_for(cpc)
    own = own_classes(classes, info)
    topo = topology_term(spec.topo, spec.topo_weight)
    start, history = (0, []) if checkpoint is None else checkpoint.restore([optimizer], generator)
    for iteration in progress(range(start, spec.iterations), desc=desc, enabled=info.is_main):
        decay_at_half(optimizer, iteration, spec.iterations)
        net = fresh_network(num_classes, info.device, num_parts)
        net_step = torch.optim.SGD(net.parameters(), lr=spec.net_lr)
        total = 0.0
        for step in range(outer):
            local = num_parts is not None and step % 2 == 1
            total += summed_step(optimizer, class_distances(net, classes, real, synthetic, local, own, topo),
                                 info)
            if step == outer - 1:
                break
            with torch.no_grad():
                points, parts, labels = _stacked(classes, [synthetic(k) for k in classes])
            for _ in range(inner):
                rows = torch.randperm(len(labels), generator=generator)[:INNER_BATCH].to(info.device)
                net_step.zero_grad()
                task_loss(net, points[rows], None if parts is None else parts[rows], labels[rows]).backward()
                net_step.step()
        history.append(total / outer)
        if checkpoint is not None:
            checkpoint.save_if_due(iteration + 1, [optimizer], generator, history)
    return history


def match_distributions(optimizer: torch.optim.Optimizer, classes: list[int], num_classes: int, real: ClassClouds,
                        synthetic: ClassClouds, spec: DistillSpec, generator: torch.Generator, info: DistInfo,
                        checkpoint: Checkpoint | None = None, desc: str = "distribution matching") -> list[float]:
    """Distribution matching (module docstring) of the parameters ``optimizer`` holds, this rank's
    classes matched; each iteration's loss. ``generator``: the draws of ``real``, saved with the
    ``checkpoint``."""
    own = own_classes(classes, info)
    start, history = (0, []) if checkpoint is None else checkpoint.restore([optimizer], generator)
    for iteration in progress(range(start, spec.iterations), desc=desc, enabled=info.is_main):
        decay_at_half(optimizer, iteration, spec.iterations)
        net = fresh_network(num_classes, info.device)
        history.append(summed_step(optimizer, [class_mean_distance(net, classes, real, synthetic, own)], info))
        if checkpoint is not None:
            checkpoint.save_if_due(iteration + 1, [optimizer], generator, history)
    return history


def class_mean_distance(net: torch.nn.Module, classes: list[int], real: ClassClouds, synthetic: ClassClouds,
                        own: Collection[int] | None = None) -> torch.Tensor:
    """The distribution-matching loss of ``net``'s global features: real batches against the synthetic
    set, summed over the ``own`` classes (default all); every class's batches are drawn, in order."""
    own = classes if own is None else own
    mine = [k for k in classes if k in own]
    with torch.no_grad():
        real_batches = [_draw(k, own, real) for k in classes]
        real_points, _, real_labels = _stacked(mine, [b for b in real_batches if b is not None])
        real_features = net.embed(real_points)
    synthetic_batches = [_draw(k, own, synthetic) for k in classes]
    points, _, labels = _stacked(mine, [b for b in synthetic_batches if b is not None])
    return distribution_match_loss(net.embed(points), labels, real_features, real_labels)
