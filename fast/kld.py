"""Temperature-scaled logit distillation loss in PyTorch, paper Sec. 3.4 (L_KLD of Eq. (8)).

Twin of ``reference.kld`` (decision 18): ``T^2 * KL(softmax(z_T / T) || softmax(z_S / T))`` per
point, averaged over the points whose label is not ``ignore_index`` (all points when ``labels`` is
None), 0 with a zero gradient when no point is labelled. Returns a scalar tensor; the gradient
w.r.t. ``student_logits`` comes from autograd; ``teacher_logits`` is detached. Works on CPU and
CUDA for any floating dtype; the result has the promoted input dtype (at least float32).

The arithmetic runs in float64 whatever the input precision: the KL is a sum of terms of size
~|z| / T that cancel to a small result, and in float32 that cancellation left relative errors of
~1e-3 on well-matched logits (measured against the reference); (N, K) logits are cheap to upcast.
The labelled mean uses a mask rather than boolean indexing, so no host synchronisation is needed
beyond the input checks, which read both finiteness flags at once (decision 39). ``class_weight``
(K,) makes it the mean weighted by each point's class weight, ``sum_i w_{y_i} KL_i / sum_i w_{y_i}``
(decision 44; needs ``labels``); its checks are one more host read.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kld(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    ignore_index: int = -1,
    class_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scalar ``L_kld`` for (N, K) logits, optional (N,) integer labels and (K,) class weights."""
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits "
            f"{tuple(teacher_logits.shape)} must both be (N, K) with the same shape"
        )
    finite = torch.stack([torch.isfinite(z).all().to(student_logits.device) for z in (student_logits, teacher_logits)])
    if not bool(finite.all()):  # one host read for both
        name = "teacher_logits" if bool(finite[0]) else "student_logits"
        raise ValueError(f"{name} contains NaN/Inf; logits must be finite")
    if not (isinstance(temperature, (int, float)) and temperature > 0 and temperature < float("inf")):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    dtype = torch.promote_types(torch.promote_types(student_logits.dtype, teacher_logits.dtype), torch.float32)
    T = float(temperature)
    log_ps = F.log_softmax(student_logits.to(torch.float64) / T, dim=1)
    log_pt = F.log_softmax(teacher_logits.detach().to(torch.float64) / T, dim=1)
    per_point = F.kl_div(log_ps, log_pt, reduction="none", log_target=True).sum(dim=1)
    if labels is None:
        if class_weight is not None:
            raise ValueError("class_weight weights each point by its label's class: pass labels as well")
        return (T * T * per_point.sum() / max(per_point.shape[0], 1)).to(dtype)
    if labels.shape != (student_logits.shape[0],) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an ({student_logits.shape[0]},) integer tensor, got shape "
            f"{tuple(labels.shape)} dtype {labels.dtype}"
        )
    lab = labels.to(student_logits.device)
    keep = (lab != ignore_index).to(torch.float64)
    if class_weight is None:
        return (T * T * (per_point * keep).sum() / keep.sum().clamp_min(1.0)).to(dtype)
    w = torch.as_tensor(class_weight).detach().to(device=student_logits.device, dtype=torch.float64)
    if w.shape != (student_logits.shape[1],):
        raise ValueError(f"class_weight must be a ({student_logits.shape[1]},) tensor, got shape {tuple(w.shape)}")
    ok = torch.stack([(torch.isfinite(w) & (w >= 0)).all(), ~((keep > 0) & ((lab < 0) | (lab >= w.shape[0]))).any()])
    if not bool(ok.all()):  # one host read for both
        if not bool(ok[0]):
            raise ValueError(f"class_weight must hold finite weights >= 0, got {w.tolist()}")
        raise ValueError(f"labels must lie in [0, {w.shape[0]}) or equal ignore_index {ignore_index} to pick "
                         "their class weight")
    weight = keep * w[torch.where(keep > 0, lab, torch.zeros_like(lab))]
    total = weight.sum()
    # a zero weight sum (no labelled point, or only zero-weight classes): 0 with a zero gradient
    return (T * T * (per_point * weight).sum() / torch.where(total > 0, total, 1.0)).to(dtype)
