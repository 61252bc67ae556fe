"""PCT, the Point Cloud Transformer with neighbour embedding (Guo et al. 2021), classification.

- Input embedding (Sec. 3.3-3.4): two LBRs (linear, batch norm, ReLU) 3 -> 64 -> 64, then two
  sample-and-group layers (Fig. 4: ``N / 2`` centres by farthest-point sampling, k = 32 nearest
  neighbours in coordinates, ``[f_j - f_i, f_i]``, two LBRs, a max over the neighbours) of 128 and
  256 channels, and two LBRs 256 -> 256.
- Four stacked offset-attention layers of 256 channels (Sec. 3.3, Eq. 9-10): query and key share
  one 256 -> 64 map (the paper's 2.88M parameters hold only with the map shared, decision 67),
  value 256 -> 256 (without the code's bias, which cancels in ``F_in - F_sa``'s batch norm); the
  attention softmax over the keys, then each key's column normalised to sum
  1 over the queries (the l1 step); the offset ``F_in - F_sa`` through an LBR is added to the input.
- The four attention outputs and the neighbour embedding's output concatenated (1,280) into an
  LBR of 1,024 (LeakyReLU 0.2); a max pool; the classifier 512, 256 (batch norm, LeakyReLU 0.2,
  dropout 0.5) -> K.

Sample counts are strides of the input point count (decision 67): 1,024 points give the paper's
512 and 256 centres.
"""
from __future__ import annotations

import torch
from torch import nn

from train.models.objects.layers import classifier_head, leaky_relu, linear_bn_act, shared_mlp
from train.models.objects.neighbourhood import check_clouds, edge_features, farthest_point_sample, gather_points, knn

K_NEIGHBOURS = 32
GROUP_WIDTHS = (128, 256)
WIDTH = 256
ATTENTION_LAYERS = 4
QUERY_WIDTH = 64
EMBEDDING = 1024


class SampleAndGroup(nn.Module):
    """Half the points as centres, each with its k-nearest-neighbour edge features through two LBRs."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.mlp = shared_mlp((2 * c_in, c_out, c_out))

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centres = farthest_point_sample(xyz, max(1, xyz.shape[1] // 2))
        centre_xyz = gather_points(xyz, centres)
        idx = knn(centre_xyz, xyz, min(K_NEIGHBOURS, xyz.shape[1]))
        return centre_xyz, self.mlp(edge_features(feats, gather_points(feats, centres), idx)).amax(dim=2)


class OffsetAttention(nn.Module):
    """One offset-attention layer on (B, N, C) features."""

    def __init__(self, width: int):
        super().__init__()
        self.query_key = nn.Linear(width, QUERY_WIDTH, bias=False)
        self.value = nn.Linear(width, width, bias=False)  # a bias would add the same vector to every x_sa
        self.offset = linear_bn_act(width, width, nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.query_key(x)
        attention = torch.softmax(q @ q.transpose(1, 2), dim=-1)  # (B, N queries, N keys)
        attention = attention / (1e-9 + attention.sum(dim=1, keepdim=True))
        x_sa = attention.transpose(1, 2) @ self.value(x)
        return x + self.offset(x - x_sa)


class PCTClassifier(nn.Module):
    """(B, N, 3) points -> (B, K) logits."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.embedding = shared_mlp((3, 64, 64))
        self.groups = nn.ModuleList(SampleAndGroup(a, b) for a, b in zip((64, *GROUP_WIDTHS[:-1]), GROUP_WIDTHS))
        self.pre_attention = shared_mlp((WIDTH, WIDTH, WIDTH))
        self.attention = nn.ModuleList(OffsetAttention(WIDTH) for _ in range(ATTENTION_LAYERS))
        self.fuse = linear_bn_act(ATTENTION_LAYERS * WIDTH + GROUP_WIDTHS[-1], EMBEDDING, leaky_relu())
        self.classifier = classifier_head(EMBEDDING, (512, 256), num_classes, act=leaky_relu)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        check_clouds(points)
        xyz, feats = points, self.embedding(points)
        for group in self.groups:
            xyz, feats = group(xyz, feats)
        x, outputs = self.pre_attention(feats), []
        for layer in self.attention:
            x = layer(x)
            outputs.append(x)
        return self.classifier(self.fuse(torch.cat([*outputs, feats], -1)).amax(dim=1))
