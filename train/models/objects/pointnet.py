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
import torch.nn.functional as F
from torch import nn

from train.models.objects.neighbourhood import check_category, check_clouds

WIDTHS = (64, 128, 1024)


class PointConv(nn.Linear):
    """A shared perceptron on channels-first (B, C, N) features: the papers' 1x1 convolution, its
    weight kept as ``nn.Linear``'s (out, in) matrix (the same parameters as the channels-last map)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight.unsqueeze(-1), self.bias)


class PointNetTrunk(nn.Module):
    """The three shared layers, channels first (decision 95: the normalisations and the max pool
    then read contiguous rows, with no transposes around them); ``forward`` takes (B, N, 3) points
    and returns every layer's (B, C_l, N) point features."""

    def __init__(self, norm: str):
        super().__init__()
        if norm not in ("instance", "batch"):
            raise ValueError(f"PointNet norm must be 'instance' or 'batch', got {norm!r}")
        layers = []
        for a, b in zip((3, *WIDTHS[:-1]), WIDTHS):
            n = nn.InstanceNorm1d(b) if norm == "instance" else nn.BatchNorm1d(b)
            layers.append(nn.Sequential(PointConv(a, b, bias=False), n, nn.ReLU()))
        self.layers = nn.ModuleList(layers)

    def forward(self, points: torch.Tensor) -> list[torch.Tensor]:
        check_clouds(points)
        feats, x = [], points.transpose(1, 2)
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


def _moments(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, C) mean of (B, C, N) features over the points and 1 / sqrt(variance + eps), in two
    passes (``torch.var_mean``'s one-pass reduction over the last axis is ten times slower here)."""
    mean = x.mean(dim=2)
    var = torch.linalg.vector_norm(x - mean.unsqueeze(2), dim=2).square() / x.shape[2]
    return mean, (var + eps).rsqrt()


def _normalised_max(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """relu((max x - mean) / sqrt(var + eps)) over the points of (B, C, N) features, (B, C), and the
    index of each maximum: the forward of both fused last layers."""
    mean, rstd = _moments(x, eps)
    top, index = x.max(dim=2)
    return ((top - mean) * rstd).relu(), index


class _InstanceReluMax(torch.autograd.Function):
    """:func:`instance_relu_max`; its backward is made of differentiable operations, so that the
    gradient matching's double backward goes through it."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, eps: float) -> torch.Tensor:
        out, index = _normalised_max(x, eps)
        ctx.save_for_backward(x, index)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, index = ctx.saved_tensors
        mean, rstd = _moments(x, ctx.eps)  # again, so that a double backward sees them depend on x
        top = (x.gather(2, index.unsqueeze(2)).squeeze(2) - mean) * rstd  # the normalised maximum
        g = grad * (top > 0)
        # d top / d x_n = rstd (1[n = index] - 1/N - top (x_n - mean) rstd / N): a x_n + b, and the maximum's own term
        a = -g * rstd * rstd * top / x.shape[2]
        b = -g * rstd / x.shape[2] - a * mean
        spread = torch.addcmul(b.unsqueeze(2), a.unsqueeze(2), x)
        return spread.scatter_add(2, index.unsqueeze(2), (g * rstd).unsqueeze(2)), None


def instance_relu_max(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The (B, C) max pool over the points of ReLU(instance norm(x)) of (B, C, N) features, without
    making the (B, C, N) normalised features: per cloud and channel the normalisation and ReLU are
    increasing, so the maximum is that of the point where x is largest (decision 95). Its gradient
    goes to that point (and to every point through the mean and variance)."""
    return _InstanceReluMax.apply(x, eps)


class _LinearInstanceReluMax(torch.autograd.Function):
    """:func:`linear_instance_relu_max`; its backward, like :class:`_InstanceReluMax`'s, is made of
    differentiable operations (the double backward of gradient matching's synthetic side)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, h: torch.Tensor, weight: torch.Tensor,
                eps: float) -> torch.Tensor:
        out, index = _normalised_max(F.conv1d(h, weight.unsqueeze(-1)), eps)
        ctx.save_for_backward(h, weight, index)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        h, weight, index = ctx.saved_tensors
        (_, c_in, n), wt = h.shape, weight.t()
        centred = h - h.mean(dim=2, keepdim=True)
        # S_b w_c for every cloud b and channel c, S_b = the centred second moments (C_in, C_in); S is symmetric
        s_w = torch.matmul(centred @ centred.transpose(1, 2), wt)  # (B, C_in, C_out)
        rstd = ((s_w * wt).sum(dim=1) / n + ctx.eps).rsqrt()  # var_c = w_c S w_c / N
        at_max = centred.gather(2, index.unsqueeze(1).expand(-1, c_in, -1))  # the centred h of each maximum
        top = (at_max * wt).sum(dim=1) * rstd  # the normalised maximum
        g = grad * (top > 0)
        # d loss / d x_n = alpha (x_n - mean) + beta + gamma 1[n = index] (_InstanceReluMax.backward's a, b)
        gamma = g * rstd
        alpha = -gamma * rstd * top / n
        beta = -gamma / n
        # x_n = W h_n: the weight's gradient sum_n (d loss / d x_n) h_n^T has alpha W S, N beta mean(h)^T and
        # gamma h_index; the two mean terms cancel (N beta = -gamma), leaving S's and the maxima's
        grad_weight = torch.addcmul(s_w * alpha.unsqueeze(1), at_max, gamma.unsqueeze(1)).sum(dim=0).t()
        # h's gradient W^T (d loss / d x_n): W^T diag(alpha) W (h_n - mean h), plus W^T beta, plus each
        # maximum's gamma w_c
        spread = torch.baddbmm((beta @ weight).unsqueeze(2), torch.matmul(wt * alpha.unsqueeze(1), weight), centred)
        grad_h = spread.scatter_add(2, index.unsqueeze(1).expand(-1, c_in, -1), wt * gamma.unsqueeze(1))
        return grad_h, grad_weight, None


def linear_instance_relu_max(h: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """:func:`instance_relu_max` of the shared perceptron ``weight`` (C_out, C_in) on (B, C_in, N)
    features ``h``, its gradient taken through each cloud's (C_in, C_in) second moments of ``h``
    instead of the (C_out, N) features (:func:`second_moments_pay` says where that is cheaper). The
    (B, C_out, N) features are made once, for the maxima and the moments, and not kept."""
    return _LinearInstanceReluMax.apply(h, weight, eps)


def second_moments_pay(points: int, c_in: int, c_out: int) -> bool:
    """Whether :func:`linear_instance_relu_max`'s backward takes at most half the multiplications of
    the perceptron's own, per cloud 2 C_out C_in^2 + 2 C_in^2 N against 2 C_out C_in N: N (C_out -
    2 C_in) >= 2 C_out C_in, N >= 342 points for PointNet's 128 -> 1,024 layer. Half, not less:
    its passes over (C_in, C_out) tensors cost what the multiplications save at 256 points
    (decision 103's measurements)."""
    return points * (c_out - 2 * c_in) >= 2 * c_out * c_in


def max_pool(features: torch.Tensor) -> torch.Tensor:
    """The (B, C) maximum of (B, C, N) features over the points; its gradient goes to one point of
    each maximum (``amax`` shares it between tied points: the same weight gradients, decision 95)."""
    return features.max(dim=2).values


class PointNetClassifier(nn.Module):
    """(B, N, 3) points -> (B, K) logits: instance-normalised trunk, max pool, one linear map."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.trunk = PointNetTrunk("instance")
        self.classifier = nn.Linear(WIDTHS[-1], num_classes)

    def embed(self, points: torch.Tensor) -> torch.Tensor:
        """The (B, 1024) global feature (max pool over the points): the trunk's last normalisation,
        ReLU and pool in one (:func:`instance_relu_max`), with the last perceptron where its
        gradient costs less through the second moments (:func:`second_moments_pay`)."""
        check_clouds(points)
        *first, (conv, norm, _) = self.trunk.layers
        x = points.transpose(1, 2)
        for layer in first:
            x = layer(x)
        if second_moments_pay(x.shape[2], conv.in_features, conv.out_features):
            return linear_instance_relu_max(x, conv.weight, norm.eps)
        return instance_relu_max(conv(x), norm.eps)

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
        glob = torch.cat([max_pool(feats[-1]), category.to(points.dtype)], dim=-1)
        x = torch.cat([glob.unsqueeze(2).expand(-1, -1, points.shape[1]), *feats[:2]], dim=1)
        return self.classifier(x.transpose(1, 2))

