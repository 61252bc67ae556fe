"""A nested structure of NumPy arrays as one byte buffer and a skeleton (decision 47).

The batch plan (``train.models.plan``) holds about a hundred arrays. Handed from a DataLoader
worker to the training process array by array, each would be its own shared-memory segment (a
file descriptor, a mapping); copied to a GPU array by array, each its own transfer. Packed, the
plan is one segment and one transfer, and each array is a view of the buffer at an offset
aligned to :data:`ALIGN` bytes (so a device copy can be viewed as any dtype). The skeleton is the
structure itself (dataclasses, tuples, lists, dicts, scalars) with every array replaced by a
:class:`Slot`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np
import torch

ALIGN = 64


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where an array lies in the buffer: byte offset, dtype and shape."""

    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]


def pack(obj: Any, shared: bool = False, pinned: bool = False) -> tuple[Any, torch.Tensor]:
    """``obj``'s skeleton and a uint8 tensor holding all its arrays; the buffer is allocated in
    shared memory (``shared``, for a DataLoader worker) or page-locked memory (``pinned``)."""
    placed: list[tuple[Slot, np.ndarray]] = []
    size = 0

    def strip(x: Any) -> Any:
        nonlocal size
        if isinstance(x, np.ndarray):
            placed.append((Slot(size, x.dtype, x.shape), x))
            size += -(-x.nbytes // ALIGN) * ALIGN
            return placed[-1][0]
        return _map(x, strip)

    skeleton = strip(obj)
    buffer = torch.empty(max(size, 1), dtype=torch.uint8, pin_memory=pinned)
    if shared:
        buffer.share_memory_()
    view = buffer.numpy()
    for slot, array in placed:
        view[slot.offset:slot.offset + array.nbytes].view(array.dtype).reshape(array.shape)[...] = array
    return skeleton, buffer


def unpack(skeleton: Any, buffer: torch.Tensor) -> Any:
    """The structure of ``skeleton`` with every :class:`Slot` a NumPy view of ``buffer``."""
    view = buffer.numpy()

    def fill(x: Any) -> Any:
        if isinstance(x, Slot):
            nbytes = int(np.prod(x.shape, dtype=np.int64)) * x.dtype.itemsize
            return view[x.offset:x.offset + nbytes].view(x.dtype).reshape(x.shape)
        return _map(x, fill)

    return fill(skeleton)


def buffer_offset(buffer: Optional[torch.Tensor], array: np.ndarray) -> Optional[int]:
    """The byte offset of ``array`` in ``buffer`` when it is a contiguous view of it, else None."""
    if buffer is None or not array.flags.c_contiguous:
        return None
    at = array.__array_interface__["data"][0] - buffer.data_ptr()
    return at if 0 <= at and at + array.nbytes <= buffer.numel() else None


def _map(x: Any, f: Any) -> Any:
    """``x`` with ``f`` applied to each member (dataclass fields, tuple/list items, dict values)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.replace(x, **{field.name: f(getattr(x, field.name)) for field in dataclasses.fields(x)
                                         if field.init})
    if isinstance(x, (tuple, list)):
        return type(x)(f(v) for v in x)
    if isinstance(x, dict):
        return {k: f(v) for k, v in x.items()}
    return x

