"""The point batch of PTv3 (spec A1): offsets <-> batch ids, input checks, one level's state.

A batch of B clouds is stored flat: row i belongs to cloud ``batch[i]``; ``offset`` (B,) holds the
END index of every cloud (cumulative counts). ``PointLevel`` carries one resolution level through
the network: features, coordinates, serialization codes/orders (spec A2), the pooling link to the
finer level (spec A6) and the caches shared by all blocks of the level (sparse-conv neighbour
maps, spec A4; attention patch layouts, spec A5).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch


def offsets_to_batch(offset: torch.Tensor, num_points: Optional[int] = None) -> torch.Tensor:
    """Cloud id (N,) int64 of every point from END offsets (B,)."""
    counts = offsets_to_counts(offset)
    if num_points is not None and int(offset[-1]) != num_points:
        raise ValueError(
            f"offset[-1] = {int(offset[-1])} but the batch has {num_points} points: "
            "offset must hold the cumulative END index of every cloud"
        )
    return torch.repeat_interleave(torch.arange(len(counts), device=offset.device), counts)


def offsets_to_counts(offset: torch.Tensor) -> torch.Tensor:
    """Points per cloud (B,) from END offsets (B,); raises on empty or decreasing clouds."""
    if offset.dim() != 1 or offset.numel() == 0:
        raise ValueError(f"offset must be a non-empty 1-D tensor of END offsets, got shape {tuple(offset.shape)}")
    counts = torch.diff(offset, prepend=offset.new_zeros(1))
    if bool((counts <= 0).any()):
        raise ValueError(
            f"offset {offset.tolist()} is not strictly increasing: every cloud needs at least one "
            "point and offset holds cumulative END indices (e.g. [n0, n0+n1])"
        )
    return counts


def batch_to_offsets(batch: torch.Tensor, num_clouds: int) -> torch.Tensor:
    """END offsets (B,) from sorted cloud ids (N,)."""
    return torch.cumsum(torch.bincount(batch, minlength=num_clouds), 0)


def check_input(data: dict[str, torch.Tensor], in_channels: int) -> None:
    """Validate the model's input dict (keys, shapes, dtypes, contiguous clouds)."""
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
    offsets_to_batch(offset, n)


@dataclass
class PointLevel:
    """State of one resolution level (spec A1).

    ``code``/``order``/``inverse`` are (k, N): one row per serialization curve, batch bits included.
    ``cluster`` maps the points of the finer ``parent`` level to this level's points (spec A6).
    ``cache`` holds per-level objects shared by the blocks of the level (neighbour maps, patches).
    ``conv_feat``: when set, the features the next block's CPE convolution reads instead of ``feat``
    (upstream's stale sparse tensor after unpooling, spec A7); ``with_feat`` clears it.
    """

    feat: torch.Tensor
    coord: torch.Tensor
    grid_coord: torch.Tensor
    batch: torch.Tensor
    offset: torch.Tensor
    code: torch.Tensor
    order: torch.Tensor
    inverse: torch.Tensor
    depth: int
    parent: Optional["PointLevel"] = None
    cluster: Optional[torch.Tensor] = None
    cache: dict[Any, Any] = field(default_factory=dict)
    conv_feat: Optional[torch.Tensor] = None

    @property
    def num_clouds(self) -> int:
        return int(self.offset.numel())

    def with_feat(self, feat: torch.Tensor) -> "PointLevel":
        """The same level (sharing caches and links) carrying new features."""
        return PointLevel(
            feat, self.coord, self.grid_coord, self.batch, self.offset, self.code, self.order,
            self.inverse, self.depth, self.parent, self.cluster, self.cache,
        )
