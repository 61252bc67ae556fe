"""Gradient-guided saliency alignment loss L_grad and its gradient, paper Eq. (4)-(7).

Decisions 15-17 (``docs/decisions.md``), per layer ``l`` (every decoder stage) and per
cloud ``b`` of the batch:

- Eq. (4): channel weights ``omega_k = mean over the cloud's stage points of |dL_seg/dF_ik|``,
  computed from the given activation gradients and treated as constants;
- Eq. (5): saliency map ``M_i = sum_k |omega_k F_ik|``;
- the stage map is brought to the input points through ``index`` (``M_up = M[index]``);
- Eq. (6): min-max normalisation per cloud over that cloud's input points,
  ``(M_up - min) / (max - min + eps)``;
- Eq. (7): ``sum_i |Mhat_T - Mhat_S|`` over all input points divided by the total number of input
  points ``N``, summed over layers.

Gradient w.r.t. each student activation: through ``|F|`` (sign(0) = 0), through ``min`` and
``max`` (the gradient of each is split uniformly among the input points of the cloud whose
``M_up`` attains it, so an extremal stage point referenced by several input points collects all of
it), and through ``|Mhat_T - Mhat_S|`` with sign(0) = 0. Teacher maps carry no gradient.
``detach_range=True`` (decision 43) treats each cloud's ``min`` and ``max`` as constants in the
backward pass: the loss is the same, its gradient keeps only the direct path.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reference.normalize import as_features, check_end_offsets


def _check_layer(
    acts: np.ndarray,
    grads: np.ndarray,
    stage_offsets: np.ndarray,
    index: np.ndarray,
    offsets: np.ndarray,
    who: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate one layer of one model; return (acts, grads, stage END offsets, index) as arrays."""
    F = as_features(acts, f"{who}_acts")
    g = as_features(grads, f"{who}_grads")
    if g.shape != F.shape:
        raise ValueError(f"{who}_grads has shape {g.shape} but {who}_acts has {F.shape}; they must match")
    s_off = check_end_offsets(stage_offsets, F.shape[0], f"{who}_stage_offsets")
    if len(s_off) != len(offsets):
        raise ValueError(
            f"{who}_stage_offsets has {len(s_off)} clouds but offsets has {len(offsets)}; "
            "every stage must hold the same clouds as the input"
        )
    idx = np.asarray(index)
    if idx.shape != (offsets[-1],) or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(
            f"{who}_index must be an (N,) integer array, N = offsets[-1] = {offsets[-1]} input points, "
            f"mapping every input point to its stage row; got shape {idx.shape} dtype {idx.dtype}"
        )
    # Each input point of cloud b must map into cloud b's rows at this stage.
    cloud = np.repeat(np.arange(len(offsets)), np.diff(offsets, prepend=0))
    s_start = np.concatenate([[0], s_off[:-1]])
    if np.any(idx < s_start[cloud]) or np.any(idx >= s_off[cloud]):
        raise ValueError(
            f"{who}_index maps some input points outside their own cloud's rows at this stage "
            f"(stage END offsets {s_off}); pass the pooling inverse of the same batch"
        )
    return F, g, s_off, idx.astype(np.int64)


def _upsampled_map(
    F: np.ndarray, g: np.ndarray, s_off: np.ndarray, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Eq. (4)-(5) then ``M[index]``: returns (M_up (N,), omega per stage point (N_l, C_l))."""
    counts = np.diff(s_off, prepend=0)
    stage_cloud = np.repeat(np.arange(len(s_off)), counts)
    omega = np.zeros((len(s_off), F.shape[1]))
    np.add.at(omega, stage_cloud, np.abs(g))
    omega /= counts[:, None]
    omega_rows = omega[stage_cloud]
    M = np.sum(np.abs(omega_rows * F), axis=1)
    return M[idx], omega_rows


def _minmax(u: np.ndarray, offsets: np.ndarray, eps: float) -> tuple[np.ndarray, list[tuple[int, int, float, float, float]]]:
    """Eq. (6) per cloud; also returns per cloud (lo, hi, min, max, denominator) for the backward."""
    out = np.empty_like(u)
    parts = []
    for lo, hi in zip(np.concatenate([[0], offsets[:-1]]), offsets):
        mn, mx = float(u[lo:hi].min()), float(u[lo:hi].max())
        den = mx - mn + eps
        out[lo:hi] = (u[lo:hi] - mn) / den
        parts.append((int(lo), int(hi), mn, mx, den))
    return out, parts


def saliency_loss(
    student_acts: Sequence[np.ndarray],
    student_grads: Sequence[np.ndarray],
    student_stage_offsets: Sequence[np.ndarray],
    student_index: Sequence[np.ndarray],
    teacher_acts: Sequence[np.ndarray],
    teacher_grads: Sequence[np.ndarray],
    teacher_stage_offsets: Sequence[np.ndarray],
    teacher_index: Sequence[np.ndarray],
    offsets: Sequence[int] | np.ndarray,
    eps: float = 1e-8,
    detach_range: bool = False,
) -> tuple[float, list[np.ndarray]]:
    """L_grad of Eq. (7) over L layers and its gradient w.r.t. each ``student_acts[l]``.

    All list arguments have one entry per layer: ``*_acts[l]`` (N_l, C_l) activations,
    ``*_grads[l]`` (N_l, C_l) = dL_seg/dF (constants), ``*_stage_offsets[l]`` (B,) END offsets of
    the clouds at that stage, ``*_index[l]`` (N,) input point -> global stage row. ``offsets`` (B,)
    END offsets of the N input points. ``detach_range``: no gradient through the per-cloud min and
    max of Eq. (6) (decision 43). Returns ``(loss, [dL/dstudent_acts[l] for l])``.
    """
    lists = {
        "student_acts": student_acts, "student_grads": student_grads,
        "student_stage_offsets": student_stage_offsets, "student_index": student_index,
        "teacher_acts": teacher_acts, "teacher_grads": teacher_grads,
        "teacher_stage_offsets": teacher_stage_offsets, "teacher_index": teacher_index,
    }
    L = len(student_acts)
    if L == 0 or any(len(v) != L for v in lists.values()):
        raise ValueError(
            "every per-layer argument must be a non-empty list with one entry per layer; got lengths "
            + ", ".join(f"{k}={len(v)}" for k, v in lists.items())
        )
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0 (Eq. 6 stabiliser), got {eps}")
    off = check_end_offsets(offsets, int(np.asarray(offsets)[-1]) if np.size(offsets) else 0, "offsets")
    N = int(off[-1])
    layers = [
        (
            _check_layer(student_acts[l], student_grads[l], student_stage_offsets[l], student_index[l], off, "student"),
            _check_layer(teacher_acts[l], teacher_grads[l], teacher_stage_offsets[l], teacher_index[l], off, "teacher"),
        )
        for l in range(L)
    ]
    loss = 0.0
    grads_out = []
    for (F_S, g_S, soff_S, idx_S), (F_T, g_T, soff_T, idx_T) in layers:
        u_S, omega_S = _upsampled_map(F_S, g_S, soff_S, idx_S)
        u_T, _ = _upsampled_map(F_T, g_T, soff_T, idx_T)
        hat_S, parts = _minmax(u_S, off, eps)
        hat_T, _ = _minmax(u_T, off, eps)
        loss += float(np.sum(np.abs(hat_T - hat_S))) / N
        r = np.sign(hat_S - hat_T) / N  # dL/dhat_S
        g_u = np.empty_like(u_S)
        for lo, hi, mn, mx, den in parts:
            r_b, hat_b, u_b = r[lo:hi], hat_S[lo:hi], u_S[lo:hi]
            g_b = r_b / den
            if detach_range:
                g_u[lo:hi] = g_b
                continue
            g_min = np.sum(r_b * (hat_b - 1.0)) / den  # dL/dmin
            g_max = -np.sum(r_b * hat_b) / den  # dL/dmax
            at_min, at_max = u_b == mn, u_b == mx
            g_b = g_b + at_min * (g_min / at_min.sum()) + at_max * (g_max / at_max.sum())
            g_u[lo:hi] = g_b
        g_M = np.bincount(idx_S, weights=g_u, minlength=F_S.shape[0])
        grads_out.append(g_M[:, None] * omega_S * np.sign(F_S))
    return loss, grads_out
