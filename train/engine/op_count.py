"""Dispatched-op and host-sync counter of a piece of PyTorch work (the yardstick of decisions 39 and 40).

``count_ops(fn)`` runs ``fn()`` under a ``TorchDispatchMode`` and counts every aten op that reaches
the dispatcher below autograd, except views (ops whose schema returns an alias of an input, plus
the view-like ``_unsafe_view`` / ``_reshape_alias`` / ``lift_fresh``) and allocations (``empty``,
``empty_like``, ``empty_strided``, ``new_empty``, ``new_empty_strided``). On a GPU each counted op
is at least one kernel launch, so the count is a device-independent proxy for the kernels a
training step launches, measurable on the CPU.

Host synchronisations counted (on a GPU each one stalls the host until the device catches up):

- ``_local_scalar_dense``: ``.item()``, ``bool(t)``, ``int(t)``, ``float(t)``, ``if t:``;
- ops whose output size depends on tensor values: ``nonzero``, ``masked_select``, every
  ``unique`` variant, ``repeat_interleave`` without ``output_size``, indexing
  (``index``/``index_put_``) with a boolean or uint8 mask;
- a device-to-host copy (``_to_copy``/``copy_`` from a non-CPU tensor to the CPU);
- ``.tolist()``, ``.numpy()``, ``.cpu()`` of a tensor produced inside ``fn`` (a step tensor; on a
  CPU these do not reach the dispatcher, so they are caught at the Python method).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

_ALLOCATIONS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
_VIEW_LIKE = {"_unsafe_view", "_reshape_alias", "lift_fresh"}
_VALUE_SIZED = {"nonzero", "masked_select", "_unique", "_unique2", "unique_dim", "unique_consecutive",
                "unique_dim_consecutive"}
_HOST_METHODS = ("tolist", "numpy", "cpu")


@dataclass
class OpCount:
    """``ops``: dispatched ops that are neither views nor allocations; ``syncs``: host
    synchronisations; ``by_op`` / ``by_sync``: the same counts per aten op (or method) name."""

    ops: int = 0
    syncs: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    by_sync: dict[str, int] = field(default_factory=dict)


def _sync_kind(name: str, func: Any, args: tuple, kwargs: dict) -> str | None:
    if name == "_local_scalar_dense" or name in _VALUE_SIZED:
        return name
    if name == "repeat_interleave" and func._overloadname == "Tensor" and kwargs.get("output_size") is None:
        return name
    if name in ("index", "index_put", "index_put_", "_index_put_impl_"):
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices):
            return f"{name}[mask]"
    if name in ("_to_copy", "copy_"):
        src = args[1] if name == "copy_" else args[0]
        dst_device = args[0].device if name == "copy_" else kwargs.get("device")
        if isinstance(src, torch.Tensor) and src.device.type != "cpu" and dst_device is not None \
                and torch.device(dst_device).type == "cpu":
            return f"{name}[to host]"
    return None


class _Counter(TorchDispatchMode):
    def __init__(self, result: OpCount) -> None:
        super().__init__()
        self.result = result
        self.ops: Counter[str] = Counter()
        self.syncs: Counter[str] = Counter()
        self.produced: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if not (func.is_view or name in _VIEW_LIKE or name in _ALLOCATIONS):
            self.ops[name] += 1
        kind = _sync_kind(name, func, args, kwargs)
        if kind is not None:
            self.syncs[kind] += 1
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.produced[t] = True
        return out

    def host_read(self, method: str, tensor: torch.Tensor) -> None:
        if tensor in self.produced:
            self.syncs[f".{method}()"] += 1


def count_ops(fn: Callable[[], Any]) -> OpCount:
    """Dispatched ops and host syncs of ``fn()`` (its return value is discarded)."""
    result = OpCount()
    counter = _Counter(result)
    originals = {m: getattr(torch.Tensor, m) for m in _HOST_METHODS}

    def wrap(method: str) -> Callable[..., Any]:
        original = originals[method]

        def host_method(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            counter.host_read(method, self)
            return original(self, *args, **kwargs)

        return host_method

    try:
        for m in _HOST_METHODS:
            setattr(torch.Tensor, m, wrap(m))
        with counter:
            fn()
    finally:
        for m, original in originals.items():
            setattr(torch.Tensor, m, original)
    result.ops = sum(counter.ops.values())
    result.syncs = sum(counter.syncs.values())
    result.by_op = dict(counter.ops.most_common())
    result.by_sync = dict(counter.syncs.most_common())
    return result
