"""The outer and inner loops of gradient matching (Dataset Condensation, Zhao et al. 2021, Algorithm
1; DD3D Eq. 10) and of distribution matching (Zhao & Bilen 2023), shared by the explicit clouds and
DD3D's generator (decisions 78 and 92).

Gradient matching, :func:`match_gradients`: every outer iteration draws a fresh lightweight
PointNet; ``outer`` times it takes, per class k, a real batch of class k and that class's synthetic
clouds, the gradients of the cross-entropy with respect to every weight on each side, and Eq. 10's
distance ``D`` (``fast.gradient_match_distance``); the per-class distances are summed and one step
of the synthetic parameters' optimiser is taken; between two such steps the network trains
``inner`` epochs on the synthetic set (drawn anew, detached) in shuffled batches, its SGD learning
rate cut by 10 after half of the iteration's ``outer x inner`` epochs where the loops say so
(:class:`train.condense.matching.released.Loops`, the released code's by data set, setting and task). A
network with batch normalisation (the part segmenter) first runs a few real clouds of every class
in training mode before each outer step and matches with its running statistics frozen (Dataset
Condensation's ``BNSizePC``). Distribution matching, :func:`match_distributions`: every iteration a
fresh PointNet with random weights embeds a real batch per class and the synthetic set (its
1,024-wide global feature), and one step matches the class means
(``fast.distribution_match_loss``). The synthetic parameters' learning rate is cut by 10 at half the
iterations (gradient matching: where the loops say so). Both return each iteration's mean matching
loss. For part segmentation (Eq. 11, decision 81) a batch carries its points' parts, the network is
the part segmenter and gradient matching alternates global and per-part outer steps.

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
from train.condense.files.distill_checkpoint import Checkpoint
from train.condense.matching.released import Loops
from train.condense.matching.controls import MatchedStrength
from train.condense.matching.topology_term import Batch, Term, topology_term
from train.models.objects import build_object_model
from train.runtime.distributed import DistInfo, all_reduce_sum
from train.runtime.logging_utils import progress

DECAY_FACTOR = 0.1  # the learning rate at half the iterations (and the network's at half its inner epochs)
STATISTICS_CLOUDS = 8  # real clouds a class for a batch-normalised network's statistics (seg_inr.py's BNSizePC)
CHUNK_POINTS = 512  # points a forward and backward pass takes on a CPU (decision 95)

ClassClouds = Callable[[int], Batch]  # class k -> a batch of its clouds
IGNORED = -100  # the part id cross-entropy skips: the points outside the part a local match looks at


@dataclass(frozen=True)
class DistillSpec:
    """How a distillation method runs (decisions 78, 92 and 93 give the defaults and where they
    differ from the released code): ``iterations`` outer iterations (None: the data set's released
    count, :func:`train.condense.matching.released.iterations_for`), the network's SGD ``net_lr``,
    ``real_batch`` real clouds a class, ``init`` of explicit clouds (``real`` or ``noise``, Table 6),
    their ``cloud_optimizer`` (``adam`` or ``sgd``) and ``cloud_lr`` (None: the method's chosen on
    validation, decision 93, :func:`train.condense.methods.explicit.cloud_step`; DD3D's generator takes the
    released optimiser of its task, :func:`train.condense.matching.released.generator_adam`), a checkpoint
    every ``checkpoint_every`` iterations and ``resume`` from it (decision 80; ``"matching"``: only
    from a checkpoint of this run, else afresh, as the study's units do); gradient matching adds
    ``topo_weight`` times the persistence term of reading ``topo`` to each class's distance
    (:mod:`train.condense.matching.topology_term`, decision 96; None: no term), or with ``topo_ratio``
    the term at ``topo_ratio`` times the matching distance's gradient norm (decision 102), and with
    ``control`` a geometric control in its place at its gradient norm
    (:mod:`train.condense.matching.controls`, decision 101); DD3D's generator takes ``noise_dims``
    noise scalars a point (1 as released, 2: a surface, decision 101)."""

    iterations: int | None = None
    net_lr: float = 1e-3
    real_batch: int = 32
    init: str = "real"
    cloud_optimizer: str | None = None
    cloud_lr: float | None = None
    checkpoint_every: int = 10
    resume: bool | str = False
    topo: str | None = None
    topo_weight: float = 0.0
    topo_ratio: float | None = None
    control: str | None = None
    noise_dims: int = 1


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``; to a GPU through page-locked memory, so the host does not wait for the copy."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def real_sampler(points: torch.Tensor, labels: np.ndarray, batch: int, generator: torch.Generator,
                 parts: torch.Tensor | None = None) -> ClassClouds:
    """Class k -> ``min(batch, n_k)`` of its real clouds (and their parts), drawn without replacement each call."""
    members = {int(k): torch.from_numpy(np.flatnonzero(labels == k)) for k in np.unique(labels)}

    def draw(k: int) -> Batch:
        rows = members[k]
        chosen = to_device(rows[torch.randperm(len(rows), generator=generator)[:batch]], points.device)
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


def _chunks(points: torch.Tensor, segment: bool) -> list[slice]:
    """The slices of a batch of clouds that one forward and backward pass takes (decision 95): on a
    CPU about :data:`CHUNK_POINTS` points (at least one cloud), so that the activations stay in the
    cache, on a GPU the whole batch. The classifier's clouds are independent (instance norm), so
    a batch's gradient is the sum of its chunks'; the part segmenter's batch norm couples them, so
    its batch is one chunk."""
    clouds = len(points)
    step = max(1, clouds if segment or points.device.type != "cpu" else CHUNK_POINTS // points.shape[1])
    return [slice(i, i + step) for i in range(0, clouds, step)]


def _chunk_loss(logits: torch.Tensor, labels: torch.Tensor, parts: torch.Tensor | None, clouds: int) -> torch.Tensor:
    """A chunk's share of the batch's mean cross-entropy: the classes' summed over the chunk over the
    batch's ``clouds``; the parts' mean (the part segmenter's batch is one chunk)."""
    if parts is None:
        return F.cross_entropy(logits, labels, reduction="sum") / clouds
    return _cross_entropy(logits, labels, parts)


def task_backward(net: torch.nn.Module, points: torch.Tensor, parts: torch.Tensor | None, labels: torch.Tensor
                  ) -> None:
    """:func:`task_loss`'s gradient added to the weights' ``.grad``, one backward pass a chunk (:func:`_chunks`)."""
    for rows in _chunks(points, parts is not None):
        chunk_parts = None if parts is None else parts[rows]
        logits = _logits(net, points[rows], labels[rows], parts is not None)
        _chunk_loss(logits, labels[rows], chunk_parts, len(points)).backward()


def _gradients(net: torch.nn.Module, batch: Batch, k: int, parts: list[int | None], create_graph: bool
               ) -> list[list[torch.Tensor]]:
    """Per entry of ``parts``, the weights' gradients of class k's loss on the batch: on every point
    (None) or on that part's points alone, summed over the batch's chunks (:func:`_chunks`). One
    forward pass a chunk serves every part: each part's loss reads the same logits (the network
    sees the whole clouds either way), so only the backward passes are per part."""
    points, point_parts = batch
    segment = point_parts is not None
    labels = torch.full((len(points),), k, dtype=torch.long, device=points.device)
    params = list(net.parameters())
    sums: list[list[torch.Tensor]] = []
    for rows in _chunks(points, segment):
        chunk_parts = None if point_parts is None else point_parts[rows]
        logits = _logits(net, points[rows], labels[rows], segment)
        for i, part in enumerate(parts):
            masked = chunk_parts if part is None else chunk_parts.masked_fill(chunk_parts != part, IGNORED)
            grads = torch.autograd.grad(_chunk_loss(logits, labels[rows], masked, len(points)), params,
                                        create_graph=create_graph, retain_graph=create_graph or i < len(parts) - 1)
            if i < len(sums):
                sums[i] = [total + grad for total, grad in zip(sums[i], grads)]
            else:
                sums.append(list(grads))
    return sums


def check_processes(processes: int, classes: int) -> None:
    """ValueError in one line when ``processes`` ranks would share ``classes`` classes: a rank
    matches whole classes (decision 84)."""
    if processes > classes:
        raise ValueError(f"{processes} processes share {classes} classes: a rank matches whole classes, so run at "
                         f"most {classes} processes")


def own_classes(classes: list[int], info: DistInfo) -> set[int]:
    """The classes whose matching terms this rank sums: ``classes[rank::world]`` (module docstring)."""
    check_processes(info.world_size, len(classes))
    return set(classes[info.rank::info.world_size])


def class_gradients(net: torch.nn.Module, batch: Batch, k: int) -> list[torch.Tensor]:
    """The weights' gradients of class k's loss on every point of the batch, without a graph: one side
    of Eq. (10)'s D, for scoring sets on networks whose real side is computed once."""
    return _gradients(net, batch, k, [None], create_graph=False)[0]


def _draw(k: int, own: Collection[int], sampler: ClassClouds) -> Batch | None:
    """Class k's batch when it is one of ``own``; else it is drawn without gradients, for the draws only, and None."""
    if k in own:
        return sampler(k)
    with torch.no_grad():
        sampler(k)
    return None


def class_distances(net: torch.nn.Module, classes: list[int], real: ClassClouds, synthetic: ClassClouds,
                    local: bool = False, own: Collection[int] | None = None, topo: Term | None = None,
                    strength: MatchedStrength | None = None) -> Iterator[torch.Tensor]:
    """Eq. (10) (Eq. 11 for parts) class by class: the distance D between the real and the synthetic
    gradients of each of the ``own`` classes (default all); ``local``: per part of the class present
    on both sides, the other parts' points masked out (DD3D Sec. 4.3's local matching), summed.
    ``topo``: a persistence term of the class's real and synthetic clouds added to each distance
    (with ``strength``: scaled relative to the distance, or a control in its place). Every class's batches are drawn, in order, the next class's after the consumer has taken a term."""
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
            term = topo(net, real_batch, synthetic_batch)
            distance = distance + (term if strength is None else strength(k, real_batch, synthetic_batch, distance,
                                                                          term))
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
    return torch.cat(clouds), parts, to_device(labels, clouds[0].device)


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


def freeze_batch_norm(net: torch.nn.Module, classes: list[int], statistics: ClassClouds) -> None:
    """Dataset Condensation's batch-norm statistics: ``statistics``' clouds of every class through
    ``net`` in training mode (its running statistics move towards theirs by the layers' momentum),
    then every batch-norm layer in evaluation mode, so the matching uses those statistics."""
    with torch.no_grad():
        points, parts, labels = _stacked(classes, [statistics(k) for k in classes])
        net.train()
        _logits(net, points, labels, parts is not None)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def train_epoch(net: torch.nn.Module, net_step: torch.optim.Optimizer, points: torch.Tensor,
                parts: torch.Tensor | None, labels: torch.Tensor, batch: int, generator: torch.Generator) -> None:
    """One epoch of ``net`` in training mode over the clouds, in batches of ``batch`` in an order from ``generator``."""
    net.train()
    for rows in to_device(torch.randperm(len(labels), generator=generator), labels.device).split(batch):
        net_step.zero_grad()
        task_backward(net, points[rows], None if parts is None else parts[rows], labels[rows])
        net_step.step()


def match_gradients(optimizer: torch.optim.Optimizer, classes: list[int], num_classes: int, loops: Loops,
                    real: ClassClouds, synthetic: ClassClouds, spec: DistillSpec, generator: torch.Generator,
                    info: DistInfo, checkpoint: Checkpoint | None = None, desc: str = "gradient matching",
                    num_parts: int | None = None, inner_set: ClassClouds | None = None,
                    statistics: ClassClouds | None = None, strength: MatchedStrength | None = None) -> list[float]:
    """Gradient matching (module docstring) of the parameters ``optimizer`` holds with ``loops``, this
    rank's classes matched; the mean D of each iteration. ``checkpoint``: saved as it says and
    resumed from (decision 80). With ``num_parts`` (part segmentation, Eq. 11) the outer steps
    alternate global and local matching (decision 81). ``inner_set``: class k's synthetic clouds the
    network trains on (default ``synthetic``); ``statistics``: class k's real clouds for the
    batch-norm statistics (:func:`freeze_batch_norm`; none for a network without batch norm);
    ``strength``: the persistence term's ratio or control (``spec.topo_ratio``, ``spec.control``),
    built by the method."""
    own = own_classes(classes, info)
    inner_set = synthetic if inner_set is None else inner_set
    topo = topology_term(spec.topo, spec.topo_weight if spec.topo_ratio is None else 1.0)
    start, history = (0, []) if checkpoint is None else checkpoint.restore([optimizer], generator)
    for iteration in progress(range(start, spec.iterations), desc=desc, enabled=info.is_main):
        if loops.decay:
            decay_at_half(optimizer, iteration, spec.iterations)
        net = fresh_network(num_classes, info.device, num_parts)
        net_step = torch.optim.SGD(net.parameters(), lr=spec.net_lr)
        total, epochs = 0.0, 0
        for step in range(loops.outer):
            if statistics is not None:
                freeze_batch_norm(net, classes, statistics)
            local = num_parts is not None and step % 2 == 1
            total += summed_step(optimizer, class_distances(net, classes, real, synthetic, local, own, topo,
                                                            strength), info)
            if step == loops.outer - 1:
                break
            with torch.no_grad():
                points, parts, labels = _stacked(classes, [inner_set(k) for k in classes])
            for _ in range(loops.inner):
                if loops.net_decay:
                    decay_at_half(net_step, epochs, loops.outer * loops.inner)
                train_epoch(net, net_step, points, parts, labels, loops.batch, generator)
                epochs += 1
        history.append(total / loops.outer)
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
