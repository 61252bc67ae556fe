"""The rotator's canonical frame in PyTorch, DD3D paper Eq. (4) (PCA) and the fixed sign step.

Twins of ``reference.pca_canonical`` and ``reference.sign_canonical`` (the rules, the eigenvector
sign convention and the ill-posed clouds: that module and decision 74), batched over the (B, N, D)
clouds, on any device, differentiable (the flips are constants; the principal axes are
differentiated through ``torch.linalg.eigh``, whose gradient is finite only for distinct variances,
which ``pca_canonical`` already asks for).

``pca_canonical`` runs in float64 whatever the input precision (the (B, D, D) covariances are
small) and returns the input's dtype: in float32 the eigenvectors would carry errors of
``eps_32 / (relative gap)``, which the float64 covariance does not. Its checks (finite coordinates,
then the variances) are two host reads.
"""
from __future__ import annotations

import torch

from reference.canonical import check_w0, degenerate_clouds, refuse_degenerate


def _check_clouds(points: torch.Tensor) -> None:
    if points.ndim != 3 or points.shape[1] < 1 or points.shape[2] < 1:
        raise ValueError(
            f"points must be a (B, N, D) tensor of clouds with N >= 1 and D >= 1, got shape {tuple(points.shape)}")


def pca_canonical(points: torch.Tensor) -> torch.Tensor:
    """Return each (B, N, D) cloud centred, on its principal axes in order of decreasing variance."""
    _check_clouds(points)
    if not bool(torch.isfinite(points).all()):  # before eigh, which fails on NaN
        raise ValueError("points contain NaN/Inf; coordinates must be finite")
    x = points.to(torch.float64)
    x = x - x.mean(dim=1, keepdim=True)
    lam, u = torch.linalg.eigh(x.transpose(1, 2) @ x / points.shape[1])
    lam, u = lam.flip(-1), u.flip(-1)
    refuse_degenerate(degenerate_clouds(lam.detach().cpu().numpy()))  # the reference's rule, on the host
    largest = u.abs().argmax(dim=1, keepdim=True)  # (B, 1, D): the row of each column's largest entry
    sign = torch.where(torch.gather(u, 1, largest) < 0, -1.0, 1.0).to(u.dtype)
    return (x @ (u * sign)).to(points.dtype)


def sign_canonical(points: torch.Tensor, w0: float = 1.0) -> torch.Tensor:
    """Return each (B, N, D) cloud with axis ``j`` negated where ``mean_n sin(w0 x_nj) < 0``."""
    _check_clouds(points)
    m = torch.sin(check_w0(w0) * points.detach()).mean(dim=1, keepdim=True)
    return points * torch.where(m < 0, -1.0, 1.0).to(points.dtype)
