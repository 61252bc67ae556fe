"""Training a backbone from scratch on a set of object clouds, and its predictions: the engine of
the condensation protocol (decisions 72 and 73), in one process or several.

:func:`train_backbone`: ``spec.steps`` Adam steps (learning rate ``spec.lr``, cosine decay to 0),
each on the next ``min(spec.batch_size, S)`` clouds of an endless stream of seeded permutations
of the set, augmented (:mod:`train.condense.augment`); cross-entropy on the class (classification)
or on every point's part (part segmentation, the category given one-hot). Nothing is chosen on a
test split: the model of the last step is returned. A batch's clouds are the set's rows, or drawn
afresh from the run's random stream where the set has a :data:`BatchSource` (DD3D's generator
resampled, :mod:`train.condense.resample`).

Several processes (``torchrun`` or ``--procs``): every rank draws the same global batch and the
same augmentation, takes its rows ``rank::world`` and adds its cross-entropy summed over its rows
divided by the global batch; the gradients are summed over the ranks. The sum of the ranks' losses
is the one process's mean, so with the instance-normalised PointNet the ranks compute one
process's step up to float rounding; networks with batch normalisation see their statistics per
rank (rank 0's are broadcast at the end). :func:`predict` shares the clouds out the same way and
gathers the predictions in the set's order.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from train.condense.augment import augment
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


@dataclass(frozen=True)
class TrainSpec:
    """How a backbone is trained (decision 73 gives the defaults and how they were chosen)."""

    model: str = "pointnet"
    steps: int = 300
    lr: float = 1e-3
    batch_size: int = 32


def batch_stream(size: int, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of ``batch`` indices into a set of ``size``: seeded permutations one after
    another, a batch running on into the next permutation where one ends."""
    order = torch.empty(0, dtype=torch.long)
    while True:
        while len(order) < batch:
            order = torch.cat([order, torch.randperm(size, generator=generator)])
        yield order[:batch]
        order = order[batch:]


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


def train_backbone(data: Clouds, spec: TrainSpec, seed: int, info: DistInfo, desc: str = "train",
                   show: bool = True) -> nn.Module:
    """A backbone trained from scratch on ``data`` (module docstring); the last step's model, in eval mode."""
    torch.manual_seed(seed)
    model = build(data, spec.model).to(info.device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, spec.steps)
    draws = torch.Generator().manual_seed(seed)
    batch = min(spec.batch_size, len(data))
    per_cloud = 1 if data.parts is None else data.points.shape[1]
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:  # a rank without rows in a batch adds zeros
        p.grad = torch.zeros_like(p)
    stream = batch_stream(len(data), batch, draws)
    for _ in progress(range(spec.steps), desc=desc, enabled=show and info.is_main):
        index = next(stream)
        clouds, parts = data.batch(index, draws)
        cloud_batch = augment(clouds, draws)
        mine = slice(info.rank, None, info.world_size)
        optimizer.zero_grad(set_to_none=False)
        if len(index[mine]):
            loss = _loss(model, data, index[mine], cloud_batch[mine].to(info.device),
                         None if parts is None else parts[mine], info.device)
            (loss / (batch * per_cloud)).backward()
        if info.world_size > 1:
            flat = all_reduce_sum(torch.cat([p.grad.reshape(-1) for p in params]))
            torch.nn.utils.vector_to_parameters(flat, [p.grad for p in params])
        optimizer.step()
        schedule.step()
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
