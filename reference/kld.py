"""Temperature-scaled logit distillation loss (paper Sec. 3.4, Eq. (8) term L_KLD) and its gradient.

Decision 18 (``docs/decisions.md``):
``L_kld = T^2 * KL(softmax(z_T / T) || softmax(z_S / T))`` per point, averaged over the points whose
label is not ``ignore_index`` (all points when ``labels`` is None); 0 with a zero gradient when no
point is labelled. Softmaxes are computed through log-sum-exp so large logits do not overflow.

Gradient: ``dL/dz_S = T * (softmax(z_S / T) - softmax(z_T / T)) / n_labelled`` on labelled rows,
0 on ignored rows.
"""
from __future__ import annotations

import numpy as np


def kld(
    student_logits: np.ndarray,
    teacher_logits: np.ndarray,
    labels: np.ndarray | None = None,
    temperature: float = 1.0,
    ignore_index: int = -1,
) -> tuple[float, np.ndarray]:
    """Return ``(loss, dloss/dstudent_logits)`` for (N, K) logits and optional (N,) int labels."""
    zs = np.asarray(student_logits, dtype=np.float64)
    zt = np.asarray(teacher_logits, dtype=np.float64)
    if zs.ndim != 2 or zs.shape != zt.shape:
        raise ValueError(
            f"student_logits {zs.shape} and teacher_logits {zt.shape} must both be (N, K) with "
            "the same shape (same points, same classes)"
        )
    for name, z in (("student_logits", zs), ("teacher_logits", zt)):
        if not np.all(np.isfinite(z)):
            raise ValueError(f"{name} contains NaN/Inf; logits must be finite")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if labels is None:
        keep = np.ones(zs.shape[0], dtype=bool)
    else:
        lab = np.asarray(labels)
        if lab.shape != (zs.shape[0],) or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(
                f"labels must be an (N,) = ({zs.shape[0]},) integer array, got shape {lab.shape} "
                f"dtype {lab.dtype}"
            )
        keep = lab != ignore_index
    grad = np.zeros_like(zs)
    n = int(keep.sum())
    if n == 0:
        return 0.0, grad
    T = float(temperature)
    from scipy.special import log_softmax  # imported on use: importing reference stays numpy-only (decision 38)

    log_ps = log_softmax(zs[keep] / T, axis=1)
    log_pt = log_softmax(zt[keep] / T, axis=1)
    pt = np.exp(log_pt)
    loss = T * T * float(np.sum(pt * (log_pt - log_ps))) / n
    grad[keep] = T * (np.exp(log_ps) - pt) / n
    return loss, grad
