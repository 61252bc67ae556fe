"""Point Transformer V3 teacher and student in plain PyTorch (spec A).

In this package a citation such as "spec A5" names section A5 of ``docs/ptv3-and-datasets.md``,
and "decisions 12" names entry 12 of ``docs/decisions.md``.

Modules, top to bottom: ``serialization`` (space-filling curves, spec A2), ``plan`` (the batch
plan: a batch's geometry computed once on the host, decision 40), ``point`` (batch structure,
spec A1), ``sparse_conv`` (pure-PyTorch submanifold conv, spec B), ``attention``
(serialized patch attention, spec A5), ``blocks`` (block, pooling, unpooling, spec A4/A6/A7),
``ptv3`` (the network, presets, ``build_model``, spec A3/A8), ``pointcept`` (Pointcept checkpoints
in and out: ``from_pointcept``, ``to_pointcept``, spec H). Its cost (parameters, FLOPs,
latency, peak memory) is measured by the tool ``train.cost``.

Usage::

    model = build_model("teacher", num_classes=16)          # 46,159,312 parameters (spec A9)
    out = model({"coord": coord, "grid_coord": grid_coord, "feat": feat, "offset": offset})
    out.logits, out.embedding                                 # (N, K), (N, 64)
    out.decoder_feats, out.decoder_index, out.decoder_offsets # one entry per decoder stage

    plan = BatchPlan(grid_coord, offset)                      # on the host, once per batch
    t_out = teacher({..., "plan": plan}); s_out = student({..., "plan": plan})   # shared

``model.deterministic = True`` (or ``build_model(..., deterministic=True)``) fixes the
serialization order for evaluation and tests. A frozen teacher still yields differentiable
``decoder_feats`` when ``feat`` requires grad (decisions 15). ``from_pointcept(state_dict,
num_classes=16, preset="teacher")`` imports a Pointcept PTv3 segmentor (with upstream's
behaviour); ``to_pointcept(model)`` returns a state dict in Pointcept's layout.

The names below are resolved on first access (PEP 562): the batch plan (``plan``,
``serialization``, ``graph_inputs``) imports without torch, for the labelling through onnxruntime
that never imports it (decision 55); ``device_plan`` holds the plan's device side, ``onnx_graph``
the network traced into an ONNX graph whose inputs are the plan's arrays.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "BatchPlan": "train.models.plan",
    "from_pointcept": "train.models.pointcept", "to_pointcept": "train.models.pointcept",
    "PRESETS": "train.models.ptv3", "PTv3": "train.models.ptv3", "PTv3Config": "train.models.ptv3",
    "ModelOutput": "train.models.ptv3", "build_model": "train.models.ptv3",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'train.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
