"""Operators, host synchronisations and host<->device transfers of ``fast.topo_loss``, counted without a GPU.

Paper Algorithm 1 on a GPU costs, besides its arithmetic, one kernel launch per dispatched operator
and a stall of the host wherever it must wait for the device: reading a value (``item``, ``bool``:
``_local_scalar_dense``), a result whose size depends on the data (``nonzero``, ``masked_select``,
``unique``, boolean indexing, ``repeat_interleave`` without ``output_size``, ``bincount``), and a
copy between host and device memory that is not pinned and non-blocking. :func:`count` records,
for one call, every operator that reaches the dispatcher (a ``TorchDispatchMode``: the operators
are those of any device, only their kernels differ), those among them that synchronise on CUDA,
and the places where data crosses between host and device (``Tensor.cpu``/``numpy``/``tolist``,
``torch.from_numpy`` and ``torch.tensor``/``as_tensor`` of host data; on CUDA these are the copies).
The counts are exact; how long each operator takes on a device is not measured here.

Usage::

    python -m benchmarks.op_counts                          # 12 clouds of 600 points, M = 128, float32
    python -m benchmarks.op_counts --clouds 1 12 --points 2000 --m 256

The device form of the PWCD tie search (``fast.pwcd._device_ties``, what CUDA runs) is forced on
the CPU tensors, so the counts are those of the CUDA path; TPS and the diagrams run in the
persistence workers (here inline, ``workers=0``) on every device.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = frozenset({"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_consecutive",
                      "unique_dim", "bincount"})
"""Operators whose CUDA kernels make the host wait (their result's size or value is read on the host)."""


@dataclass
class Counts:
    """What one counted call dispatched and transferred."""

    ops: int = 0
    syncs: Counter = field(default_factory=Counter)
    transfers: Counter = field(default_factory=Counter)
    by_op: Counter = field(default_factory=Counter)

    def line(self) -> str:
        return (f"{self.ops} ops, {sum(self.syncs.values())} syncs {dict(self.syncs)}, "
                f"{sum(self.transfers.values())} host<->device transfers {dict(self.transfers)}")


class _OpCounter(TorchDispatchMode):
    def __init__(self, counts: Counts) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        self.counts.ops += 1
        self.counts.by_op[name] += 1
        if name in SYNC_OPS:
            self.counts.syncs[name] += 1
        elif name == "repeat_interleave" and kwargs.get("output_size") is None:
            self.counts.syncs[name] += 1
        elif name in ("index", "index_put", "index_put_") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None):
            self.counts.syncs["boolean index"] += 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def _transfer_points(counts: Counts) -> Iterator[None]:
    """Count the calls that move data between host and device memory on a GPU."""
    host_data = {"tensor", "as_tensor"}  # counted only when given host data, not a tensor
    targets = [(torch.Tensor, "cpu"), (torch.Tensor, "numpy"), (torch.Tensor, "tolist"), (torch, "from_numpy"),
               (torch, "tensor"), (torch, "as_tensor")]
    saved = [(owner, name, getattr(owner, name)) for owner, name in targets]

    def counting(name: str, original: Callable) -> Callable:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if name not in host_data or not isinstance(args[0], torch.Tensor):
                counts.transfers[name] += 1
            return original(*args, **kwargs)
        return wrapped

    for owner, name, original in saved:
        setattr(owner, name, counting(name, original))
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def count(fn: Callable[[], Any]) -> tuple[Any, Counts]:
    """Run ``fn()`` and return its result with what it dispatched and transferred."""
    counts = Counts()
    with _transfer_points(counts), _OpCounter(counts):
        result = fn()
    return result, counts


@contextlib.contextmanager
def device_tie_search() -> Iterator[None]:
    """Run PWCD's tie search in its device form (the one CUDA uses) on CPU tensors."""
    module = importlib.import_module("fast.pwcd")  # the module (``fast.pwcd`` is the function)
    host = module._host_ties
    module._host_ties = module._device_ties
    try:
        yield
    finally:
        module._host_ties = host


def topo_loss_counts(clouds: int, points: int, m: int, dtype: torch.dtype = torch.float32) -> tuple[Counts, Counts]:
    """(forward, backward) counts of ``fast.topo_loss`` on ``clouds`` clouds of ``points`` points
    (benchmark clouds, family ``latent``) with TPS budget ``m``, after one uncounted warm-up call."""
    from benchmarks.cpu.clouds import batch
    from fast.persistence import PersistencePool
    from fast.topo_loss import topo_loss

    pool = PersistencePool(0)
    student, teacher, offsets = batch(clouds, points, "latent", 0, dtype)
    with device_tie_search():
        topo_loss(student, teacher, offsets, m=m, pool=pool).backward()
        loss, forward = count(lambda: topo_loss(student, teacher, offsets, m=m, pool=pool))
        _, backward = count(loss.backward)
    return forward, backward


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clouds", type=int, nargs="+", default=[1, 12])
    parser.add_argument("--points", type=int, default=600)
    parser.add_argument("--m", type=int, default=128)
    args = parser.parse_args(argv)
    for b in args.clouds:
        forward, backward = topo_loss_counts(b, args.points, args.m)
        print(f"B={b} x N={args.points}, M={args.m}\n  forward:  {forward.line()}\n  backward: {backward.line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
