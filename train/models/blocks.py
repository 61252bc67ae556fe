"""PTv3 building blocks: pre-norm block with CPE (spec A4), pooling (spec A6), unpooling (spec A7).

- ``Block``: x += LN(Linear(SubMConv3d_k3(x))) (conditional positional encoding), then
  x += DropPath(Attn(LN1(x))), x += DropPath(MLP(LN2(x))); DropPath drops individual points.
- ``SerializedPooling``: clusters = unique(code_row0 >> 3); Linear before a segment max, then
  BatchNorm + GELU; coord = cluster mean, grid_coord >> 1, codes >> 3 (not re-encoded).
- ``SerializedUnpooling``: parent.feat = proj_skip(parent) + proj(coarse)[cluster]. The CPE of the
  next block reads the level's current features (the refreshed sparse-conv input), or, with
  ``stale_cpe=True`` (upstream Pointcept's behaviour, spec A7 note), ``proj_skip(parent)`` alone.
"""
from __future__ import annotations

import torch
from torch import nn

from train.models.attention import SerializedAttention
from train.models.point import PointLevel, batch_to_offsets
from train.models.serialization import order_and_inverse
from train.models.sparse_conv import SubMConv3d

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def point_batch_norm(channels: int) -> nn.BatchNorm1d:
    """BatchNorm of the stem/pool/unpool layers (eps 1e-3, momentum 0.01; spec A3, A6, A7)."""
    return nn.BatchNorm1d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class DropPath(nn.Module):
    """Per-point stochastic depth: each row kept with prob 1-p and scaled by 1/(1-p) (spec B)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty(x.shape[0], 1, device=x.device, dtype=x.dtype).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class Block(nn.Module):
    """Pre-norm PTv3 block (spec A4); parameters 40C^2 + 17C (spec A9)."""

    def __init__(
        self, channels: int, num_heads: int, patch_size: int, drop_path: float, order_row: int,
        mlp_ratio: int = 4, conv_backend: str = "auto", attn_backend: str = "auto",
    ):
        super().__init__()
        self.order_row = order_row
        self.cpe_conv = SubMConv3d(channels, channels, 3, bias=True, backend=conv_backend)
        self.cpe_linear = nn.Linear(channels, channels)
        self.cpe_norm = nn.LayerNorm(channels, eps=1e-5)
        self.norm1 = nn.LayerNorm(channels, eps=1e-5)
        self.attn = SerializedAttention(channels, num_heads, patch_size, backend=attn_backend)
        self.norm2 = nn.LayerNorm(channels, eps=1e-5)
        hidden = channels * mlp_ratio
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, channels), nn.Dropout(0.0)
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, level: PointLevel) -> PointLevel:
        x = level.feat
        conv_in = x if level.conv_feat is None else level.conv_feat
        x = x + self.cpe_norm(self.cpe_linear(self.cpe_conv(level, conv_in)))
        x = x + self.drop_path(self.attn(level, self.norm1(x), self.order_row))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return level.with_feat(x)


def shuffle_rows(code: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Random permutation of the serialization rows (upstream's per-forward / per-pool shuffle, spec A2)."""
    perm = torch.randperm(code.shape[0], device=code.device)
    return code[perm], order[perm], inverse[perm]


class SerializedPooling(nn.Module):
    """Stride-2 pooling over serialization clusters (spec A6); parameters io + 3o."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, out_channels)
        self.norm = point_batch_norm(out_channels)
        self.act = nn.GELU()

    def forward(self, level: PointLevel, shuffle: bool) -> PointLevel:
        if level.depth < 1:
            raise ValueError("cannot pool a level of depth 0: the grid is already a single voxel per cloud")
        key = level.code[0] >> 3
        unique_key, cluster = torch.unique(key, sorted=True, return_inverse=True)
        m = unique_key.numel()
        n = key.numel()
        # Every point of a cluster has the same grid_coord >> 1 and the same code >> 3 in every row
        # (prefix property), so any member can serve as head; the lowest index is deterministic.
        head = torch.full((m,), n, dtype=torch.long, device=key.device)
        head.scatter_reduce_(0, cluster, torch.arange(n, device=key.device), reduce="amin")
        feat = self.proj(level.feat)
        rows = cluster[:, None]
        # -inf, not new_empty: the amax backward splits a cluster's gradient among every entry equal to
        # its max and counts the initial value as one even with include_self=False, so leftover memory
        # that happened to hold the max halved that gradient at random (non-reproducible runs).
        pooled = feat.new_full((m, feat.shape[1]), float("-inf"))
        pooled = pooled.scatter_reduce_(0, rows.expand_as(feat), feat, "amax", include_self=False)
        pooled = self.act(self.norm(pooled))
        coord = level.coord.new_zeros(m, 3).scatter_reduce_(0, rows.expand(n, 3), level.coord, "mean", include_self=False)
        batch = level.batch[head]
        code = level.code[:, head] >> 3
        order, inverse = order_and_inverse(code)
        if shuffle:
            code, order, inverse = shuffle_rows(code, order, inverse)
        return PointLevel(
            feat=pooled, coord=coord, grid_coord=level.grid_coord[head] >> 1, batch=batch,
            offset=batch_to_offsets(batch, level.num_clouds), code=code, order=order, inverse=inverse,
            depth=level.depth - 1, parent=level, cluster=cluster,
        )


class SerializedUnpooling(nn.Module):
    """Unpooling by addition of two Linear-BN-GELU branches (spec A7); parameters (in+skip)o + 6o."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_channels, out_channels), point_batch_norm(out_channels), nn.GELU())
        self.proj_skip = nn.Sequential(nn.Linear(skip_channels, out_channels), point_batch_norm(out_channels), nn.GELU())

    def forward(self, coarse: PointLevel, stale_cpe: bool = False) -> PointLevel:
        """``stale_cpe``: the next block's CPE reads the skip branch alone, as upstream's does."""
        parent, cluster = coarse.parent, coarse.cluster
        if parent is None or cluster is None:
            raise ValueError("unpooling needs a level produced by SerializedPooling (parent and cluster set)")
        skip = self.proj_skip(parent.feat)
        level = parent.with_feat(skip + self.proj(coarse.feat)[cluster])
        if stale_cpe:
            level.conv_feat = skip
        return level
