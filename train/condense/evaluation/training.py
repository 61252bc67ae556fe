"""Training a backbone from scratch on a set of object clouds, and its predictions: the engine of
the condensation protocol (decisions 72, 73 and 94), in one process or several.

:func:`train_backbone` trains as its :class:`TrainSpec` says, counted in one of two forms:

- ``steps`` (the ``cpu`` recipe): that many updates, each on the next ``min(spec.batch_size, S)``
  clouds of an endless stream of seeded permutations of the set, the learning rate on a cosine
  from ``spec.lr`` to ``spec.lr_end`` over the steps;
- ``epochs`` (the ``paper`` recipe, DD3D's released evaluation): that many passes, each a fresh
  seeded permutation cut into batches of ``min(spec.batch_size, S)`` (the last one shorter), the
  learning rate fixed within a pass and on a cosine from ``spec.lr`` at the first pass to
  ``spec.lr_end`` at the last (:func:`epoch_lr`); after every ``spec.test_every`` th pass (and
  the last) a ``watch`` callback may score the model (the best-test-epoch number, decision 94).

Adam or SGD with momentum 0.9, with ``spec.weight_decay`` (L2 added to the gradient, as
``torch.optim`` does); every batch augmented as ``spec.augmentation`` names
(:mod:`train.condense.evaluation.augment`); cross-entropy on the class (classification) or on every point's
part (part segmentation, the category given one-hot). The model of the last step is returned. A
batch's clouds are the set's rows, or drawn afresh from the run's random stream where the set has
a :data:`BatchSource` (DD3D's generator resampled, :mod:`train.condense.methods.resample`).

Several processes (``torchrun`` or ``--procs``): every rank draws the same global batch and the
same augmentation, takes its rows ``rank::world`` and adds its cross-entropy summed over its rows
divided by the global batch; the gradients are summed over the ranks. The sum of the ranks' losses
is the one process's mean, so with the instance-normalised PointNet the ranks compute one
process's step up to float rounding; networks with batch normalisation see their statistics per
rank (rank 0's are broadcast before a watch and at the end). :func:`predict` shares the clouds
out the same way and gathers the predictions in the set's order.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from train.condense.evaluation.augment import AUGMENTATIONS
from train.models.objects import build_object_model
from train.runtime.distributed import DistInfo, all_gather_objects, all_reduce_sum, broadcast_buffers
from train.runtime.logging_utils import progress

PREDICT_CHUNK = 64  # clouds per forward pass in predict

# The clouds (B, N, 3) float32 of the set's rows ``index`` and their parts (B, N) int64 (None for
# classification), drawn with the given random stream.
BatchSource = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass(frozen=True)
class Clouds:
    """What a backbone trains or is evaluated on: ``points`` (S, N, 3) float32, ``labels`` (S,) int64,
    ``num_classes``; for part segmentation ``parts`` (S, N) int64 and ``part_classes`` (P,) int64,
    the category of each part id. ``source``: where training batches come from instead of the rows
    of ``points`` and ``parts`` (None: those rows)."""

    points: np.ndarray
    labels: np.ndarray
    num_classes: int
    parts: np.ndarray | None = None
    part_classes: np.ndarray | None = None
    source: BatchSource | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor, draws: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The clouds and parts of the rows ``index`` for a training step (``draws`` only for a ``source``)."""
        if self.source is not None:
            return self.source(index, draws)
        rows = index.numpy()
        return torch.from_numpy(self.points[rows]), None if self.parts is None else torch.from_numpy(self.parts[rows])

    @property
    def task(self) -> str:
        return "classification" if self.parts is None else "parts"


OPTIMIZERS = ("adam", "sgd")  # sgd: momentum 0.9 (the released part-segmentation evaluation's)

# A model after a pass, and the passes done: the test scoring of the best-test-epoch number.
Watch = Callable[[nn.Module, int], None]


@dataclass(frozen=True)
class TrainSpec:
    """How a backbone is trained (module docstring; the named recipes and their sources are
    :mod:`train.condense.evaluation.recipes`, decision 94): ``steps`` or ``epochs`` (exactly one given),
    ``lr`` at the start on a cosine to ``lr_end``, ``batch_size`` clouds a step (the whole set when
    smaller), ``weight_decay``, ``optimizer`` one of :data:`OPTIMIZERS`, ``augmentation`` one of
    :data:`train.condense.evaluation.augment.AUGMENTATIONS`, ``test_every`` passes between the test scorings
    of the best-test-epoch number (0: none; epochs only), ``recipe`` the name it was made from."""

    model: str = "pointnet"
    steps: int | None = 300
    epochs: int | None = None
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    lr_end: float = 0.0
    optimizer: str = "adam"
    augmentation: str = "protocol"
    test_every: int = 0
    recipe: str = "cpu"

    def __post_init__(self) -> None:
        def count(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 1
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(f"a recipe counts steps or epochs, exactly one; got steps {self.steps}, epochs "
                             f"{self.epochs}")
        for name in ("steps", "epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and not count(value):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0 or not 0 <= self.lr_end <= self.lr:
            raise ValueError(f"the learning rate must be positive and end between 0 and itself, got lr {self.lr}, "
                             f"lr_end {self.lr_end}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be 0 or more, got {self.weight_decay}")
        if self.optimizer not in OPTIMIZERS or self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"optimizer {self.optimizer!r} / augmentation {self.augmentation!r}: not among "
                             f"{OPTIMIZERS} / {tuple(AUGMENTATIONS)}")
        if not (self.test_every == 0 or count(self.test_every)) or (self.test_every and self.epochs is None):
            raise ValueError(f"test_every must be 0 or, with epochs, a positive integer; got {self.test_every!r}")

    def record(self) -> dict[str, Any]:
        """The recipe's name and every value, as result files keep them."""
        return asdict(self)

    @property
    def length(self) -> str:
        """``"300 steps"`` or ``"201 epochs"``."""
        return f"{self.steps} steps" if self.steps is not None else f"{self.epochs} epochs"

    def describe(self) -> str:
        """One line: ``"paper recipe: pointnet, 201 epochs, batch 256, adam lr 0.001 -> 0.0001, ..."``."""
        return (f"{self.recipe} recipe: {self.model}, {self.length}, batch {self.batch_size}, {self.optimizer} lr "
                f"{self.lr:g} -> {self.lr_end:g}, weight decay {self.weight_decay:g}, augmentation "
                f"{self.augmentation}")


def epoch_lr(spec: TrainSpec, epoch: int) -> float:
    """The learning rate of pass ``epoch`` (0-based) of an epochs recipe: ``lr`` at the first, a
    cosine to ``lr_end`` at the last (the released code's ``CosineAnnealingLR(T_max=epochs - 1)``
    stepped after each pass)."""
    if spec.epochs is None or not 0 <= epoch < spec.epochs:
        raise ValueError(f"epoch {epoch} is not a pass of {spec.describe()}")
    if spec.epochs == 1:
        return spec.lr
    return spec.lr_end + (spec.lr - spec.lr_end) * (1 + math.cos(math.pi * epoch / (spec.epochs - 1))) / 2


def batch_stream(size: int, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of ``batch`` indices into a set of ``size``: seeded permutations one after
    another, a batch running on into the next permutation where one ends."""
    order = torch.empty(0, dtype=torch.long)
    while True:
        while len(order) < batch:
            order = torch.cat([order, torch.randperm(size, generator=generator)])
        yield order[:batch]
        order = order[batch:]


def epoch_batches(size: int, batch: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One pass over a set of ``size``: a seeded permutation cut into batches of ``batch`` indices,
    the last one shorter where ``batch`` does not divide ``size``."""
    return list(torch.randperm(size, generator=generator).split(batch))


def _loss(model: nn.Module, data: Clouds, rows: torch.Tensor, points: torch.Tensor, parts: torch.Tensor | None,
          device: torch.device) -> torch.Tensor:
    """The summed cross-entropy of ``rows`` (their augmented ``points`` and their points' ``parts``)."""
    labels = torch.from_numpy(data.labels[rows.numpy()]).to(device)
    if parts is None:
        return F.cross_entropy(model(points), labels, reduction="sum")
    category = F.one_hot(labels, data.num_classes)
    return F.cross_entropy(model(points, category).flatten(0, 1), parts.to(device).flatten(), reduction="sum")


def build(data: Clouds, model: str) -> nn.Module:
    """A fresh backbone ``model`` for ``data``'s task (its weights from torch's global seed)."""
    num_parts = None if data.part_classes is None else len(data.part_classes)
    return build_object_model(model, data.num_classes, data.task, num_parts)


def _optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=0.9, weight_decay=spec.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)


def train_backbone(data: Clouds, spec: TrainSpec, seed: int, info: DistInfo, desc: str = "train",
                   show: bool = True, watch: Watch | None = None) -> nn.Module:
    """A backbone trained from scratch on ``data`` (module docstring); the last step's model, in
    eval mode. ``watch`` is called with the model (in eval mode, back in training after) and the
    passes done after every ``spec.test_every`` th pass and the last (epochs recipes only)."""
    if watch is not None and not spec.test_every:
        raise ValueError(f"a watch needs test_every passes; {spec.describe()} has none")
    torch.manual_seed(seed)
    model = build(data, spec.model).to(info.device)
    model.train()
    optimizer = _optimizer(model, spec)
    draws = torch.Generator().manual_seed(seed)
    batch = min(spec.batch_size, len(data))
    per_cloud = 1 if data.parts is None else data.points.shape[1]
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:  # a rank without rows in a batch adds zeros
        p.grad = torch.zeros_like(p)
    augment = AUGMENTATIONS[spec.augmentation]

    def step(index: torch.Tensor) -> None:
        clouds, parts = data.batch(index, draws)
        cloud_batch = augment(clouds, draws)
        mine = slice(info.rank, None, info.world_size)
        optimizer.zero_grad(set_to_none=False)
        if len(index[mine]):
            loss = _loss(model, data, index[mine], cloud_batch[mine].to(info.device),
                         None if parts is None else parts[mine], info.device)
            (loss / (len(index) * per_cloud)).backward()
        if info.world_size > 1:
            flat = all_reduce_sum(torch.cat([p.grad.reshape(-1) for p in params]))
            torch.nn.utils.vector_to_parameters(flat, [p.grad for p in params])
        optimizer.step()

    if spec.steps is not None:
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, spec.steps, eta_min=spec.lr_end)
        stream = batch_stream(len(data), batch, draws)
        for _ in progress(range(spec.steps), desc=desc, enabled=show and info.is_main):
            step(next(stream))
            schedule.step()
    else:
        for epoch in progress(range(spec.epochs), desc=desc, enabled=show and info.is_main):
            for group in optimizer.param_groups:
                group["lr"] = epoch_lr(spec, epoch)
            for index in epoch_batches(len(data), batch, draws):
                step(index)
            if watch is not None and ((epoch + 1) % spec.test_every == 0 or epoch + 1 == spec.epochs):
                broadcast_buffers(model)  # the ranks predict with one set of statistics
                watch(model.eval(), epoch + 1)
                model.train()
    broadcast_buffers(model)
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, data: Clouds, info: DistInfo) -> np.ndarray:
    """Every cloud's class (S,), or every point's part (S, N) among its category's parts, the
    clouds shared out over the ranks and the predictions gathered in the set's order."""
    model.eval()
    mine = np.arange(info.rank, len(data), info.world_size)
    out = []
    for start in range(0, len(mine), PREDICT_CHUNK):
        rows = mine[start:start + PREDICT_CHUNK]
        points = torch.from_numpy(data.points[rows]).to(info.device)
        labels = torch.from_numpy(data.labels[rows]).to(info.device)
        if data.parts is None:
            out.append(model(points).argmax(dim=1).cpu().numpy())
            continue
        logits = model(points, F.one_hot(labels, data.num_classes))
        own = torch.from_numpy(data.part_classes).to(info.device)[None, :] == labels[:, None]  # (B, P)
        out.append(logits.masked_fill(~own[:, None, :], -torch.inf).argmax(dim=2).cpu().numpy())
    empty = np.zeros((0,) if data.parts is None else (0, data.points.shape[1]), dtype=np.int64)
    shards = all_gather_objects((mine, np.concatenate(out) if out else empty))
    result = np.zeros((len(data),) + empty.shape[1:], dtype=np.int64)
    for rows, values in shards:
        result[rows] = values
    return result
