"""PointNeXt-S (Qian et al. 2022, "PointNeXt: Revisiting PointNet++", Sec. 4 and Fig. 2), classification.

PointNeXt-S is PointNet++ with the paper's changes to the set abstraction and no InvResMLP block
(B = (0, 0, 0, 0)): a stem perceptron 3 -> 32 (linear with bias, no normalisation); four set
abstraction stages of stride 4 (``N / 4`` centres by farthest-point sampling, a ball query of 32
points), each two shared perceptrons on ``[(p_j - p_i) / r, f_j]`` (the relative coordinates
divided by the stage's radius), C_in + 3 -> C_out / 2 -> C_out with batch norm (ReLU after the
first), a max over the neighbours, and a residual: ``ReLU(pool + W_skip f_i)``, ``f_i`` the centre's
features and ``W_skip`` a linear map with bias; widths 64, 128, 256, 512; radius 0.15 growing by 1.5
per stage (0.15, 0.225, 0.3375, 0.50625); then a global set abstraction grouping all points,
``[p_j, f_j]`` through two perceptrons 515 -> 512 -> 512 (batch norm, ReLU) and a max; the
classifier 512, 256 (dropout 0.5) -> K. These are the openpoints configuration of PointNeXt-S that
the distillation paper evaluates with (its Appendix E), with width C = 32.
"""
from __future__ import annotations

import torch
from torch import nn

from train.models.objects.layers import classifier_head, linear_bn_act, shared_mlp
from train.models.objects.neighbourhood import ball_query, check_clouds, farthest_point_sample, gather_points

WIDTH = 32
STAGES = 4
STRIDE = 4
NSAMPLE = 32
RADIUS = 0.15
RADIUS_SCALING = 1.5


class ResidualAbstraction(nn.Module):
    """One strided set abstraction with normalised relative coordinates and a residual."""

    def __init__(self, c_in: int, c_out: int, radius: float):
        super().__init__()
        self.radius = radius
        self.mlp = nn.Sequential(linear_bn_act(c_in + 3, c_out // 2, nn.ReLU()), linear_bn_act(c_out // 2, c_out, None))
        self.skip = nn.Linear(c_in, c_out)
        self.act = nn.ReLU()

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centres = farthest_point_sample(xyz, max(1, xyz.shape[1] // STRIDE))
        centre_xyz = gather_points(xyz, centres)
        idx = ball_query(centre_xyz, xyz, self.radius, NSAMPLE)
        dp = (gather_points(xyz, idx) - centre_xyz.unsqueeze(2)) / self.radius
        pooled = self.mlp(torch.cat([dp, gather_points(feats, idx)], -1)).amax(dim=2)
        return centre_xyz, self.act(pooled + self.skip(gather_points(feats, centres)))


class PointNeXtClassifier(nn.Module):
    """(B, N, 3) points -> (B, K) logits."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = nn.Linear(3, WIDTH)
        widths = [WIDTH * 2 ** s for s in range(STAGES + 1)]
        self.stages = nn.ModuleList(ResidualAbstraction(a, b, RADIUS * RADIUS_SCALING ** s)
                                    for s, (a, b) in enumerate(zip(widths[:-1], widths[1:])))
        self.global_mlp = shared_mlp((widths[-1] + 3, widths[-1], widths[-1]))
        self.classifier = classifier_head(widths[-1], (512, 256), num_classes)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        check_clouds(points)
        xyz, feats = points, self.stem(points)
        for stage in self.stages:
            xyz, feats = stage(xyz, feats)
        return self.classifier(self.global_mlp(torch.cat([xyz, feats], -1)).amax(dim=1))
