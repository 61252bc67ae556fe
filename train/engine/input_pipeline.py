"""Batches onto the training device ahead of the step that uses them (decision 39).

Each batch gets its ``BatchPlan`` (decision 40) where it is collated (:class:`PlannedCollate`,
decision 47): in the DataLoader worker that prepares it, with every item the run's models will read
(``PTv3.plan_items``), so the training process does no geometry during a step; with no workers,
once per batch before the step. The teacher and the student of a step share the plan, and no model
reads sizes back from the device. A worker hands the plan over as one block of shared memory.

On CUDA, :func:`device_batches` issues the copy of batch k+1 (from pinned host memory, so the copy
is asynchronous; the plan as one buffer) on a side stream before batch k is handed out, so the
transfer overlaps the GPU's work on batch k instead of following it; the training stream waits for
that copy alone (an event) only when it reaches batch k+1, and the tensors are recorded on that
stream so the allocator does not reuse their memory too early. On other devices batches are moved
when they are handed out. The DataLoader side (worker processes, ``pin_memory``) is set up by
``train.engine.loop``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from train.engine.steps import to_device
from train.models.device_plan import on_device
from train.models.plan import BatchPlan, PlanKey


@dataclass(frozen=True)
class PlannedCollate:
    """``collate`` followed by the batch's ``BatchPlan`` (key ``"plan"``) with ``items`` built,
    serialized along ``orders``. Picklable: the DataLoader's workers run it."""

    collate: Callable[[Sequence[dict]], dict[str, Any]]
    orders: tuple[str, ...]
    items: tuple[PlanKey, ...]

    def __call__(self, samples: Sequence[dict]) -> dict[str, Any]:
        batch = self.collate(samples)
        batch["plan"] = BatchPlan(batch["grid_coord"], batch["offset"], self.orders, self.items)
        return batch


def planned_collate(collate: Callable, models: Sequence[nn.Module], device: torch.device) -> Callable:
    """``collate`` that also plans every batch for ``models`` on ``device``: the items all of them
    read (models serialized along other curves than the first build their own plan); ``collate``
    itself when no model reads a plan (no ``plan_items``, e.g. a stand-in model in a test)."""
    inner = [model.module if hasattr(model, "module") else model for model in models]
    planning = [model for model in inner if hasattr(model, "plan_items")]
    if not planning:
        return collate
    orders = tuple(planning[0].config.orders)
    items = {key for model in planning if tuple(model.config.orders) == orders for key in model.plan_items(device)}
    return PlannedCollate(collate, orders, tuple(sorted(items, key=str)))


class EpochSampler(Sampler):
    """The indices of ``sampler`` (which has ``epoch``, as ``DistributedSampler``) as (epoch,
    index) pairs: loader workers that live through every epoch (``persistent_workers``) learn the
    epoch from the items they are asked for."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.sampler.epoch
        return ((epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class EpochDataset(Dataset):
    """``dataset`` read by (epoch, index) (:class:`EpochSampler`): its copy selects the epoch's
    augmentation stream (``set_epoch``, where it has one) before reading the index."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)


def device_batches(batches: Iterable[dict[str, Any]], device: torch.device) -> Iterator[dict[str, Any]]:
    """The collated ``batches`` with their tensors on ``device`` (non-tensor entries as they are;
    a batch's plan uploads its packed buffer with them on CUDA)."""
    if device.type != "cuda":
        for batch in batches:
            yield to_device(batch, device)
        return
    side = torch.cuda.Stream(device)
    main = torch.cuda.current_stream(device)

    def start(batch: dict[str, Any]) -> tuple[dict[str, Any], torch.cuda.Event]:
        with torch.cuda.stream(side):
            moved = to_device(batch, device)
            if isinstance(batch.get("plan"), BatchPlan):
                on_device(batch["plan"], device).upload()
            copied = torch.cuda.Event()
            copied.record(side)
        return moved, copied

    ahead: tuple[dict[str, Any], torch.cuda.Event] | None = None
    for batch in batches:
        started = start(batch)  # the copy of this batch runs while the GPU works on the previous one
        if ahead is not None:
            yield _ready(*ahead, main)
        ahead = started
    if ahead is not None:
        yield _ready(*ahead, main)


def _ready(batch: dict[str, Any], copied: torch.cuda.Event, main: torch.cuda.Stream) -> dict[str, Any]:
    """``batch`` for the training stream: it waits for this batch's copy alone."""
    main.wait_event(copied)
    plan = batch.get("plan")
    uploaded = on_device(plan, main.device).upload() if isinstance(plan, BatchPlan) else None
    for value in [*batch.values(), uploaded]:
        if isinstance(value, torch.Tensor):
            value.record_stream(main)
    return batch
