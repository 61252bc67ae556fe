"""The camera teacher's targets in a distillation step (``--teacher images``, decision 61).

The batch carries, per point, the probabilities a 2D model gave the pixel the point projects to
(``camera_probs``) and optionally its sampled 2D features (``camera_features``), rows of NaN where
no camera sees the point (:mod:`train.data.cameras.camera_teacher`).

* L_kld (decision 18's ``T^2 KL(softmax(z_T / T) || softmax(z_S / T))``) reads the probabilities
  p as the teacher's logits ``z_T = log p``: ``softmax(log p / T)`` is ``p^(1/T)`` renormalised, p
  itself at T = 1. A zero probability is clamped to float64's smallest normal number, 2.2e-308,
  first (the logits are float64, as ``fast.kld`` computes anyway): its share of the tempered
  distribution is then ``2.2e-308^(1/T)``, below 1e-30 up to T = 10 (float32's 1.2e-38 would
  leave 3e-10 at T = 4). The
  points no camera sees take the ignore label, so the mean runs over the seen points alone (0
  with a zero gradient when the batch has none); a seen point counts whether or not it is labelled,
  and its class for ``--kld-class-weights`` is the camera's most likely one.
* Pseudo-labels (``--camera-pseudo-labels``, decision 65): L_seg's label of a point of an
  unlabelled scan is the camera's most likely class where a camera sees it and its top probability
  reaches ``--pseudo-label-threshold``, the ignore label elsewhere (:func:`camera_classes`).
* L_topo compares the 2D features of the seen points with the student's embedding at the same
  points, cloud by cloud (the same TPS subsample of both, chosen on the 2D features); a cloud of
  fewer than two seen points has no edge and is left out, and the loss is the mean over the others.
"""
from __future__ import annotations

import torch

IGNORE = -1


def camera_classes(probs: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """For (N, K) projected probabilities with NaN rows where unseen: the most likely class of each
    seen row whose top probability (as the row holds it) is at least ``threshold``, the ignore label
    on the others (unseen rows always)."""
    top, classes = probs.double().nan_to_num(0.0).max(1)
    keep = ~torch.isnan(probs[:, 0]) & (top >= threshold)
    return torch.where(keep, classes, IGNORE)


def camera_kld_teacher(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For (N, K) projected probabilities with NaN rows where unseen: the teacher's logits ``log p``
    (float64, 0 on unseen rows) and L_kld's targets (:func:`camera_classes`: the most likely class
    on seen rows, the ignore label on the others)."""
    p = probs.double()
    seen = ~torch.isnan(p[:, 0])
    logits = torch.where(seen[:, None], p.clamp_min(torch.finfo(torch.float64).tiny).log(), 0.0)
    return logits, camera_classes(probs)


def seen_clouds(features: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, list[int]] | None:
    """The rows of the points a camera sees in every cloud (END ``offset``) that has at least two
    of them, and the END offsets of those rows; None when no cloud has two."""
    seen = ~torch.isnan(features[:, 0])
    cloud = torch.repeat_interleave(torch.arange(len(offset), device=offset.device),
                                    torch.diff(offset, prepend=offset.new_zeros(1)), output_size=len(seen))
    counts = torch.zeros(len(offset), dtype=torch.int64, device=offset.device).index_add_(0, cloud, seen.long())
    kept = counts >= 2
    counts_host = counts[kept].tolist()  # one host read: the clouds' sizes set the job's offsets
    if not counts_host:
        return None
    rows = torch.nonzero(seen & kept[cloud]).reshape(-1)
    ends = torch.tensor(counts_host).cumsum(0).tolist()
    return rows, ends
