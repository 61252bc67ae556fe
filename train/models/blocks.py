"""PTv3 building blocks: pre-norm block with CPE (spec A4), pooling (spec A6), unpooling (spec A7).

- ``Block``: x += LN(Linear(SubMConv3d_k3(x))) (conditional positional encoding), then
  x += DropPath(Attn(LN1(x))), x += DropPath(MLP(LN2(x))); DropPath drops individual points.
- ``SerializedPooling``: clusters = points of equal ``code >> 3`` (the batch plan's, decision 40);
  Linear before a segment max (one gather of each cluster's members, padded with -inf, and one
  max; its backward a gather by each member's slot, :class:`ClusterMax`), then BatchNorm + GELU;
  grid_coord >> 1, codes >> 3 (not re-encoded), coord = cluster mean.
- ``SerializedUnpooling``: parent.feat = proj_skip(parent) + proj(coarse)[cluster]. The CPE of the
  next block reads the level's current features (the refreshed sparse-conv input), or, with
  ``stale_cpe=True`` (upstream Pointcept's behaviour, spec A7 note), ``proj_skip(parent)`` alone.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from train.models.attention import SerializedAttention
from train.models.point import PointLevel
from train.models.sparse_conv import SubMConv3d

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


class PointBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over points that normalises a batch of one point, in training too, with
    its running statistics (and leaves them as they are): the statistics of one value have no
    variance, which torch refuses in training. A batch of one scan under the coarsest voxel has one
    point at the coarsest level (decision 54); any other batch is normalised as by its parent."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def point_batch_norm(channels: int) -> nn.BatchNorm1d:
    """BatchNorm of the stem/pool/unpool layers (eps 1e-3, momentum 0.01; spec A3, A6, A7)."""
    return PointBatchNorm(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


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


def curve_permutation(num_curves: int, shuffle: bool, device: torch.device) -> Optional[torch.Tensor]:
    """A random permutation of the serialization curves (upstream's per-forward / per-pool shuffle,
    spec A2), drawn on the device; None without ``shuffle``."""
    return torch.randperm(num_curves, device=device) if shuffle else None


class ClusterMax(torch.autograd.Function):
    """The max over each cluster's members (spec A6): ``feat`` (N, C), ``members`` (M, S) padded
    with N, ``slot`` (N,) each point's place in ``members`` flattened (``PoolTable``) -> (M, C).

    The gradient is amax's: a cluster's gradient split evenly among the members equal to its max.
    autograd would send it back through the padded gather with ``index_put_(accumulate=True)``,
    which on CUDA sorts the indices and adds each run of equal ones serially. The padding row is
    one run of hundreds of thousands of slots: 82.6 ms of a 4 x 30,000-point step on an H200
    (``docs/notes/gpu-step-kernels.md``). Every point sits in exactly one slot, so its gradient
    is that slot's share: one gather. On the CPU the values are the same bits."""

    @staticmethod
    def forward(ctx: Any, feat: torch.Tensor, members: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        rows = F.pad(feat, (0, 0, 0, 1), value=float("-inf"))[members]
        pooled = rows.amax(1)
        ctx.save_for_backward(rows, pooled, slot)
        return pooled

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        rows, pooled, slot = ctx.saved_tensors
        ties = rows == pooled[:, None]
        shares = (grad[:, None] / ties.sum(1, keepdim=True)) * ties  # amax's own backward, in its order
        return shares.reshape(-1, shares.shape[-1])[slot], None, None


class SerializedPooling(nn.Module):
    """Stride-2 pooling over serialization clusters (spec A6); parameters io + 3o."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, out_channels)
        self.norm = point_batch_norm(out_channels)
        self.act = nn.GELU()

    def forward(self, level: PointLevel, shuffle: bool) -> PointLevel:
        index = level.index + 1
        members, slot = level.plan.pool_table(index)  # (M, S), padded with the -inf row N; (N,)
        pooled = ClusterMax.apply(self.proj(level.feat), members, slot)
        pooled = self.act(self.norm(pooled))
        perm = curve_permutation(len(level.plan.host.orders), shuffle, pooled.device)
        return PointLevel(pooled, level.plan, index, perm=perm, parent=level)


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
