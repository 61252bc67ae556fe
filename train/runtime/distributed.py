"""DistributedDataParallel plumbing for ``torchrun --nproc_per_node=K -m train.run``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; :func:`init_from_env` then joins the process group
(NCCL on CUDA, gloo on CPU). A plain ``python -m train.run`` runs as rank 0 of 1 with no process
group. :class:`ResumableDistributedSampler` is ``DistributedSampler`` (per-epoch seeded shuffle, the
shard ``rank::world_size``) that can also start part-way through an epoch, which exact resumption
from an every-K-iterations checkpoint needs.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from train.runtime.heap import held, hold_freed_memory
from train.runtime.leaving import leave
from train.runtime.preemption import PREEMPTED_EXIT, Preempted, watch


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
_TO_PARENT: Any = None  # in a spawn_local process: the pipe its failure message goes to


def under_external_launcher() -> bool:
    """True under torchrun (or another launcher), False in a plain or a ``spawn_local`` process."""
    return "WORLD_SIZE" in os.environ and SPAWNED_ENV not in os.environ


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when the process that spawned it dies (Linux), so a
    ``kill -9`` of the launching process leaves no rank training on (and writing checkpoints)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the request was in place
        os._exit(1)


def _spawned(rank: int, entry: Callable[[list[str]], int], argv: list[str], procs: int, port: int,
             threads: int, parent: int, to_parent: Any, hold_memory: bool) -> None:
    global _TO_PARENT
    _die_with_parent(parent)
    if hold_memory:  # as the launching process does (train.runtime.heap, decision 95)
        hold_freed_memory()
    _TO_PARENT = to_parent
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(procs), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(procs),
                       SPAWNED_ENV: "1"})
    torch.set_num_threads(threads)
    try:
        code = entry(argv)
    except BaseException:  # a bug: its traceback is the parent's to print
        to_parent.send(traceback.format_exc().rstrip())
        code = 1
    leave(code)  # not sys.exit: gloo's threads would outlive the interpreter (decision 46)


def report_failure(message: str) -> None:
    """Print a failure (``prog: error: ...``) on stderr, or, in a ``spawn_local`` process, hand it to
    the launching process, which prints the first failure of all its processes, once."""
    if _TO_PARENT is not None:
        _TO_PARENT.send(message)
    else:
        print(message, file=sys.stderr, flush=True)


def spawn_local(entry: Callable[[list[str]], int], argv: Sequence[str], procs: int, prog: str = "train.run",
                forward: Sequence[signal.Signals] = ()) -> int:
    """Run ``entry(argv)`` in ``procs`` processes of this machine joined as one process group, as
    ``torchrun --standalone --nproc_per_node=procs`` would (each process gets ``cores // procs``
    intra-op threads; each keeps its freed memory where this process does, :mod:`train.runtime.heap`).
    Returns 0 when every process succeeded, else the exit status of the first
    that failed (128 + N for one killed by signal N).

    When one process fails, the others are stopped (SIGKILL, quietly: they may wait in a
    collective, and SIGTERM is theirs to record as a preemption) and the first failure's message
    (:func:`report_failure`, or a traceback) is printed once: a rank that fails only because its
    peer is gone does not add its own. The processes die with this one (SIGKILL). The signals of
    ``forward`` (``--preempt-signal``) are passed on to every process, which all stop after the
    same step with :data:`train.runtime.preemption.PREEMPTED_EXIT`: that status is waited for from
    each, and returned only when every process ended with it (a rank that died after its peer's 75,
    of a signal or an abort, is reported as any failure: a requeue script must not take a crash for
    a clean stop); then this process ignores those signals, as it exits 75 next, where their
    previous action (the default) put back let a late one end it with 143. Each process ends with
    :func:`train.runtime.leaving.leave`.

    On a CPU, several single-threaded processes train faster than one multi-threaded process:
    measured here, two ranks of one thread each gave 1.7x the steps per second of one process, while
    a second OpenMP thread in one process gave almost nothing (small sparse kernels)."""
    import multiprocessing
    from multiprocessing.connection import Connection, wait

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threads = max(1, (os.cpu_count() or 1) // procs)
    ctx = multiprocessing.get_context("spawn")
    pipes = [ctx.Pipe(duplex=False) for _ in range(procs)]  # one per rank: no lock a killed rank could hold
    ranks = [ctx.Process(target=_spawned, args=(r, entry, list(argv), procs, port, threads, os.getpid(), pipes[r][1],
                                                held()))
             for r in range(procs)]
    for proc in ranks:
        proc.start()

    def relay(signum: int, frame: Any) -> None:
        for proc in ranks:
            if proc.exitcode is None and proc.pid is not None:
                os.kill(proc.pid, signum)

    previous = {sig: signal.signal(sig, relay) for sig in forward}
    for _, writer in pipes:
        writer.close()
    listening: list[Connection] = [reader for reader, _ in pipes]
    running = list(ranks)
    failed: multiprocessing.process.BaseProcess | None = None
    messages: list[tuple[int, str]] = []  # (rank, message) in the order they arrived
    while running and failed is None:
        ready = wait([*listening, *(p.sentinel for p in running)])
        for reader in [c for c in listening if c in ready]:
            try:
                messages.append(([r for r, _ in pipes].index(reader), reader.recv()))
            except EOFError:  # its rank ended
                listening.remove(reader)
        for proc in [p for p in running if p.exitcode is not None]:
            running.remove(proc)
            if proc.exitcode != 0 and failed is None:
                failed = proc
    if failed is not None and failed.exitcode == PREEMPTED_EXIT:
        for proc in running:  # past the checkpoint's barrier: each stops by itself
            proc.join(timeout=60)
    for proc in running:
        if proc.exitcode is None:
            proc.kill()
    for proc in ranks:
        proc.join()
    if failed is not None and failed.exitcode == PREEMPTED_EXIT:  # 75 only when every process stopped so
        failed = next((p for p in ranks if p.exitcode != PREEMPTED_EXIT), failed)
    preempted = failed is not None and failed.exitcode == PREEMPTED_EXIT
    for sig, handler in previous.items():  # stopped: ignored until this process exits 75 (decision 46)
        signal.signal(sig, signal.SIG_IGN if preempted else handler)
    if failed is None:
        return 0
    for rank, (reader, _) in enumerate(pipes):  # messages sent just before their rank ended
        try:
            while reader.poll():
                messages.append((rank, reader.recv()))
        except EOFError:
            pass
    code = int(failed.exitcode or 1)
    if code < 0:  # killed: what the other ranks report follows from it
        print(f"{prog}: error: rank {ranks.index(failed)} was killed by {signal.Signals(-code).name}; "
              "rerun with --resume to continue from its last checkpoint", file=sys.stderr, flush=True)
        return 128 - code
    if messages:  # the first report is the cause: a rank that fails because its peer is gone reports later
        rank, message = messages[0]
        print(message, file=sys.stderr, flush=True)
        code = ranks[rank].exitcode or code
    return code


def launch(main: Callable[[list[str]], int], argv: Sequence[str], procs: int, device: str, deterministic: bool,
           body: Callable[[DistInfo], object], prog: str, errors: tuple[type[Exception], ...],
           signals: Sequence[signal.Signals] = ()) -> int:
    """The process handling shared by the CLIs (``python -m train.run`` and ``train.study``).

    Without an outside launcher and with ``procs > 1`` it starts ``procs`` local ranks that re-enter
    ``main(argv)`` (:func:`spawn_local`). Otherwise this process joins the group, runs
    ``body(info)`` and leaves the group; an exception of ``errors`` becomes one line
    ``prog: error: ...`` (:func:`report_failure`) and exit code 2 (the message says what to fix),
    anything else propagates. The ``signals`` are recorded while ``body`` runs and the group is
    left (:func:`train.runtime.preemption.watch`), in a rank until it exits; a run stopped by one
    (:class:`train.runtime.preemption.Preempted`) says so in one line from rank 0 and returns
    :data:`train.runtime.preemption.PREEMPTED_EXIT`. A rank of an outside launcher (torchrun) does
    not return: it ends with that status (1 after a bug's traceback) through
    :func:`train.runtime.leaving.leave`, as a :func:`spawn_local` rank does."""
    if procs > 1 and "WORLD_SIZE" not in os.environ:
        return spawn_local(main, argv, procs, prog, signals)
    if under_external_launcher():  # a torchrun rank ends as a spawn_local one does (decision 46)
        try:
            code = _run(device, deterministic, body, prog, errors, signals)
        except Exception:  # a bug: its traceback, as Python prints it
            traceback.print_exc()
            code = 1
        leave(code)
    return _run(device, deterministic, body, prog, errors, signals)


def _run(device: str, deterministic: bool, body: Callable[[DistInfo], object], prog: str,
         errors: tuple[type[Exception], ...], signals: Sequence[signal.Signals]) -> int:
    """:func:`launch` in this process: the group joined, ``body`` run and the group left; the exit status."""
    info = init_from_env(device)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        with watch(signals, until_exit="WORLD_SIZE" in os.environ):  # a rank exits after its run
            try:
                body(info)
            finally:
                cleanup()
    except Preempted as stop:
        if info.is_main:
            print(f"{prog}: {stop}", file=sys.stderr, flush=True)
        return PREEMPTED_EXIT
    except errors as err:
        report_failure(f"{prog}: error: {err}")
        return 2
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


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` with one process); picklable objects only."""
    if dist.is_available() and dist.is_initialized():
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


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
    """DistributedSampler whose current epoch can skip its first ``start`` indices (resume), and
    can continue an epoch that a run of another number of processes began (re-sharding, decision 46).

    Over one step the processes of a run take the next ``batch_size`` entries of the epoch's list
    (the seeded permutation padded to a multiple of the process count, dealt out ``rank::world``),
    so after ``p`` steps exactly its first ``p * batch_size`` entries are used, whatever the number
    of processes. ``set_start(start, list_world)`` with ``list_world`` (the processes of the run
    that began the epoch, whose padding the list has) different from ``num_replicas`` deals the
    rest of that list, past its first ``start * num_replicas`` entries, out over this run's
    processes (padded, as DistributedSampler pads, by repeating its first entries when it does not
    divide evenly); with ``list_world == num_replicas`` that is the shard DistributedSampler gives."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start = 0
        self.list_world = num_replicas

    def set_start(self, start: int, list_world: int | None = None) -> None:
        """Skip the first ``start`` indices of this process's share in the current epoch, whose
        list is padded for ``list_world`` processes (default: this run's)."""
        self.start = int(start)
        self.list_world = self.num_replicas if list_world is None else int(list_world)

    def _rest(self) -> list[int]:
        """This process's share of the epoch's list past its first ``start * num_replicas`` entries."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.dataset), generator=g).tolist()  # type: ignore[arg-type]
        else:
            order = list(range(len(self.dataset)))  # type: ignore[arg-type]
        size = -(-len(order) // self.list_world) * self.list_world
        order += (order * size)[: size - len(order)]
        rest = order[self.start * self.num_replicas:]
        padded = -(-len(rest) // self.num_replicas) * self.num_replicas
        rest += (rest * padded)[: padded - len(rest)] if rest else []
        return rest[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        if self.list_world != self.num_replicas:
            return iter(self._rest())
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        if self.list_world != self.num_replicas:
            return len(self._rest())
        return max(self.num_samples - self.start, 0)
