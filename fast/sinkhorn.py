"""Unbalanced entropic OT between persistence diagrams in torch (paper Sec. 5, Table 11; decision 31).

Torch twin of ``reference.sinkhorn``: the same diagonal-augmented problem, solved by POT's
log-stabilised unbalanced Sinkhorn on its torch backend (so it runs on the tensors' device), with
the plan taken as a constant. The loss is then the problem's value at that plan, whose autograd
gradient with respect to the cost matrix is the plan itself: the envelope-theorem gradient of the
optimal value, without back-propagating through POT's iterations (memory stays that of one plan).
The teacher diagram is a constant.
"""
from __future__ import annotations

import torch

from reference.sinkhorn import DEFAULT_SINKHORN_EPS, SINKHORN_REG_M, check_eps, solve_plan


def _dist_diag(pairs: torch.Tensor) -> torch.Tensor:
    return (pairs[:, 1] - pairs[:, 0]) ** 2 / 2.0


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Generalised KL ``sum p log(p / q) - p + q`` with ``0 log 0 = 0``."""
    pos = p > 0
    return (p[pos] * torch.log(p[pos] / q[pos])).sum() - p.sum() + q.sum()


def sinkhorn_distance(
    teacher_pairs: torch.Tensor, student_pairs: torch.Tensor, eps: float = DEFAULT_SINKHORN_EPS
) -> torch.Tensor:
    """Unbalanced entropic OT value (scalar tensor) between teacher (M, 2) and student (K, 2) pairs.

    Differentiable w.r.t. ``student_pairs`` (envelope gradient); empty diagrams may be (0, 2).
    """
    for name, t in (("teacher_pairs", teacher_pairs), ("student_pairs", student_pairs)):
        if t.ndim != 2 or t.shape[1] != 2:
            raise ValueError(f"{name} must be a (K, 2) tensor of (birth, death) pairs, got shape {tuple(t.shape)}")
    eps = check_eps(eps)
    P = teacher_pairs.detach().to(student_pairs.dtype)
    Q = student_pairs
    M, K = P.shape[0], Q.shape[0]
    if M == 0 and K == 0:
        return Q.sum() * 0.0
    cost = (P[:, 0, None] - Q[None, :, 0]) ** 2 + (P[:, 1, None] - Q[None, :, 1]) ** 2
    a, b = Q.new_ones(M), Q.new_ones(K)
    if M > 0:  # the student's diagonal column
        cost = torch.cat([cost, _dist_diag(P)[:, None]], dim=1)
        b = torch.cat([b, b.new_full((1,), float(M))])
    if K > 0:  # the teacher's diagonal row
        last = _dist_diag(Q)
        if M > 0:
            last = torch.cat([last, last.new_zeros(1)])
        cost = torch.cat([cost, last[None, :]], dim=0)
        a = torch.cat([a, a.new_full((1,), float(K))])
    a, b = a / (M + K), b / (M + K)
    with torch.no_grad():
        plan = solve_plan(a, b, cost.detach(), eps)
    return ((plan * cost).sum() + eps * _kl(plan, a[:, None] * b[None, :])
            + SINKHORN_REG_M * (_kl(plan.sum(1), a) + _kl(plan.sum(0), b)))
