"""The inputs of the exported PTv3 graph (decision 55): the point features and the batch plan's
arrays, each with its name, dtype, symbolic shape and the plan item it is read from, and the
reading itself (:func:`plan_feed`), without torch.

The graph of ``train.models.onnx_graph`` takes ``feat`` (points_l0, C) float32 and, for every
item of ``PTv3.plan_items`` (decision 47) on a CPU with the plain convolution:

- ``("rulebook", l, k)``: ``rulebook_l{l}_k{k}_gather`` / ``_scatter`` (pairs,) int64, the input
  and output point of every neighbour pair, kernel offset after kernel offset (the plan's rulebook,
  decision 45, without its padding pairs), and ``_counts`` (k^3,) int64, the pairs of each offset
  (:func:`rulebook_pairs`);
- ``("patches", l, K)``: ``patches_l{l}_gather`` (curves, rows, width) int64, the point of every
  attention slot, and ``patches_l{l}_scatter`` (curves, points_l{l}) int64, the slot whose output
  each point keeps (spec A5);
- ``("patch_mask", l, K)``: ``patch_mask_l{l}`` (rows, width) float32, 0 on real slots and -inf on
  padding (all 0 where the plan has no mask);
- ``("pool", l)``: ``pool_l{l}_members`` (points_l{l}, width) int64, the level l - 1 points of
  each cluster padded with points_l{l-1}, and ``pool_l{l}_cluster`` (points_l{l-1},) int64, the
  cluster of each level l - 1 point (the unpooling's map; spec A6-A7).

``docs/deploy.md`` states how each array follows from ``grid_coord`` and ``offset``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from train.models.plan import BatchPlan, ConvRulebook, PlanKey

FEATURES = "feat"


@dataclass(frozen=True)
class GraphInput:
    """One input of the graph: ``name``, the plan ``item`` and its ``field`` it is read from (None
    for the features), ``dtype`` and ``shape`` (a symbolic name per dynamic dimension, an int per
    fixed one)."""

    name: str
    item: PlanKey | None
    field: str
    dtype: str
    shape: tuple[str | int, ...]

    def plain(self) -> dict[str, Any]:
        """This input as plain JSON values (the file's metadata)."""
        return {"name": self.name, "item": None if self.item is None else list(self.item), "field": self.field,
                "dtype": self.dtype, "shape": list(self.shape)}


def graph_input(data: Any) -> GraphInput:
    """The :class:`GraphInput` of :meth:`GraphInput.plain`'s form (KeyError / TypeError when it is not)."""
    item = data["item"]
    return GraphInput(str(data["name"]), None if item is None else tuple(item), str(data["field"]), str(data["dtype"]),
                      tuple(data["shape"]))


def graph_inputs(items: Sequence[PlanKey], in_channels: int, curves: int) -> list[GraphInput]:
    """The graph's inputs, features first, then the plan items ``items`` in their given order."""
    inputs = [GraphInput(FEATURES, None, FEATURES, "float32", ("points_l0", in_channels))]
    for item in items:
        kind, level = item[0], item[1]
        points = f"points_l{level}"
        if kind == "rulebook":
            base, k = f"rulebook_l{level}_k{item[2]}", item[2]
            inputs += [GraphInput(f"{base}_gather", item, "gather", "int64", (f"pairs_l{level}_k{k}",)),
                       GraphInput(f"{base}_scatter", item, "scatter", "int64", (f"pairs_l{level}_k{k}",)),
                       GraphInput(f"{base}_counts", item, "counts", "int64", (k**3,))]
        elif kind == "patches":
            rows, width = f"patch_rows_l{level}", f"patch_width_l{level}"
            inputs += [GraphInput(f"patches_l{level}_gather", item, "gather", "int64", (curves, rows, width)),
                       GraphInput(f"patches_l{level}_scatter", item, "scatter", "int64", (curves, points))]
        elif kind == "patch_mask":
            inputs.append(GraphInput(f"patch_mask_l{level}", item, "mask", "float32",
                                     (f"patch_rows_l{level}", f"patch_width_l{level}")))
        elif kind == "pool":
            inputs += [GraphInput(f"pool_l{level}_members", item, "members", "int64", (points, f"pool_width_l{level}")),
                       GraphInput(f"pool_l{level}_cluster", item, "cluster", "int64", (f"points_l{level - 1}",))]
        else:
            raise ValueError(f"plan item {item!r} has no graph input: the exported graph reads rulebooks, patches, "
                             "patch masks and pooling tables")
    return inputs


def rulebook_pairs(book: ConvRulebook, num_points: int, kernel_size: int) -> dict[str, np.ndarray]:
    """The real pairs of a rulebook (decision 45) as the graph reads them (decision 55): ``gather``
    and ``scatter`` without the padding pairs (those that read the zero row ``num_points``), kernel
    offset after kernel offset as in the rulebook, and ``counts`` (k^3,), the pairs of each offset."""
    real = book.scatter != num_points
    per_group = real.reshape(-1, book.rows).sum(1)
    counts = np.bincount(book.group_offset, weights=per_group, minlength=kernel_size**3).astype(np.int64)
    return {"gather": book.gather[real], "scatter": book.scatter[real], "counts": counts}


def plan_feed(plan: BatchPlan, feat: np.ndarray, inputs: Sequence[GraphInput]) -> dict[str, np.ndarray]:
    """The graph's inputs ``inputs`` for the batch of ``plan`` with features ``feat``: every array
    built by the host plan (decision 40), none of them copied more than the contiguous layout needs."""
    feed = {}
    pairs: dict[PlanKey, dict[str, np.ndarray]] = {}
    for spec in inputs:
        if spec.item is None:
            feed[spec.name] = np.ascontiguousarray(feat, dtype=np.float32)
            continue
        kind, level = spec.item[0], spec.item[1]
        value = plan.item(spec.item)
        if kind == "rulebook":
            if spec.item not in pairs:
                pairs[spec.item] = rulebook_pairs(value, plan.level(level).num_points, spec.item[2])
            array = pairs[spec.item][spec.field]
        elif kind == "patch_mask":
            layout = plan.item(("patches",) + tuple(spec.item[1:]))
            array = np.zeros(layout.gather.shape[1:], np.float32) if value is None else value[:, 0, 0, :]
        elif spec.field == "cluster":
            array = plan.level(level).cluster
        else:
            array = getattr(value, spec.field)
        feed[spec.name] = np.ascontiguousarray(array)
    return feed
