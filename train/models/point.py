"""The point batch of PTv3 (spec A1): input checks and one level's state in one forward.

A batch of B clouds is stored flat: row i belongs to cloud ``batch[i]``; ``offset`` (B,) holds the
END index of every cloud (cumulative counts). Its geometry (orders, neighbours, patches, pooling
maps) is the batch plan's (``train.models.plan``, decision 40); ``PointLevel`` carries one
resolution level through one forward: features, the plan on their device, this forward's random
permutation of the curves (spec A2) and the link to the finer level (spec A6).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from train.models.device_plan import DevicePlan


def check_input(data: dict[str, Any], in_channels: int) -> None:
    """Validate the model's input dict (keys, shapes, dtypes); the offsets' values are checked on
    the host by the batch plan."""
    for key in ("coord", "grid_coord", "feat", "offset"):
        if key not in data:
            raise ValueError(f"input batch lacks {key!r}: expected keys coord, grid_coord, feat, offset")
    coord, grid, feat, offset = data["coord"], data["grid_coord"], data["feat"], data["offset"]
    n = coord.shape[0]
    if coord.dim() != 2 or coord.shape[1] != 3 or not coord.is_floating_point():
        raise ValueError(f"coord must be (N, 3) float, got {tuple(coord.shape)} {coord.dtype}")
    if grid.shape != (n, 3) or grid.dtype != torch.int64:
        raise ValueError(
            f"grid_coord must be (N, 3) int64 with N = {n}, got {tuple(grid.shape)} {grid.dtype}: "
            "use grid_coord.long()"
        )
    if feat.dim() != 2 or feat.shape[0] != n or feat.shape[1] != in_channels:
        raise ValueError(
            f"feat must be (N, {in_channels}) with N = {n}, got {tuple(feat.shape)}: "
            "build the model with in_channels matching the data"
        )
    if not feat.is_floating_point():
        raise ValueError(f"feat must be a floating-point tensor, got {feat.dtype}: use feat.float()")
    if offset.dtype != torch.int64:
        raise ValueError(f"offset must be int64 END offsets, got {offset.dtype}")


@dataclass
class PointLevel:
    """State of level ``index`` of the batch plan in one forward (spec A1).

    ``perm``: this forward's random permutation of the serialization curves at this level (block i
    uses curve ``perm[i % k]``; None = the plan's order, ``deterministic`` mode). ``parent``: the
    finer level this one was pooled from (spec A6). ``cache`` holds per-forward objects shared by
    the blocks of the level (the permuted patch layouts). ``conv_feat``: when set, the features the
    next block's CPE convolution reads instead of ``feat`` (upstream's stale sparse tensor after
    unpooling, spec A7); ``with_feat`` clears it. ``input_coord``: the input coordinates (level 0).
    """

    feat: torch.Tensor
    plan: DevicePlan
    index: int = 0
    perm: Optional[torch.Tensor] = None
    parent: Optional["PointLevel"] = None
    input_coord: Optional[torch.Tensor] = None
    cache: dict[Any, Any] = field(default_factory=dict)
    conv_feat: Optional[torch.Tensor] = None

    @property
    def num_clouds(self) -> int:
        return self.plan.host.num_clouds

    @property
    def num_points(self) -> int:
        return self.plan.host.level(self.index).num_points

    @property
    def offset(self) -> torch.Tensor:
        return self.plan.level_tensor(self.index, "offset")

    @property
    def cluster(self) -> torch.Tensor:
        """(N_parent,) parent point -> this level's point."""
        return self.plan.level_tensor(self.index, "cluster")

    @property
    def coord(self) -> torch.Tensor:
        """Point coordinates: the input's at level 0, cluster means above (spec A6); computed on
        first use (the network itself never reads them)."""
        if "coord" not in self.cache:
            if self.parent is None:
                self.cache["coord"] = self.input_coord
            else:
                fine = self.parent.coord
                rows = self.cluster[:, None].expand_as(fine)
                self.cache["coord"] = fine.new_zeros(self.num_points, 3).scatter_reduce_(
                    0, rows, fine, "mean", include_self=False)
        return self.cache["coord"]

    def by_curve(self, key: Any, stacks: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Per-curve stacks (k, ...) of the plan in this forward's curve order (``perm`` applied
        once per level and kept under ``key``): block i reads entry ``i % k`` (spec A2)."""
        if key not in self.cache:
            self.cache[key] = stacks if self.perm is None else tuple(s[self.perm] for s in stacks)
        return self.cache[key]

    def with_feat(self, feat: torch.Tensor) -> "PointLevel":
        """The same level (sharing the plan, caches and links) carrying new features."""
        return PointLevel(feat, self.plan, self.index, self.perm, self.parent, self.input_coord, self.cache)
