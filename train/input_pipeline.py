"""Batches onto the training device ahead of the step that uses them (decision 39).

On CUDA, :func:`device_batches` issues the copy of batch k+1 (from pinned host memory, so the copy
is asynchronous) on a side stream before batch k is handed out, so the transfer overlaps the GPU's
work on batch k instead of following it; the training stream waits for that copy alone (an event)
only when it reaches batch k+1, and the tensors are recorded on that stream so the allocator does
not reuse their memory too early. On other devices batches are moved when they are handed out, as before.
Each batch gets its ``BatchPlan`` (decision 40) here, on the host, before its tensors move: the
teacher and the student of a step then share one plan, and no model reads sizes back from the device.
The DataLoader side (worker processes, ``pin_memory``) is set up by ``train.loop``.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch

from train.models.plan import BatchPlan
from train.steps import to_device


def device_batches(batches: Iterable[dict[str, Any]], device: torch.device) -> Iterator[dict[str, Any]]:
    """The collated ``batches``, each with its plan, with their tensors on ``device`` (non-tensor
    entries as they are)."""
    batches = (with_plan(batch) for batch in batches)
    if device.type != "cuda":
        for batch in batches:
            yield to_device(batch, device)
        return
    side = torch.cuda.Stream(device)
    main = torch.cuda.current_stream(device)

    def start(batch: dict[str, Any]) -> tuple[dict[str, Any], torch.cuda.Event]:
        with torch.cuda.stream(side):
            moved = to_device(batch, device)
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
    for value in batch.values():
        if isinstance(value, torch.Tensor):
            value.record_stream(main)
    return batch


def with_plan(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` with ``"plan"``: the ``BatchPlan`` of its host ``grid_coord`` and ``offset``."""
    if "plan" in batch:
        return batch
    return {**batch, "plan": BatchPlan(batch["grid_coord"], batch["offset"])}
