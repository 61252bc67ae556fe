"""Persistence-weighted Chamfer distance (PWCD) between two persistence diagrams and its gradient.

Paper Eq. (2)-(3) and Algorithm 2 for the loss, Algorithm 4 for the gradient with respect to the
student's (birth, death) pairs, with the project's numerical decisions 6-10
(``docs/decisions.md``):

- pair cost ``||p - q||^2`` (squared Euclidean, *without* the 1/2 of Algorithm 2 line 14, which
  contradicts the gradients of Algorithm 4);
- squared distance to the diagonal ``dist_diag(b, d) = (d - b)^2 / 2``;
- teacher weights ``w(p) = log(1 + max(d - b, 0))``, normaliser ``w_bar = sum(w) + eps_w``;
- recall (teacher -> student): ``1/w_bar * sum_p w(p) * min(min_q ||p - q||^2, dist_diag(p))``;
- precision (student -> teacher): ``1/K * sum_q min(min_p ||q - p||^2, dist_diag(q))``;
- empty diagrams: both empty -> 0; student empty -> recall uses the diagonal, precision 0;
  teacher empty -> recall 0, precision uses the diagonal;
- the match wins when ``match <= diagonal``; exactly equal nearest neighbours share the gradient
  uniformly (a Clarke subgradient).

The recall term's gradient flows to the matched student point(s) (d/dq of ``||p - q||^2``), the
precision term's to the student point itself; the teacher diagram is a constant.
"""
from __future__ import annotations

import numpy as np


def _as_pairs(pairs: np.ndarray, name: str) -> np.ndarray:
    """Return ``pairs`` as a finite float64 (K, 2) array; an empty array of any shape gives (0, 2)."""
    arr = np.asarray(pairs, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(
            f"{name} must be a (K, 2) array of (birth, death) pairs, got shape {arr.shape}; "
            "pass Diagram.pairs of one homology dimension"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} contains NaN or Inf; drop essential (infinite-death) pairs before calling pwcd"
        )
    return arr


def _dist_diag(pairs: np.ndarray) -> np.ndarray:
    """Squared distance of each (b, d) to the diagonal: (d - b)^2 / 2 (decision 7)."""
    return (pairs[:, 1] - pairs[:, 0]) ** 2 / 2.0


def _nearest_shares(cost: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Row/column minima of ``cost`` and the uniform share matrix among exactly tied minimisers.

    Returns ``(nn, share)`` where ``nn`` is the minimum along ``axis`` and ``share`` has the shape of
    ``cost`` with ``1/t`` at the ``t`` positions attaining the minimum of their row/column, else 0.
    """
    nn = cost.min(axis=axis)
    ties = cost == np.expand_dims(nn, axis)
    share = ties / ties.sum(axis=axis, keepdims=True)
    return nn, share


def pwcd(
    teacher_pairs: np.ndarray, student_pairs: np.ndarray, eps_w: float = 1e-8
) -> tuple[float, np.ndarray]:
    """PWCD loss of Eq. (2)-(3) and its gradient with respect to ``student_pairs`` (Algorithm 4).

    Args:
        teacher_pairs: (M, 2) teacher (birth, death) pairs of one homology dimension (constants).
        student_pairs: (K, 2) student (birth, death) pairs of the same dimension.
        eps_w: stabiliser of the weight normaliser ``w_bar = sum(w) + eps_w``; must be > 0.

    Returns:
        ``(loss, grad)`` with ``loss`` a float >= 0 and ``grad`` a (K, 2) float64 array holding
        ``(dL/db_k, dL/dd_k)`` for every student pair.
    """
    P = _as_pairs(teacher_pairs, "teacher_pairs")
    Q = _as_pairs(student_pairs, "student_pairs")
    if not (np.isfinite(eps_w) and eps_w > 0):
        raise ValueError(f"eps_w must be a finite number > 0 (paper: epsilon > 0), got {eps_w}")
    M, K = len(P), len(Q)
    grad = np.zeros((K, 2), dtype=np.float64)
    if M == 0 and K == 0:
        return 0.0, grad

    # Recall term (teacher -> student), Eq. (2).
    recall = 0.0
    if M > 0:
        w = np.log1p(np.maximum(P[:, 1] - P[:, 0], 0.0))
        w_bar = w.sum() + eps_w
        diag_T = _dist_diag(P)
        if K == 0:
            recall = float(np.sum(w * diag_T) / w_bar)
        else:
            cost = np.sum((P[:, None, :] - Q[None, :, :]) ** 2, axis=-1)  # (M, K)
            nn, share = _nearest_shares(cost, axis=1)
            matched = nn <= diag_T
            recall = float(np.sum(w * np.where(matched, nn, diag_T)) / w_bar)
            # d/dq_k of s_i * ||p_i - q_k||^2 = 2 s_i (q_k - p_i), shared among tied nearest q_k.
            coef = share * (matched * w / w_bar)[:, None]  # (M, K)
            grad += 2.0 * (coef.sum(axis=0)[:, None] * Q - coef.T @ P)

    # Precision term (student -> teacher), Eq. (3).
    precision = 0.0
    if K > 0:
        diag_S = _dist_diag(Q)
        delta = Q[:, 1] - Q[:, 0]
        diag_grad = np.stack([-delta, delta], axis=1) / K  # d/dq of dist_diag(q) / K
        if M == 0:
            precision = float(np.mean(diag_S))
            grad += diag_grad
        else:
            nn, share = _nearest_shares(cost, axis=0)
            matched = nn <= diag_S
            precision = float(np.mean(np.where(matched, nn, diag_S)))
            # Tied nearest teachers share uniformly: 2/K (q_k - mean of the tied p_i).
            p_nearest = share.T @ P  # (K, 2)
            match_grad = 2.0 * (Q - p_nearest) / K
            grad += np.where(matched[:, None], match_grad, diag_grad)

    return recall + precision, grad
