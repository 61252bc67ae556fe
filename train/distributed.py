"""DistributedDataParallel plumbing for ``torchrun --nproc_per_node=K -m train.run``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; :func:`init_from_env` then joins the process group
(NCCL on CUDA, gloo on CPU). A plain ``python -m train.run`` runs as rank 0 of 1 with no process
group. :class:`ResumableDistributedSampler` is ``DistributedSampler`` (per-epoch seeded shuffle, the
shard ``rank::world_size``) that can also start part-way through an epoch, which exact resumption
from an every-K-iterations checkpoint needs.
"""
from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if WORLD_SIZE > 1; choose the device of this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


SPAWNED_ENV = "TOPODISTILL_SPAWNED"  # set in the processes spawn_local starts


def under_external_launcher() -> bool:
    """True under torchrun (or another launcher), False in a plain or a ``spawn_local`` process."""
    return "WORLD_SIZE" in os.environ and SPAWNED_ENV not in os.environ


def _spawned(rank: int, entry: Callable[[list[str]], int], argv: list[str], procs: int, port: int,
             threads: int) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(procs), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(procs),
                       SPAWNED_ENV: "1"})
    torch.set_num_threads(threads)
    code = entry(argv)
    if code:
        sys.exit(code)


def spawn_local(entry: Callable[[list[str]], int], argv: Sequence[str], procs: int) -> int:
    """Run ``entry(argv)`` in ``procs`` processes of this machine joined as one process group, as
    ``torchrun --standalone --nproc_per_node=procs`` would (each process gets ``cores // procs``
    intra-op threads). Returns the first non-zero exit code of a process, else 0.

    On a CPU, several single-threaded processes train faster than one multi-threaded process:
    measured here, two ranks of one thread each gave 1.7x the steps per second of one process, while
    a second OpenMP thread in one process gave almost nothing (small sparse kernels)."""
    import torch.multiprocessing as mp

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threads = max(1, (os.cpu_count() or 1) // procs)
    try:
        mp.spawn(_spawned, args=(entry, list(argv), procs, port, threads), nprocs=procs, join=True)
    except mp.ProcessExitedException as err:
        return int(err.exit_code or 1)
    return 0


def launch(main: Callable[[list[str]], int], argv: Sequence[str], procs: int, device: str, deterministic: bool,
           body: Callable[[DistInfo], object], prog: str, errors: tuple[type[Exception], ...]) -> int:
    """The process handling shared by the CLIs (``python -m train.run`` and ``train.study``).

    Without an outside launcher and with ``procs > 1`` it starts ``procs`` local ranks that re-enter
    ``main(argv)`` (:func:`spawn_local`). Otherwise this process joins the group, runs
    ``body(info)`` and leaves the group; an exception of ``errors`` becomes ``prog: error: ...`` on
    stderr and exit code 2 (the message says what to fix), anything else propagates."""
    if procs > 1 and "WORLD_SIZE" not in os.environ:
        return spawn_local(main, argv, procs)
    info = init_from_env(device)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        body(info)
    except errors as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    finally:
        cleanup()
    return 0


def current() -> DistInfo:
    """Rank and world size of the running process group (1 process when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    return DistInfo(rank, world, int(os.environ.get("LOCAL_RANK", "0")), torch.device("cpu"))


def is_main() -> bool:
    return current().rank == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over processes (identity with one process)."""
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(t) / current().world_size


def broadcast_buffers(model: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every process.

    DDP broadcasts buffers at the start of each forward, so after the last training forward each
    rank holds its own running statistics; evaluation and checkpoints need one model.
    """
    if dist.is_available() and dist.is_initialized():
        for buf in model.buffers():
            dist.broadcast(buf, src)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler whose current epoch can skip its first ``start`` indices (resume)."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` indices of this process's shard in the current epoch."""
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)
