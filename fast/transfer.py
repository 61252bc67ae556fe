"""Host<->device copies of the topological loss (paper Algorithm 1): one each way per batch, no stall.

The persistence step runs on the host (TPS and the diagrams in the engine's worker processes), so
the normalised features of a batch go to the host once per model and the selected rows, critical
edges and teacher values come back once (decision 42). On a CUDA device neither direction makes
the calling thread wait for the device:

* :func:`to_host` copies a tensor into pinned host memory on a side stream, after the work queued
  so far on the current stream, and returns at once; one background thread waits for the copy and
  hands the host array to a function (which starts the persistence work), so the model's next
  kernels (the student forward after the teacher's copy) are launched meanwhile;
* :func:`to_device` copies a host array through pinned memory without blocking (the caller's
  stream orders it before the kernels that read it).

On the CPU both are free (:func:`to_host` hands over a view of the tensor and calls the function
at once); on another device type they are plain blocking copies.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

import numpy as np
import torch

T = TypeVar("T")

# One thread: copies complete, and their functions run, in the order they were started (the
# student's persistence tasks are queued after the teacher's of the same batch).
_waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fast-host-copy")
_streams: dict[torch.device, "torch.cuda.Stream"] = {}
_streams_lock = threading.Lock()


def side_stream(device: torch.device) -> "torch.cuda.Stream":
    """The one side stream of ``device`` on which this module copies to the host (work queued
    there before a :func:`to_host` of its result is ordered before the copy)."""
    with _streams_lock:
        if device not in _streams:
            _streams[device] = torch.cuda.Stream(device)
        return _streams[device]


def to_host(tensor: torch.Tensor, then: Callable[[np.ndarray], T]) -> "Future[T]":
    """Copy ``tensor`` (no autograd) to host memory and return the future of ``then(array)``.

    On CUDA the copy goes to pinned memory on a side stream once the current stream's queued work
    (the tensor's producers) is done; ``then`` runs in a background thread when the copy has
    landed, in the order of the calls. On the CPU ``then`` runs now on a view of the tensor.
    Exceptions of ``then`` are raised by the future's ``result()``.
    """
    tensor = tensor.detach()
    if tensor.device.type != "cuda":
        future: "Future[T]" = Future()
        try:
            future.set_result(then(tensor.cpu().numpy()))
        except Exception as exc:  # the caller sees it where it reads the result, as on CUDA
            future.set_exception(exc)
        return future
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    stream = side_stream(tensor.device)
    stream.wait_stream(torch.cuda.current_stream(tensor.device))
    with torch.cuda.stream(stream):
        host.copy_(tensor, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record(stream)
    tensor.record_stream(stream)  # its memory is not reused before the copy has read it
    return _waiter.submit(_when_copied, copied, host, then)


def _when_copied(copied: "torch.cuda.Event", host: torch.Tensor, then: Callable[[np.ndarray], T]) -> T:
    copied.synchronize()
    return then(host.numpy())


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` as a tensor on ``device``; on CUDA one pinned, non-blocking copy (no wait)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
