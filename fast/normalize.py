"""Per-cloud feature normalisation for a batch of concatenated clouds (paper Algorithm 1, Step 1).

Torch twin of ``reference.normalize.normalize`` applied to every cloud of a batch given by END
offsets (decision 13):

- ``scale`` (default): ``(h_i - mean) / (rms + eps)``, ``rms = sqrt(mean_i ||h_i - mean||^2)``,
  one mean and one rms per cloud;
- ``l2``: ``h_i / (||h_i|| + eps)`` per point;
- ``none``: identity.

The backward is PyTorch autograd through these ops, which is the exact derivative; where a norm
is exactly 0 (``l2`` on a zero vector, ``scale`` on a cloud of identical points) its derivative is
taken as 0, as in ``reference.normalize.normalize_backward``, so gradients stay finite.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

MODES = ("scale", "l2", "none")


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with derivative 0 (instead of inf) where ``x == 0``."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def cloud_ids(offsets: Sequence[int], device: torch.device) -> torch.Tensor:
    """(sumN,) int64 cloud index of every row for END ``offsets``."""
    ends = [int(e) for e in offsets]
    sizes = torch.tensor([e - s for s, e in zip([0] + ends[:-1], ends)], device=device)
    return torch.repeat_interleave(torch.arange(len(ends), device=device), sizes)


def normalize(feats: torch.Tensor, offsets: Sequence[int], mode: str = "scale", eps: float = 1e-12) -> torch.Tensor:
    """Normalise every cloud of the concatenated (sumN, C) ``feats`` with END ``offsets``.

    Returns a tensor of the shape and dtype of ``feats``, differentiable w.r.t. ``feats``.
    """
    if mode not in MODES:
        raise ValueError(f"normalize mode must be one of {MODES}, got {mode!r}")
    if mode == "none":
        return feats
    if mode == "l2":
        return feats / (torch.linalg.vector_norm(feats, dim=1, keepdim=True) + eps)
    ids = cloud_ids(offsets, feats.device)
    num_clouds = len(offsets)
    counts = torch.bincount(ids, minlength=num_clouds).to(feats.dtype)
    sums = feats.new_zeros(num_clouds, feats.shape[1]).index_add(0, ids, feats)
    centred = feats - (sums / counts[:, None])[ids]
    sq = feats.new_zeros(num_clouds).index_add(0, ids, (centred * centred).sum(dim=1))
    rms = _safe_sqrt(sq / counts)
    return centred / (rms + eps)[ids, None]
