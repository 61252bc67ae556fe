"""Unbalanced entropic optimal transport between two persistence diagrams (paper Sec. 5, Table 11).

The alternative to PWCD that the paper's Table 11 ablates, as decision 31 defines it:

- each diagram gets one extra point, the diagonal, which absorbs the other diagram's unmatched
  points: the teacher's ``M`` points have mass 1 and its diagonal point mass ``K``, the student's
  ``K`` points mass 1 and its diagonal point mass ``M`` (a sink of zero mass is left out), all
  divided by ``M + K``;
- cost ``||p - q||^2`` between two points (as PWCD, decision 6), ``(d - b)^2 / 2`` between a point
  and the other side's diagonal (decision 7), 0 between the two diagonals;
- the plan solves POT's unbalanced entropic problem (``ot.unbalanced.sinkhorn_unbalanced``,
  log-stabilised, KL marginal penalties of weight ``reg_m``, entropic weight ``eps``), and the loss
  is that problem's optimal value (transport + entropy + marginal terms).

Gradient (envelope theorem / Danskin): at the optimum the derivative of the optimal value with
respect to the cost matrix is the plan itself, so ``dL/dq = sum_i P_iq d cost(p_i, q)/dq``; the
plan is not differentiated. The reference gets the plan from POT's numpy backend; ``fast.sinkhorn``
gets it from POT's torch backend with the same iterations.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from reference.pwcd import _as_pairs, _dist_diag

DEFAULT_SINKHORN_EPS = 0.1
"""Entropic weight eps (the best value of paper Table 11). The one definition: ``--sinkhorn-eps``
and ``fast.sinkhorn`` take their default from here."""
SINKHORN_REG_M = 1.0
"""Weight of the KL penalty on each marginal (decision 31)."""
SINKHORN_ITERS = 1000
SINKHORN_STOP = 1e-9
"""POT's iteration cap and stopping threshold (relative change of the scaling vectors)."""


def check_eps(eps: float, name: str = "eps") -> float:
    """``eps`` as a float; ValueError unless it is a finite number > 0."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"{name} (entropic weight of Sinkhorn OT) must be a finite number > 0, got {eps!r}")
    return float(eps)


def augmented_problem(P: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masses ``a`` (rows), ``b`` (columns) and the cost matrix of the diagonal-augmented problem.

    Rows: the M teacher points, then the teacher's diagonal if ``K > 0``; columns: the K student
    points, then the student's diagonal if ``M > 0``.
    """
    M, K = len(P), len(Q)
    cost = np.sum((P[:, None, :] - Q[None, :, :]) ** 2, axis=-1)
    a, b = np.ones(M), np.ones(K)
    if M > 0:
        cost = np.concatenate([cost, _dist_diag(P)[:, None]], axis=1)
        b = np.append(b, M)
    if K > 0:
        last_row = np.append(_dist_diag(Q), [0.0] if M > 0 else [])  # the diagonal-diagonal cost is 0
        cost = np.concatenate([cost, last_row[None, :]], axis=0)
        a = np.append(a, K)
    return a / (M + K), b / (M + K), cost


def solve_plan(a: Any, b: Any, cost: Any, eps: float) -> Any:
    """POT's log-stabilised unbalanced Sinkhorn plan (numpy or torch arrays, as given).

    A run that reaches ``SINKHORN_ITERS`` without meeting ``SINKHORN_STOP`` (small ``eps``, or
    float32) returns its last plan: the loss is then the value at that plan, which the twins
    share; POT's warning about it is silenced, as it would repeat every step.
    """
    import ot  # here, not at the top: importing POT imports torch, which the reference does not need

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Stabilized Unbalanced Sinkhorn did not converge")
        return ot.unbalanced.sinkhorn_unbalanced(
            a, b, cost, eps, SINKHORN_REG_M, method="sinkhorn_stabilized", numItermax=SINKHORN_ITERS,
            stopThr=SINKHORN_STOP,
        )


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """Generalised KL divergence ``sum p log(p / q) - p + q`` with ``0 log 0 = 0``."""
    pos = p > 0
    return float(np.sum(p[pos] * np.log(p[pos] / q[pos])) - p.sum() + q.sum())


def objective(plan: np.ndarray, a: np.ndarray, b: np.ndarray, cost: np.ndarray, eps: float) -> float:
    """Value of the problem at ``plan``: <P, C> + eps KL(P | a b^T) + reg_m (KL(P 1 | a) + KL(P^T 1 | b))."""
    return (float(np.sum(plan * cost)) + eps * _kl(plan, a[:, None] * b[None, :])
            + SINKHORN_REG_M * (_kl(plan.sum(1), a) + _kl(plan.sum(0), b)))


def sinkhorn_distance(
    teacher_pairs: np.ndarray, student_pairs: np.ndarray, eps: float = DEFAULT_SINKHORN_EPS
) -> tuple[float, np.ndarray]:
    """Unbalanced entropic OT between two diagrams with the diagonal as a sink, and its gradient.

    Args:
        teacher_pairs: (M, 2) teacher (birth, death) pairs (constants).
        student_pairs: (K, 2) student (birth, death) pairs.
        eps: entropic weight (> 0), ``--sinkhorn-eps``.

    Returns:
        ``(loss, grad)``: the optimal value of the problem of decision 31 and its (K, 2) gradient
        with respect to ``student_pairs`` (envelope theorem). Both diagrams empty: ``(0, zeros)``.
    """
    P = _as_pairs(teacher_pairs, "teacher_pairs")
    Q = _as_pairs(student_pairs, "student_pairs")
    eps = check_eps(eps)
    M, K = len(P), len(Q)
    grad = np.zeros((K, 2))
    if M == 0 and K == 0:
        return 0.0, grad
    a, b, cost = augmented_problem(P, Q)
    plan = solve_plan(a, b, cost, eps)
    loss = objective(plan, a, b, cost, eps)
    if K > 0:
        to_points = plan[:M, :K]  # teacher point i -> student point k, cost ||p_i - q_k||^2
        grad += 2.0 * (to_points.sum(0)[:, None] * Q - to_points.T @ P)
        sink = plan[-1, :K]  # student point k -> the teacher's diagonal, cost (d - b)^2 / 2
        delta = Q[:, 1] - Q[:, 0]
        grad += sink[:, None] * np.stack([-delta, delta], axis=1)
    return loss, grad
