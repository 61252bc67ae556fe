"""Seconds of one PTv3 forward pass per part of the model (``benchmarks/tests/test_bench_predict.py``).

Forward hooks time each part of every block (the CPE: sparse conv, linear and norm; the two
LayerNorms; serialized attention; the MLP), the pooling and unpooling layers, the stem and the
head; ``other`` is the rest of the forward pass (residual adds, reading the plan, the decoder's
index taps) and ``total`` the whole pass. For a CPU run: the hooks read the clock without
synchronising a device.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import torch
from torch import nn

# (part name, attribute path under a Block) of every block
_BLOCK_PARTS = (("cpe_conv", "cpe_conv"), ("cpe_linear_norm", "cpe_linear"), ("cpe_linear_norm", "cpe_norm"),
                ("norms", "norm1"), ("norms", "norm2"), ("attention", "attn"), ("mlp", "mlp"))


def _parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    parts: list[tuple[str, nn.Module]] = [("stem", model.stem_conv), ("stem", model.stem_norm), ("head", model.head)]
    parts += [("pooling", m) for m in model.enc_pool] + [("unpooling", m) for m in model.dec_unpool]
    for stages in (model.enc_blocks, model.dec_blocks):
        for stage in stages:
            for block in stage:
                parts += [(name, getattr(block, attr)) for name, attr in _BLOCK_PARTS]
    return parts


def part_seconds(model: nn.Module, batch: dict[str, Any]) -> dict[str, float]:
    """Seconds of one ``model(batch)`` (no gradients) per part (module docstring)."""
    seconds: dict[str, float] = defaultdict(float)
    started: dict[int, float] = {}
    handles = []

    def pre(module: nn.Module, args: Any) -> None:
        started[id(module)] = time.perf_counter()

    def post(name: str) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            seconds[name] += time.perf_counter() - started.pop(id(module))
        return hook

    for name, module in _parts(model):
        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post(name))]
    try:
        t0 = time.perf_counter()
        with torch.no_grad():
            model(batch)
        total = time.perf_counter() - t0
    finally:
        for handle in handles:
            handle.remove()
    return {**seconds, "other": total - sum(seconds.values()), "total": total}
