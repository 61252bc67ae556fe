"""PointNet++ with single-scale grouping (SSG; Qi et al. 2017b), classification and part segmentation.

Set abstraction (Sec. 3.2): ``N / stride`` centres by farthest-point sampling, a ball query of
``nsample`` points within ``radius`` around each, the shared perceptrons on every neighbour's
[coordinates relative to its centre, features], a max over the neighbours; the last level groups
all points (its coordinates taken from the origin). Feature propagation (Sec. 3.4): features
interpolated from the coarser level (``neighbourhood.interpolate``), concatenated with the finer
level's own, then shared perceptrons.

Configurations (the paper's ModelNet40 and ShapeNet-part networks, Appendix B.1 and its code; the
sample counts as strides of the level's point count, decision 67, so 1,024 and 2,048 points give
the paper's 512 / 128 centres):

- classification: SA(stride 2, r 0.2, 32, [64, 64, 128]), SA(stride 4, r 0.4, 64, [128, 128, 256]),
  SA(all, [256, 512, 1024]), then the classifier 512, 256 (dropout 0.5) -> K;
- part segmentation: SA(stride 4, r 0.2, 32, [64, 64, 128]), SA(stride 4, r 0.4, 64, [128, 128,
  256]), SA(all, [256, 512, 1024]); FP [256, 256], FP [256, 128], FP [128, 128, 128] whose skip
  features at the input points are [one-hot category, xyz]; a shared perceptron 128, dropout 0.5
  and a linear map to the P part logits.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from train.models.objects.layers import classifier_head, linear_bn_act, shared_mlp
from train.models.objects.neighbourhood import (ball_query, check_category, check_clouds, farthest_point_sample,
                                                gather_points, interpolate)

# (stride or None for the global level, radius, nsample, perceptron widths)
Level = tuple[int | None, float, int, tuple[int, ...]]
CLASSIFICATION_LEVELS: tuple[Level, ...] = (
    (2, 0.2, 32, (64, 64, 128)), (4, 0.4, 64, (128, 128, 256)), (None, 0.0, 0, (256, 512, 1024)))
PARTS_LEVELS: tuple[Level, ...] = (
    (4, 0.2, 32, (64, 64, 128)), (4, 0.4, 64, (128, 128, 256)), (None, 0.0, 0, (256, 512, 1024)))
PROPAGATION_WIDTHS = ((256, 256), (256, 128), (128, 128, 128))


class SetAbstraction(nn.Module):
    """One SA level on (B, N, 3) coordinates and (B, N, C) features (None: coordinates alone)."""

    def __init__(self, c_in: int, level: Level):
        super().__init__()
        self.stride, self.radius, self.nsample, widths = level
        self.mlp = shared_mlp((c_in + 3, *widths))

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stride is None:  # group all: one centre at the origin
            grouped = xyz.unsqueeze(1) if feats is None else torch.cat([xyz, feats], -1).unsqueeze(1)
            return xyz.new_zeros(xyz.shape[0], 1, 3), self.mlp(grouped).amax(dim=2)
        centres = gather_points(xyz, farthest_point_sample(xyz, max(1, xyz.shape[1] // self.stride)))
        idx = ball_query(centres, xyz, self.radius, self.nsample)
        grouped = gather_points(xyz, idx) - centres.unsqueeze(2)
        if feats is not None:
            grouped = torch.cat([grouped, gather_points(feats, idx)], -1)
        return centres, self.mlp(grouped).amax(dim=2)


def abstraction_levels(levels: Sequence[Level]) -> nn.ModuleList:
    """The SA levels, each taking the previous level's output width."""
    widths = [0] + [level[3][-1] for level in levels]
    return nn.ModuleList(SetAbstraction(c, level) for c, level in zip(widths, levels))


class PointNet2Classifier(nn.Module):
    """(B, N, 3) points -> (B, K) logits."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.levels = abstraction_levels(CLASSIFICATION_LEVELS)
        self.classifier = classifier_head(CLASSIFICATION_LEVELS[-1][3][-1], (512, 256), num_classes)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        check_clouds(points)
        xyz, feats = points, None
        for level in self.levels:
            xyz, feats = level(xyz, feats)
        return self.classifier(feats[:, 0])


class PointNet2PartSegmenter(nn.Module):
    """(B, N, 3) points and (B, K) one-hot categories -> (B, N, P) part logits."""

    def __init__(self, num_categories: int, num_parts: int):
        super().__init__()
        self.num_categories = num_categories
        self.levels = abstraction_levels(PARTS_LEVELS)
        # the skip features of each propagation step, finest last: SA2's, SA1's, [one-hot, xyz]
        skips = [level[3][-1] for level in PARTS_LEVELS[-2::-1]] + [num_categories + 3]
        coarse = [PARTS_LEVELS[-1][3][-1]] + [w[-1] for w in PROPAGATION_WIDTHS[:-1]]
        self.propagation = nn.ModuleList(shared_mlp((c + s, *w)) for c, s, w in zip(coarse, skips, PROPAGATION_WIDTHS))
        self.head = nn.Sequential(*linear_bn_act(128, 128, nn.ReLU()), nn.Dropout(0.5), nn.Linear(128, num_parts))

    def forward(self, points: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        check_clouds(points)
        check_category(category, points, self.num_categories)
        onehot = category.to(points.dtype).unsqueeze(1).expand(-1, points.shape[1], -1)
        stack = [(points, torch.cat([onehot, points], -1))]
        xyz, feats = points, None
        for level in self.levels:
            xyz, feats = level(xyz, feats)
            stack.append((xyz, feats))
        for fp, (fine_xyz, fine_feats) in zip(self.propagation, stack[-2::-1]):
            feats = fp(torch.cat([interpolate(fine_xyz, xyz, feats), fine_feats], -1))
            xyz = fine_xyz
        return self.head(feats)
