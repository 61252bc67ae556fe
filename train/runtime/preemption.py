"""Preemption: a scheduler's signal stops training at a step every process agrees on, after one checkpoint.

A cluster scheduler announces the end of a job with a signal some seconds before it kills it
(SLURM: SIGTERM, then SIGKILL after the partition's grace time; ``--signal=USR1@T`` before a time
limit). :func:`watch` installs a handler for each signal of ``--preempt-signal`` that only records
it (:func:`requested`); the training loop asks at the end of every step, the processes agree on it
(:class:`StepVote`) so that all of them stop after the same step, write one checkpoint together and
leave with :class:`Preempted`, which the launcher turns into one line naming the checkpoint and
the exit status :data:`PREEMPTED_EXIT` (decision 46). A second signal while the checkpoint is
written is recorded again and changes nothing: the save finishes (and a SIGKILL during it still
leaves the previous checkpoint, :func:`train.runtime.checkpoint.atomic_write`). One that arrives
after the run stopped, as the process leaves, is ignored in a rank (``watch(until_exit=True)``) and
in any process that stopped on one (it exits 75 next).
"""
from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist

# EX_TEMPFAIL of sysexits.h, "temporary failure; the user is invited to retry": a requeue script
# resubmits with --resume on this status and stops on any other.
PREEMPTED_EXIT = 75

_received: list[signal.Signals] = []  # the preemption signals this process received (in its handler)


def parse_signals(names: Sequence[str]) -> tuple[signal.Signals, ...]:
    """``--preempt-signal`` names (checked by :func:`train.options.checks.validate`) as signals; ``none``: none."""
    return tuple(signal.Signals["SIG" + name] for name in names if name != "none")


def _record(signum: int, frame: Any) -> None:
    _received.append(signal.Signals(signum))


@contextmanager
def watch(signals: Sequence[signal.Signals], until_exit: bool = False) -> Iterator[None]:
    """Record ``signals`` instead of dying of them while the block runs (main thread only).

    ``until_exit``: after the block the signals are ignored instead of given back their previous
    action, for a process that exits after it (a rank of ``--procs`` or torchrun); so they are after
    a block that stopped with :class:`Preempted`, as its process exits 75 next. A signal that
    reaches such a process while it leaves (a second SIGTERM its launcher passes on late, or one a
    scheduler sends to every process of the job) then changes nothing, where the default action,
    put back, killed it after its checkpoint and its launcher reported 143 instead of 75; ignored,
    not recorded: the interpreter puts the default action back for a Python handler as it ends
    (decision 46)."""
    previous = {sig: signal.signal(sig, _record) for sig in signals}
    stopped = False
    try:
        yield
    except Preempted:
        stopped = True
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if until_exit or stopped else handler)
        _received.clear()


def requested() -> signal.Signals | None:
    """The first preemption signal this process received (None: none so far)."""
    return _received[0] if _received else None


class StepVote:
    """All processes' answer to "stop now?" and "checkpoint now?" after a step: one collective of
    two integers (MAX), on the CPU (a gloo group beside NCCL), so the device is not waited for.
    Nothing to agree on (one process, no signal watched and no timed checkpoints): no collective."""

    def __init__(self, world_size: int, needed: bool) -> None:
        self.active = world_size > 1 and needed
        self.group = None
        if self.active and dist.get_backend() != "gloo":
            self.group = dist.new_group(backend="gloo")

    def __call__(self, stop: bool, save: bool) -> tuple[bool, bool]:
        if not self.active:
            return stop, save
        flags = torch.tensor([int(stop), int(save)])
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flags[0]), bool(flags[1])


class Preempted(Exception):
    """Training stopped on a preemption signal after writing ``checkpoint`` at ``step``."""

    def __init__(self, sig: signal.Signals | None, step: int, checkpoint: Path) -> None:
        name = sig.name if sig is not None else "a signal received by another process"
        super().__init__(f"preempted by {name} at step {step}: checkpoint {checkpoint} written; rerun with --resume "
                         f"to continue (exit status {PREEMPTED_EXIT})")


class CheckpointClock:
    """``--checkpoint-minutes``: whether that long has passed since the last checkpoint (or the start)."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60.0
        self.restart()

    def restart(self) -> None:
        self._since = time.monotonic()

    def due(self) -> bool:
        return self.seconds > 0 and time.monotonic() - self._since >= self.seconds
