"""Persistence-weighted Chamfer distance in torch, paper Eq. (2)-(3) and Algorithm 2.

Torch twin of ``reference.pwcd.pwcd`` with the same decisions 6-10: pair cost ``||p - q||^2``
(no 1/2), ``dist_diag = (d - b)^2 / 2``, teacher weights ``w = log(1 + max(d - b, 0))`` with
``w_bar = sum(w) + eps_w``, recall weighted over teacher points, precision a plain mean over
student points, the paper's empty-diagram conventions, and the match winning when
``match <= diagonal``. The loss is differentiable in ``student_pairs`` by autograd, which gives
exactly Algorithm 4: ``torch.amin`` spreads the gradient uniformly over exactly tied nearest
neighbours (the uniform sharing of decision 10), and ``torch.where`` sends it either to the match
or to the diagonal term. The teacher diagram is a constant.
"""
from __future__ import annotations

import torch


def _dist_diag(pairs: torch.Tensor) -> torch.Tensor:
    return (pairs[:, 1] - pairs[:, 0]) ** 2 / 2.0


def pwcd(teacher_pairs: torch.Tensor, student_pairs: torch.Tensor, eps_w: float = 1e-8) -> torch.Tensor:
    """PWCD (scalar tensor) between teacher (M, 2) and student (K, 2) (birth, death) pairs.

    ``teacher_pairs`` is detached; the result is differentiable w.r.t. ``student_pairs``.
    Empty diagrams may be given as (0, 2) tensors.
    """
    for name, t in (("teacher_pairs", teacher_pairs), ("student_pairs", student_pairs)):
        if t.ndim != 2 or t.shape[1] != 2:
            raise ValueError(f"{name} must be a (K, 2) tensor of (birth, death) pairs, got shape {tuple(t.shape)}")
    if not eps_w > 0:
        raise ValueError(f"eps_w must be > 0 (paper: epsilon > 0), got {eps_w}")
    P = teacher_pairs.detach().to(student_pairs.dtype)
    Q = student_pairs
    M, K = P.shape[0], Q.shape[0]
    loss = Q.new_zeros(())
    if M == 0 and K == 0:
        return loss
    cost = None
    if M > 0 and K > 0:
        # (M, K) squared distances as two 2-D terms: the same sum (db^2 + dd^2) as the reference,
        # without the (M, K, 2) temporary and its reduction over a size-2 axis (measured here at
        # M = K = 1000: forward + backward 11 ms instead of 35 ms).
        cost = (P[:, 0, None] - Q[None, :, 0]) ** 2 + (P[:, 1, None] - Q[None, :, 1]) ** 2
    if M > 0:
        w = torch.log1p(torch.clamp(P[:, 1] - P[:, 0], min=0.0))
        w_bar = w.sum() + eps_w
        diag_T = _dist_diag(P)
        term = diag_T if cost is None else torch.where((nn := torch.amin(cost, dim=1)) <= diag_T, nn, diag_T)
        loss = loss + (w * term).sum() / w_bar
    if K > 0:
        diag_S = _dist_diag(Q)
        term = diag_S if cost is None else torch.where((nn := torch.amin(cost, dim=0)) <= diag_S, nn, diag_S)
        loss = loss + term.mean()
    return loss
