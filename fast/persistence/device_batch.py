"""The batch path of the persistence step: every cloud's distances, tree and apparent pairs in one launch each.

The "Ripser" step of paper Algorithm 1 (line 12) for a whole batch, under decisions 1-3, 6a and
6c, as the alternative to the worker pool (``fast.persistence.pool``) behind the same front door
(``fast.persistence.submit_diagrams``): :class:`DeviceBatch` stacks the clouds of equal size and
runs on their device, with PyTorch,

* the float64 distances of all clouds (``device_stage.batched_distances``),
* the native engine's steps 1-3 for all clouds (``device_stage.device_edge_stages``: radius, edge
  ranks, neighbour lists, the apparent partner of every edge),

then, on the host, the minimum spanning tree of each cloud by Kruskal over its empty-lune edges
(``edge_stage.columns_to_reduce``; the tree of the reference's total order, so H0 death edges equal
``reference.rips_persistence``'s even with ties) and its H1 by the compiled reduction in a thread
pool (the kernels release the GIL). An engine other than the native one gets the device's distance
matrix and runs per cloud in the same threads.

Everything runs on one launcher thread, so :meth:`DeviceBatch.submit_batch` returns at once and
the model's work overlaps it as with the pool. Clouds of fewer than 3 points (no H1, no device
stage) are computed inline. Time budget (decision 6c): the reduction stops itself at the deadline;
another engine's late answer is discarded (a thread cannot be killed), and either way the cloud
contributes H0 only, counted like the pool's misses.

Which path is the default for features on a given device is :data:`fast.persistence.DEFAULT_PATHS`,
chosen from ``python -m benchmarks.gpu`` (its ``engine paths`` section times both).
"""
from __future__ import annotations

import contextlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional, Sequence

import numpy as np

from fast.persistence.cloud import H0Part, assemble, cloud_persistence, deadline_after, h1_part, stage_h1_part, tree_h0_part
from fast.persistence.contract import CloudPersistence, H1Engine
from fast.persistence.edge_stage import EdgeStage
from fast.persistence.native import native_h1
from fast.persistence.cores import available_cores
from fast.persistence.pool import _counted


class DeviceBatch:
    """Runs a batch's persistence with the batched stages on ``device``; one future per cloud.

    Args:
        device: where the batched stages run (``"cuda"``, ``"cuda:1"``, ``"cpu"``); torch is
            imported when the object is created.
        threads: host threads for the reductions; None = the cores available to this process.
    """

    def __init__(self, device: str = "cuda", threads: Optional[int] = None) -> None:
        import torch

        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"DeviceBatch(device={device!r}): no CUDA device is available; use the worker pool")
        if threads is not None and threads < 1:
            raise ValueError(f"DeviceBatch: threads must be >= 1 (None = the cores available), got {threads}")
        # Its own CUDA stream, so the batch's kernels run beside the model's instead of queueing
        # behind them on the default stream.
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fast-device-batch")
        self._reducers = ThreadPoolExecutor(max_workers=threads or available_cores(),
                                            thread_name_prefix="fast-device-reduce")

    def submit_batch(
        self, arrays: Sequence[np.ndarray], engine: H1Engine, time_budget: Optional[float], with_h1: bool,
        labels: Sequence[str],
    ) -> list["Future[CloudPersistence]"]:
        """Start the batch (validated (M_b, C) float64 arrays); returns one future per cloud at once.
        ``time_budget``: seconds for each cloud's own H1, from the start of its reduction (decision 6c)."""
        futures: list["Future[CloudPersistence]"] = [Future() for _ in arrays]
        self._launcher.submit(self._run, list(arrays), engine, time_budget, with_h1, list(labels), futures)
        return futures

    def shutdown(self) -> None:
        """Finish the submitted batches, then stop the threads."""
        self._launcher.shutdown(wait=True)
        self._reducers.shutdown(wait=True)

    def _run(self, arrays: list[np.ndarray], engine: H1Engine, time_budget: Optional[float], with_h1: bool,
             labels: list[str], futures: list[Future]) -> None:
        try:
            groups: dict[tuple[int, int], list[int]] = {}
            for b, a in enumerate(arrays):
                groups.setdefault(a.shape, []).append(b)
            for (m, _), members in groups.items():
                if m < 3:
                    for b in members:
                        self._finish(futures[b], labels[b], m, cloud_persistence(arrays[b], engine, time_budget, with_h1))
                    continue
                dists, stages = self._device_stage([arrays[b] for b in members])
                for b, dist, stage in zip(members, dists, stages):
                    h0 = tree_h0_part(dist, stage)
                    if not with_h1:
                        self._finish(futures[b], labels[b], m, assemble(h0, None, over_budget=False))
                        continue
                    self._reducers.submit(self._reduce, dist, stage, h0, engine, time_budget, labels[b], futures[b])
        except BaseException as exc:  # never leave a future pending: the caller waits on it
            for f in futures:
                if not f.done():
                    f.set_exception(exc)

    def _device_stage(self, clouds: list[np.ndarray]) -> tuple[np.ndarray, list[EdgeStage]]:
        import torch

        from fast.persistence.device_stage import batched_distances, device_edge_stages

        with contextlib.nullcontext() if self._stream is None else torch.cuda.stream(self._stream):
            points = torch.from_numpy(np.stack(clouds)).to(self.device)
            dists = batched_distances(points)
            stages = device_edge_stages(dists)  # its host copies wait for this stream's work
            return dists.cpu().numpy(), stages

    def _reduce(self, dist: np.ndarray, stage: EdgeStage, h0: H0Part, engine: H1Engine,
                time_budget: Optional[float], label: str, future: Future) -> None:
        try:
            dist = np.ascontiguousarray(dist)
            deadline = deadline_after(time_budget)  # the cloud's own H1 starts now
            h1 = stage_h1_part(dist, stage, deadline) if engine is native_h1 else h1_part(dist, engine, time_budget)
            if h1 is not None and deadline is not None and time.monotonic() > deadline:
                h1 = None  # decision 6c: an answer after the deadline is not used
            self._finish(future, label, dist.shape[0], assemble(h0, h1))
        except BaseException as exc:
            future.set_exception(exc)

    @staticmethod
    def _finish(future: Future, label: str, size: int, result: CloudPersistence) -> None:
        future.set_result(_counted(result, f"{label}, {size} points"))
