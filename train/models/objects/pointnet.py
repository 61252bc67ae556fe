"""The lightweight PointNet of the dataset distillation paper (DD3D, Appendix E), both tasks.

Three shared perceptrons 3 -> 64 -> 128 -> 1024, each followed by a normalisation and ReLU: instance
normalisation (per cloud and channel over the points, no affine parameters) for classification,
batch normalisation for part segmentation; no input or feature transform network (T-net); a max
pool over the points gives the global feature (PointNet, Qi et al. 2017a, Sec. 4.2).

- Classification: one linear map 1024 -> K on the global feature (decision 67: Appendix E names
  no classifier widths; one linear layer is the classifier of the networks dataset condensation
  matches gradients of).
- Part segmentation: the released DD3D code's ``PointNetSeg`` (``networks.py``, decision 92): the
  global feature with the object's one-hot category appended (as PointNet's Fig. 2), beside every
  point's features of the first two layers (64, 128), one linear map to the P part logits.
"""
from __future__ import annotations

import torch
from torch import nn

from train.models.objects.layers import LastAxisBatchNorm
from train.models.objects.neighbourhood import check_category, check_clouds

WIDTHS = (64, 128, 1024)


class PointInstanceNorm(nn.InstanceNorm1d):
    """Instance normalisation of a (B, N, C) tensor: every cloud's channel over its N points."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class PointNetTrunk(nn.Module):
    """The three shared layers; ``forward`` returns every layer's (B, N, C_l) point features."""

    def __init__(self, norm: str):
        super().__init__()
        if norm not in ("instance", "batch"):
            raise ValueError(f"PointNet norm must be 'instance' or 'batch', got {norm!r}")
        layers = []
        for a, b in zip((3, *WIDTHS[:-1]), WIDTHS):
            n = PointInstanceNorm(b) if norm == "instance" else LastAxisBatchNorm(b)
            layers.append(nn.Sequential(nn.Linear(a, b, bias=False), n, nn.ReLU()))
        self.layers = nn.ModuleList(layers)

    def forward(self, points: torch.Tensor) -> list[torch.Tensor]:
        check_clouds(points)
        feats, x = [], points
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class PointNetClassifier(nn.Module):
    """(B, N, 3) points -> (B, K) logits: instance-normalised trunk, max pool, one linear map."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.trunk = PointNetTrunk("instance")
        self.classifier = nn.Linear(WIDTHS[-1], num_classes)

    def embed(self, points: torch.Tensor) -> torch.Tensor:
        """The (B, 1024) global feature (max pool over the points)."""
        return self.trunk(points)[-1].amax(dim=1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(points))


class PointNetPartSegmenter(nn.Module):
    """(B, N, 3) points and (B, K) one-hot categories -> (B, N, P) part logits."""

    def __init__(self, num_categories: int, num_parts: int):
        super().__init__()
        self.num_categories = num_categories
        self.trunk = PointNetTrunk("batch")
        self.classifier = nn.Linear(WIDTHS[-1] + num_categories + WIDTHS[0] + WIDTHS[1], num_parts)

    def forward(self, points: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        check_category(category, points, self.num_categories)
        feats = self.trunk(points)
        glob = torch.cat([feats[-1].amax(dim=1), category.to(points.dtype)], dim=-1)
        x = torch.cat([glob.unsqueeze(1).expand(-1, points.shape[1], -1), *feats[:2]], dim=-1)
        return self.classifier(x)

