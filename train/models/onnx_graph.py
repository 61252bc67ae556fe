"""PTv3 traced into an ONNX graph whose inputs are the point features and the batch plan's arrays
(decision 55).

The network's geometry is the batch plan's, built on the host from ``grid_coord`` and ``offset``
(decisions 40, 47); what runs on the device is gathers, GEMMs, scatter-adds, norms and patch
attention. So the graph takes the plan's arrays as inputs (``train.models.graph_inputs``), every
size dynamic, and one file serves every scan size. :class:`GraphPlan` stands in for the plan's
device side (``train.models.device_plan.DevicePlan``) and hands the modules those inputs; the
model's own ``forward_level`` runs unchanged under the tracer, with the plain convolution
(``train.models.sparse_conv.exported_conv``, whatever backend trained the model) and SDPA
attention. ``half``: the network in float16, its inputs and logits in float32.
"""
from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from torch import nn

from train.models.device_plan import DeviceRulebook
from train.models.graph_inputs import GraphInput, graph_inputs, plan_feed
from train.models.plan import BatchPlan, PlanKey
from train.models.point import PointLevel
from train.models.ptv3 import PTv3

# 17: LayerNormalization is one operator (17), ScatterND adds (reduction, 16), Split takes its sizes
# as an input (13); TensorRT 8.6 and later parse it (decision 55).
OPSET = 17


def export_items(model: PTv3) -> tuple[PlanKey, ...]:
    """The plan items the exported graph reads: the model's on a CPU with the plain convolution."""
    return plain(model).plan_items(torch.device("cpu"))


def plain(model: PTv3) -> PTv3:
    """A copy of ``model`` with the plain convolution and SDPA attention (the state dict is the same
    for every backend), in eval mode, with the fixed serialization order of evaluation."""
    config = dataclasses.replace(model.config, conv_backend="torch", attn_backend="sdpa")
    copy = PTv3(config, model.num_classes, model.in_channels, deterministic=True)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


class GraphPlan:
    """The plan's device side as the forward reads it, answered from the graph's inputs: the
    curves (``host.orders``), rulebooks, patches and their masks, pooling tables and clusters. The
    decoder taps' index maps and offsets (distillation's, decision 17) are not part of the graph:
    empty tensors the tracer drops."""

    def __init__(self, orders: tuple[str, ...], inputs: Sequence[GraphInput], arrays: Sequence[torch.Tensor],
                 mask_dtype: torch.dtype):
        self.orders = orders
        self.host = self  # PointLevel and the pooling read the curves as plan.host.orders
        self._arrays = {spec.name: array for spec, array in zip(inputs, arrays)}
        self._mask_dtype = mask_dtype

    def _named(self, name: str) -> torch.Tensor:
        return self._arrays[name]

    def level_tensor(self, i: int, name: str) -> torch.Tensor:
        if name == "cluster":
            return self._named(f"pool_l{i}_cluster")
        return torch.zeros(0, dtype=torch.int64)

    def rulebook(self, i: int, kernel_size: int) -> DeviceRulebook:
        base = f"rulebook_l{i}_k{kernel_size}"  # the real pairs; no groups: each offset is one GEMM
        return DeviceRulebook(self._named(f"{base}_gather"), self._named(f"{base}_scatter"),
                              torch.zeros(0, dtype=torch.int64), 0, kernel_size**3, self._named(f"{base}_counts"))

    def pool_table(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._named(f"pool_l{i}_members"), torch.zeros(0, dtype=torch.int64)  # the slots serve the backward

    def patches(self, i: int, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._named(f"patches_l{i}_gather"), self._named(f"patches_l{i}_scatter")

    def patch_mask(self, i: int, patch_size: int, dtype: torch.dtype) -> Optional[torch.Tensor]:
        return self._named(f"patch_mask_l{i}").to(self._mask_dtype)[:, None, None, :]


class ExportedPTv3(nn.Module):
    """``forward(feat, *arrays) -> logits`` (points_l0, classes) float32: the model on the graph
    inputs ``inputs`` (:func:`train.models.graph_inputs.graph_inputs`), in float16 with ``half``."""

    def __init__(self, model: PTv3, inputs: Sequence[GraphInput], half: bool):
        super().__init__()
        self.model = plain(model).half() if half else plain(model)
        self.inputs = list(inputs)
        self.dtype = torch.float16 if half else torch.float32

    def forward(self, feat: torch.Tensor, *arrays: torch.Tensor) -> torch.Tensor:
        plan = GraphPlan(tuple(self.model.config.orders), self.inputs[1:], arrays, self.dtype)
        level = PointLevel(feat.to(self.dtype), plan, 0)  # type: ignore[arg-type]  (GraphPlan for DevicePlan)
        return self.model.forward_level(level).logits.float()


def example_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two small clouds of distinct voxels, ``grid_coord`` (N, 3) and END ``offset``, to trace with."""
    rng = np.random.default_rng(seed)
    clouds = [np.unique(rng.integers(0, 48, (n, 3)), axis=0) for n in (2500, 1500)]
    return np.concatenate(clouds), np.cumsum([len(c) for c in clouds])


def export_graph(model: PTv3, half: bool) -> tuple[bytes, list[GraphInput]]:
    """The serialised ONNX graph of ``model`` (opset :data:`OPSET`, every size dynamic) and its
    inputs; traced on :func:`example_batch`."""
    items = export_items(model)
    inputs = graph_inputs(items, model.in_channels, len(model.config.orders))
    grid, offset = example_batch()
    plan = BatchPlan(grid, offset, tuple(model.config.orders), items)
    feed = plan_feed(plan, np.random.default_rng(1).standard_normal((len(grid), model.in_channels)), inputs)
    wrapper = ExportedPTv3(model, inputs, half).eval()
    args = tuple(torch.from_numpy(feed[spec.name]) for spec in inputs)
    axes = {spec.name: {d: size for d, size in enumerate(spec.shape) if isinstance(size, str)} for spec in inputs}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(wrapper, args, buffer, input_names=[spec.name for spec in inputs], output_names=["logits"],
                          dynamic_axes={**axes, "logits": {0: "points_l0"}}, opset_version=OPSET, dynamo=False)
    return buffer.getvalue(), inputs
