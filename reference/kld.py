"""Temperature-scaled logit distillation loss (paper Sec. 3.4, Eq. (8) term L_KLD) and its gradient.

Decision 18 (``docs/decisions.md``):
``L_kld = T^2 * KL(softmax(z_T / T) || softmax(z_S / T))`` per point, averaged over the points whose
label is not ``ignore_index`` (all points when ``labels`` is None); 0 with a zero gradient when no
point is labelled. Softmaxes are computed through log-sum-exp so large logits do not overflow.

Gradient: ``dL/dz_S = T * (softmax(z_S / T) - softmax(z_T / T)) / n_labelled`` on labelled rows,
0 on ignored rows.

``class_weight`` (K,) (decision 44): point ``i`` counts with weight ``w_{y_i}``, the mean becomes
``sum_i w_{y_i} KL_i / sum_i w_{y_i}`` over labelled points (the weighted cross-entropy's form,
decision 22) and the gradient row ``i`` is multiplied by ``w_{y_i} n_labelled / sum w``; it needs
``labels``. A zero weight sum gives 0 with a zero gradient.
"""
from __future__ import annotations

import numpy as np


def kld(
    student_logits: np.ndarray,
    teacher_logits: np.ndarray,
    labels: np.ndarray | None = None,
    temperature: float = 1.0,
    ignore_index: int = -1,
    class_weight: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Return ``(loss, dloss/dstudent_logits)`` for (N, K) logits, optional (N,) int labels and
    optional (K,) class weights."""
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
    weight = np.ones(zs.shape[0])
    if class_weight is not None:
        w = np.asarray(class_weight, dtype=np.float64)
        if labels is None:
            raise ValueError("class_weight weights each point by its label's class: pass labels as well")
        if w.shape != (zs.shape[1],) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"class_weight must be a ({zs.shape[1]},) array of finite weights >= 0, got {w}")
        if np.any(keep & ((lab < 0) | (lab >= len(w)))):
            raise ValueError(f"labels must lie in [0, {len(w)}) or equal ignore_index {ignore_index} to pick "
                             "their class weight")
        weight = np.where(keep, w[np.where(keep, lab, 0)], 0.0)
    grad = np.zeros_like(zs)
    n = float(weight[keep].sum())
    if n == 0:
        return 0.0, grad
    T = float(temperature)
    from scipy.special import log_softmax  # imported on use: importing reference stays numpy-only (decision 38)

    log_ps = log_softmax(zs[keep] / T, axis=1)
    log_pt = log_softmax(zt[keep] / T, axis=1)
    pt = np.exp(log_pt)
    wk = weight[keep][:, None]
    loss = T * T * float(np.sum(wk * pt * (log_pt - log_ps))) / n
    grad[keep] = T * wk * (np.exp(log_ps) - pt) / n
    return loss, grad
