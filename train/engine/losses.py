"""Segmentation loss L_seg = cross-entropy + Lovasz-softmax, ignore label -1 (spec D, paper Eq. 8).

Lovasz-softmax follows Berman, Rannen Triki and Blaschko, "The Lovasz-Softmax loss" (CVPR 2018):
for each class c the vector of errors m_i(c) = |[y_i = c] - p_i(c)| is fed to the Lovasz extension
of the Jaccard loss Delta_Jc(M) = |M| / |{y = c} u M| (M: the mispredicted points). The extension of
a set function at m is sum_i m_(i) * (Delta(first i points) - Delta(first i-1 points)) with the
errors sorted in decreasing order (the paper's Eq. 8-9, Algorithm 1). The class average runs over the
classes present in the labels (the paper's default for mini-batches) or over all classes.

Hand-written (about 20 lines) rather than taken from a library because no maintained PyTorch
package ships it with an ignore label and a present/all class choice.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from train.option_names import CLASS_WEIGHTINGS, DEFAULT_SEG_LOSS, SEG_LOSSES


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Increments of the Jaccard loss along the sorted errors (paper Eq. 9).

    ``gt_sorted`` (P,) or (P, K) float in {0,1}: ground-truth membership of the points in
    decreasing-error order (one column per class). Returns g of the same shape with
    g_i = Delta_J(first i) - Delta_J(first i-1) along the first axis.
    """
    gts = gt_sorted.sum(0)
    # One running sum, taken with the points innermost in memory: CUDA scans an outer dimension of
    # (P, K) with one thread per column (20-42 ms per call at 4 x 30,000 points on an H200, the
    # step's largest kernels after TPS). Sums of 0/1 are exact integers in float32 below 2^24
    # points, so this form changes no bit against cumsum(0) of gt and of 1 - gt.
    members = gt_sorted.movedim(0, -1).contiguous().cumsum(-1).movedim(-1, 0)
    seen = torch.arange(1, gt_sorted.shape[0] + 1, dtype=gt_sorted.dtype, device=gt_sorted.device)
    intersection = gts - members
    union = gts + (seen.view(-1, *[1] * (gt_sorted.ndim - 1)) - members)
    jaccard = 1.0 - intersection / union
    if gt_sorted.shape[0] > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def lovasz_softmax(
    probs: torch.Tensor, labels: torch.Tensor, classes: str = "present", ignore_index: int = -1
) -> torch.Tensor:
    """Lovasz-softmax of class probabilities ``probs`` (N,K) against ``labels`` (N,) int.

    Points labelled ``ignore_index`` are left out. ``classes``: "present" averages over the classes
    that occur in the kept labels, "all" over every class. Returns a scalar; 0 (still attached to
    the graph) when no point is labelled.
    """
    if probs.ndim != 2 or labels.ndim != 1 or probs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"lovasz_softmax: probs must be (N,K) and labels (N,), got {tuple(probs.shape)} and {tuple(labels.shape)}"
        )
    if classes not in ("present", "all"):
        raise ValueError(f"lovasz_softmax: classes must be 'present' or 'all', got {classes!r}")
    num_classes = probs.shape[1]
    keep = labels != ignore_index
    # checked on the device: a host read here would stall every training step (decision 39)
    torch._assert_async(((labels >= 0) & (labels < num_classes) | ~keep).all(),
                        f"lovasz_softmax: labels must lie in [0, {num_classes}) or equal ignore_index {ignore_index}")
    # All classes at once, ignored points kept in place (no boolean indexing, whose size the host
    # would have to wait for): their error sorts last (-1 < every error) and counts as 0, and they
    # are no class's member, so the increments before them are those of the labelled points alone.
    fg = (labels[:, None] == torch.arange(num_classes, device=labels.device)).to(probs.dtype)
    errors = torch.where(keep[:, None], (fg - probs).abs(), -1.0)
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    per_class = (errors_sorted.clamp_min(0.0) * lovasz_grad(fg.gather(0, perm))).sum(0)
    counted = fg.sum(0) > 0 if classes == "present" else torch.ones_like(per_class, dtype=torch.bool)
    return (per_class * counted).sum() / counted.sum().clamp_min(1)


def cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1, class_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy over labelled points; 0 (attached to the graph) when none is labelled.

    With ``class_weight`` (K,) it is the weighted mean sum_i w_{y_i} CE_i / sum_i w_{y_i}, so the
    weights change how the classes share the loss, not its overall scale. Computed as a masked sum
    over all points (no host synchronisation, decision 39)."""
    weight = None if class_weight is None else class_weight.to(logits.device, logits.dtype, non_blocking=True)
    keep = labels != ignore_index
    per_point = F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index, reduction="none")
    if weight is None:
        total_weight = keep.sum().to(per_point.dtype)
    else:
        total_weight = torch.where(keep, weight[labels.masked_fill(~keep, 0)], 0.0).sum()
    # no labelled point: 0 / tiny = 0, and a zero gradient (the ignored points get none)
    return per_point.sum() / total_weight.clamp_min(torch.finfo(per_point.dtype).tiny)


def class_weights(frequencies: Sequence[float], kind: str) -> tuple[float, ...] | None:
    """Per-class CE weights from label shares ``frequencies`` (K,) (any non-negative scale);
    None for "none". Classes absent from the counts get weight 0 (they never occur as targets)."""
    if kind not in CLASS_WEIGHTINGS:
        raise ValueError(f"class weighting must be one of {CLASS_WEIGHTINGS}, got {kind!r}")
    if kind == "none":
        return None
    f = np.asarray(frequencies, dtype=np.float64)
    if f.ndim != 1 or not np.all(np.isfinite(f)) or np.any(f < 0) or f.sum() <= 0:
        raise ValueError(f"class frequencies must be a non-empty 1-D array of finite counts >= 0 with a "
                         f"positive sum, got {f.tolist()}")
    f = f / f.sum()
    w = np.zeros_like(f)
    present = f > 0
    w[present] = f[present] ** -0.5
    w /= float((f * w).sum())
    return tuple(float(v) for v in w)


def segmentation_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1, kind: str = DEFAULT_SEG_LOSS,
    class_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_seg (paper Eq. 8): ``kind`` "ce" (cross-entropy) or "ce+lovasz" (+ Lovasz-softmax, spec D);
    ``class_weight`` (K,) weights the cross-entropy (see :func:`class_weights`).

    Returns the total and its parts (detached) for logging."""
    if kind not in SEG_LOSSES:
        raise ValueError(f"segmentation loss must be one of {SEG_LOSSES}, got {kind!r}")
    ce = cross_entropy(logits, labels, ignore_index, class_weight)
    if kind == "ce":
        return ce, {"ce": ce.detach()}
    # softmax in at least float32 (AMP hands in float16 logits); float64 stays float64
    probs = torch.softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=1)
    lov = lovasz_softmax(probs, labels, ignore_index=ignore_index)
    return ce + lov, {"ce": ce.detach(), "lovasz": lov.detach()}
