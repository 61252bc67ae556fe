"""DGCNN classification network (Wang et al. 2019, "Dynamic Graph CNN", Sec. 3.1 and Fig. 3).

EdgeConv (Eq. 7-8, the asymmetric edge function of Eq. 8 in its Sec. 3.1 form): for every point
``x_i`` and each of its ``k`` nearest neighbours ``x_j`` in the *current* feature space (the graph
is recomputed after every layer, the point itself among its neighbours), the shared perceptron
``h([x_j - x_i, x_i])`` with batch norm and LeakyReLU(0.2), then a max over the neighbours.

The paper's ModelNet40 configuration: k = 20; four EdgeConv layers 64, 64, 128, 256 on the
coordinates and then on the previous layer's output; their outputs concatenated (512) into a
shared perceptron of 1,024 (batch norm, LeakyReLU); global max and average pooling concatenated
(2,048); the classifier 512, 256 (batch norm, LeakyReLU, dropout 0.5) -> K.
"""
from __future__ import annotations

import torch
from torch import nn

from train.models.objects.layers import classifier_head, leaky_relu, linear_bn_act
from train.models.objects.neighbourhood import check_clouds, edge_features, knn

K_NEIGHBOURS = 20
EDGE_WIDTHS = (64, 64, 128, 256)
EMBEDDING = 1024


class DGCNNClassifier(nn.Module):
    """(B, N, 3) points -> (B, K) logits; needs N >= k = 20 points per cloud."""

    def __init__(self, num_classes: int):
        super().__init__()
        widths = (3, *EDGE_WIDTHS)
        self.edge_convs = nn.ModuleList(linear_bn_act(2 * a, b, leaky_relu()) for a, b in zip(widths[:-1], widths[1:]))
        self.embedding = linear_bn_act(sum(EDGE_WIDTHS), EMBEDDING, leaky_relu())
        self.classifier = classifier_head(2 * EMBEDDING, (512, 256), num_classes, act=leaky_relu)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        check_clouds(points)
        x, outputs = points, []
        for conv in self.edge_convs:
            x = conv(edge_features(x, x, knn(x, x, K_NEIGHBOURS))).amax(dim=2)
            outputs.append(x)
        x = self.embedding(torch.cat(outputs, -1))
        return self.classifier(torch.cat([x.amax(dim=1), x.mean(dim=1)], -1))
