"""Layers shared by the object backbones, channels last.

A shared MLP (PointNet, Qi et al. 2017a, Sec. 4.2: the same perceptron applied to every point) is
a ``nn.Linear`` over the last axis of a (B, N, C) or (B, M, k, C) tensor, the same map and the same
parameters as the papers' 1x1 ``Conv1d`` / ``Conv2d`` on channels-first tensors. A linear map
followed by batch normalisation has no bias (the normalisation's shift replaces it, and a bias
there would receive no gradient); the papers' heads differ in this only by a few hundred
parameters (decision 67).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class LastAxisBatchNorm(nn.BatchNorm1d):
    """Batch normalisation of the last axis of a (..., C) tensor over all the other axes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


def linear_bn_act(c_in: int, c_out: int, act: nn.Module | None) -> nn.Sequential:
    """Shared perceptron ``c_in -> c_out`` without bias, batch norm, then ``act`` (None: none)."""
    layers: list[nn.Module] = [nn.Linear(c_in, c_out, bias=False), LastAxisBatchNorm(c_out)]
    return nn.Sequential(*layers, act) if act is not None else nn.Sequential(*layers)


def shared_mlp(channels: Sequence[int], act: Callable[[], nn.Module] = nn.ReLU) -> nn.Sequential:
    """Shared perceptrons ``channels[0] -> channels[1] -> ...``, each with batch norm and ``act``."""
    return nn.Sequential(*(linear_bn_act(a, b, act()) for a, b in zip(channels[:-1], channels[1:])))


def classifier_head(c_in: int, hidden: Sequence[int], num_classes: int, act: Callable[[], nn.Module] = nn.ReLU,
                    dropout: float = 0.5) -> nn.Sequential:
    """The papers' classifier: (linear, batch norm, ``act``, dropout) per hidden width, then a
    linear map (with bias) to ``num_classes`` logits; (B, c_in) -> (B, num_classes)."""
    layers: list[nn.Module] = []
    for a, b in zip([c_in, *hidden[:-1]], hidden):
        layers += [*linear_bn_act(a, b, act()), nn.Dropout(dropout)]
    layers.append(nn.Linear(hidden[-1] if hidden else c_in, num_classes))
    return nn.Sequential(*layers)


def leaky_relu() -> nn.Module:
    """DGCNN's and PCT's activation, LeakyReLU with slope 0.2."""
    return nn.LeakyReLU(0.2)
