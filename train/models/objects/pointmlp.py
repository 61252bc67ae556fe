"""PointMLP (Ma et al. 2022, "Rethinking network design and local geometry in point cloud"), classification.

Stage s (Sec. 3.2-3.3, Eq. 3-4): ``N / 2`` anchors by farthest-point sampling, the k = 24 nearest
neighbours of each in coordinates; the geometric affine module normalises the neighbours' features
``{f_j}`` by the anchor's ``f_i`` and one standard deviation over the whole cloud,
``alpha * (f_j - f_i) / (sigma + 1e-5) + beta`` (``alpha``, ``beta`` learnt per channel), and
concatenates ``f_i``; then the pre-extraction block Phi_pre (a transfer perceptron 2C -> C_out and
residual blocks), a max over the neighbours, and the post-extraction block Phi_pos (residual
blocks). A residual block is ``ReLU(x + BN(W2 ReLU(BN(W1 x))))``.

The paper's PointMLP classification configuration (Sec. 4.1 and its code's ``pointMLP``): embedding
3 -> 64, four stages each doubling the width (128, 256, 512, 1024), two pre- and two
post-extraction residual blocks per stage with expansion 1, k = 24, the neighbours' features
without their coordinates; a max pool and the classifier 512, 256 (dropout 0.5) -> K. A stage of
fewer than k points groups all of them. Its parameter count is 13.2M, the figure PointNeXt's Table 2
gives for PointMLP; PointMLP's own Table 1 says 12.6M (docs/object-backbones.md).
"""
from __future__ import annotations

import torch
from torch import nn

from train.models.objects.layers import classifier_head, linear_bn_act
from train.models.objects.neighbourhood import check_clouds, farthest_point_sample, gather_points, knn

EMBEDDING = 64
STAGES = 4
BLOCKS = 2
K_NEIGHBOURS = 24


class ResidualPerceptron(nn.Module):
    """``ReLU(x + BN(W2 ReLU(BN(W1 x))))`` on the last axis."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(linear_bn_act(width, width, nn.ReLU()), linear_bn_act(width, width, None))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.net(x))


class PointMLPStage(nn.Module):
    """Sampling, geometric affine grouping, Phi_pre, max over the neighbours, Phi_pos."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(c_in))
        self.beta = nn.Parameter(torch.zeros(c_in))
        self.pre = nn.Sequential(linear_bn_act(2 * c_in, c_out, nn.ReLU()), *(ResidualPerceptron(c_out) for _ in range(BLOCKS)))
        self.pos = nn.Sequential(*(ResidualPerceptron(c_out) for _ in range(BLOCKS)))

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        anchors = farthest_point_sample(xyz, max(1, xyz.shape[1] // 2))
        anchor_xyz, anchor_feats = gather_points(xyz, anchors), gather_points(feats, anchors)
        idx = knn(anchor_xyz, xyz, min(K_NEIGHBOURS, xyz.shape[1]))
        offsets = gather_points(feats, idx) - anchor_feats.unsqueeze(2)
        sigma = offsets.reshape(offsets.shape[0], -1).std(dim=-1).view(-1, 1, 1, 1)
        grouped = torch.cat([self.alpha * offsets / (sigma + 1e-5) + self.beta,
                             anchor_feats.unsqueeze(2).expand_as(offsets)], -1)
        return anchor_xyz, self.pos(self.pre(grouped).amax(dim=2))


class PointMLPClassifier(nn.Module):
    """(B, N, 3) points -> (B, K) logits."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.embedding = linear_bn_act(3, EMBEDDING, nn.ReLU())
        widths = [EMBEDDING * 2 ** s for s in range(STAGES + 1)]
        self.stages = nn.ModuleList(PointMLPStage(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.classifier = classifier_head(widths[-1], (512, 256), num_classes)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        check_clouds(points)
        xyz, feats = points, self.embedding(points)
        for stage in self.stages:
            xyz, feats = stage(xyz, feats)
        return self.classifier(feats.amax(dim=1))
