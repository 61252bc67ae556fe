"""DD3D's point-wise generator in PyTorch, modulated per synthetic cloud: paper Eq. (7)-(9), its forward pass.

Twin of ``reference.generator_forward`` (the layers, the weights' layout and the frequencies: that
module and decision 76): all B clouds in one batched pass, each sine layer one ``(B, N, H)``
product whose modulation broadcasts over the points, on any device and differentiable with
respect to the noise, the codes and every weight.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from reference.canonical import check_w0
from reference.generator import check_generator_shapes


def generator_forward(
    noise: torch.Tensor, codes: torch.Tensor, sine_weights: list[torch.Tensor], sine_biases: list[torch.Tensor],
    modulator_weights: list[torch.Tensor], modulator_biases: list[torch.Tensor], out_weight: torch.Tensor, w0: float,
) -> torch.Tensor:
    """The (B, N, 3) points generated from (B, N) (or (B, N, D)) noise for clouds of (B, H_1) codes."""
    check_generator_shapes(tuple(noise.shape), tuple(codes.shape), [tuple(a.shape) for a in sine_weights],
                           [tuple(a.shape) for a in sine_biases], [tuple(a.shape) for a in modulator_weights],
                           [tuple(a.shape) for a in modulator_biases], tuple(out_weight.shape))
    omega = check_w0(w0)
    h, m = (noise.unsqueeze(-1) if noise.dim() == 2 else noise), F.relu(codes)
    for i, (sw, sb) in enumerate(zip(sine_weights, sine_biases)):
        if i > 0:
            m = F.relu(F.linear(m, modulator_weights[i - 1], modulator_biases[i - 1]))
        h = torch.sin((omega if i == 0 else 1.0) * F.linear(h, sw, sb)) * m.unsqueeze(1)
    return torch.tanh(F.linear(h, out_weight))
