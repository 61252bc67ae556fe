"""TopKD's persistence-image distance between diagrams in torch (decision 32).

Torch twin of ``reference.persistence_image``: the same weight ``10 (tanh(y) + ln(100 x + 1))``,
Gaussian pixel integrals (``torch.erf``), the square domain of ``reference.persistence_image.image_domain``
(a constant)
and mean squared or absolute pixel difference; the gradient w.r.t. the student pairs is autograd's.
"""
from __future__ import annotations

import math

import torch

from reference.persistence_image import DEFAULT_PI_NORM, PI_RESOLUTION, PI_SIGMA, check_norm, image_domain


def _axis(centres: torch.Tensor, lo: float, side: float) -> torch.Tensor:
    """Gaussian mass (K, R) of each centre in each pixel along one axis."""
    edges = lo + side * torch.linspace(0.0, 1.0, PI_RESOLUTION + 1, dtype=centres.dtype, device=centres.device)
    z = (edges[None, :] - centres[:, None]) / (PI_SIGMA * side * math.sqrt(2.0))
    return 0.5 * torch.diff(torch.erf(z), dim=1)


def persistence_image(pairs: torch.Tensor, b_lo: float, side: float) -> torch.Tensor:
    """(R, R) persistence image (rows: persistence, columns: birth) of (K, 2) pairs on the domain."""
    x, y = pairs[:, 0], pairs[:, 1] - pairs[:, 0]
    w = 10.0 * (torch.tanh(y) + torch.log1p(100.0 * x))
    return torch.einsum("k,kr,kc->rc", w, _axis(y, 0.0, side), _axis(x, b_lo, side))


def persistence_image_distance(
    teacher_pairs: torch.Tensor, student_pairs: torch.Tensor, norm: str = DEFAULT_PI_NORM
) -> torch.Tensor:
    """Mean squared (``l2``) or absolute (``l1``) pixel difference of the two persistence images (scalar)."""
    for name, t in (("teacher_pairs", teacher_pairs), ("student_pairs", student_pairs)):
        if t.ndim != 2 or t.shape[1] != 2:
            raise ValueError(f"{name} must be a (K, 2) tensor of (birth, death) pairs, got shape {tuple(t.shape)}")
        if bool((t[:, 0] < 0).any()):
            raise ValueError(f"{name} has negative births; the persistence-image weight ln(100 b + 1) needs "
                             "births >= 0 (Rips diagrams have them)")
    check_norm(norm)
    P = teacher_pairs.detach().to(student_pairs.dtype)
    Q = student_pairs
    if P.shape[0] == 0 and Q.shape[0] == 0:
        return Q.sum() * 0.0
    b_lo, side = image_domain(P.double().cpu().numpy(), Q.detach().double().cpu().numpy())
    diff = persistence_image(Q, b_lo, side) - persistence_image(P, b_lo, side)
    return (diff * diff).mean() if norm == "l2" else diff.abs().mean()
