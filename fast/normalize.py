"""Per-cloud feature normalisation for a batch of concatenated clouds (paper Algorithm 1, Step 1).

Torch twin of ``reference.normalize`` (``reference.normalize_cloud`` applied to every cloud of a
batch given by END offsets, decision 13):

- ``scale`` (default): ``(h_i - mean) / (rms + eps)``, ``rms = sqrt(mean_i ||h_i - mean||^2)``,
  one mean and one rms per cloud;
- ``l2``: ``h_i / (||h_i|| + eps)`` per point;
- ``none``: identity.

``check_end_offsets`` is the shared validation of END offsets for the batched fast functions.

The backward is PyTorch autograd through these ops, which is the exact derivative; where a norm
is exactly 0 (``l2`` on a zero vector, ``scale`` on a cloud of identical points) its derivative is
taken as 0, as in ``reference.normalize_backward``, so gradients stay finite.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
import torch

from fast.transfer import to_device

MODES = ("scale", "l2", "none")


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with derivative 0 (instead of inf) where ``x == 0``."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def check_end_offsets(
    offsets: Union[torch.Tensor, Sequence[int]], rows: int, min_points: int = 1, name: str = "offsets"
) -> list[int]:
    """END offsets of concatenated clouds as a list of ints, or ValueError naming the problem.

    They must be 1-D integers, strictly increasing with at least ``min_points`` points per cloud,
    and end at ``rows`` (the number of feature rows). ``name`` is the argument the messages name.
    """
    if isinstance(offsets, torch.Tensor):
        if offsets.is_floating_point() or offsets.is_complex() or offsets.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor of END offsets, got dtype {offsets.dtype}")
        if offsets.ndim != 1:
            raise ValueError(f"{name} must be 1-D (B,) END offsets, got shape {tuple(offsets.shape)}")
        ends = [int(v) for v in offsets.tolist()]
    else:
        ends = list(offsets)
        if any(isinstance(v, bool) or int(v) != v for v in ends):
            raise ValueError(f"{name} must hold integers (END offsets), got {ends}")
        ends = [int(v) for v in ends]
    if not ends:
        raise ValueError(f"{name} is empty; give the (B,) END offsets of the clouds, e.g. [n_0, n_0 + n_1, ...]")
    sizes = [e - s for s, e in zip([0] + ends[:-1], ends)]
    if any(n < min_points for n in sizes):
        raise ValueError(
            f"{name} must be strictly increasing END offsets with at least {min_points} point(s) per cloud"
            f"{' (a topological loss needs an edge)' if min_points >= 2 else ''}; got offsets {ends}, "
            f"cloud sizes {sizes}"
        )
    if ends[-1] != rows:
        raise ValueError(
            f"{name} end at {ends[-1]} but the features have {rows} rows; the last END offset must equal the row count"
        )
    return ends


def cloud_ids(offsets: Union[torch.Tensor, Sequence[int]], device: torch.device, rows: int) -> torch.Tensor:
    """(rows,) int64 cloud index of every row for validated END ``offsets`` (``rows`` = offsets[-1],
    known on the host after validation, spares a device synchronisation)."""
    off = torch.as_tensor(offsets, dtype=torch.int64, device=device)
    counts = torch.diff(off, prepend=off.new_zeros(1))
    return torch.repeat_interleave(torch.arange(len(off), device=device), counts, output_size=rows)


def normalize(feats: torch.Tensor, offsets: Union[torch.Tensor, Sequence[int]], mode: str = "scale",
              eps: float = 1e-12, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Normalise every cloud of the concatenated (sumN, C) ``feats`` with END ``offsets``.

    Returns a tensor of the shape and dtype of ``feats``, differentiable w.r.t. ``feats``; with
    ``rows`` ((R,) int64 row indices on the device of ``feats``), only those rows of it, bit for
    bit: the per-cloud statistics still use every row, but the last division and its backward
    touch only the selected rows (the topological loss uses the M TPS rows of each cloud).
    """
    if mode not in MODES:
        raise ValueError(f"normalize mode must be one of {MODES}, got {mode!r}")
    offsets = check_end_offsets(offsets, feats.shape[0])
    if mode == "none":
        return feats if rows is None else feats[rows]
    if mode == "l2":
        picked = feats if rows is None else feats[rows]
        return picked / (torch.linalg.vector_norm(picked, dim=1, keepdim=True) + eps)
    # the offsets reach the device without a wait, and the counts come from them (a bincount
    # would read its largest id on the host)
    off = to_device(np.asarray(offsets, dtype=np.int64), feats.device)
    ids = cloud_ids(off, feats.device, feats.shape[0])
    num_clouds = len(offsets)
    counts = torch.diff(off, prepend=off.new_zeros(1)).to(feats.dtype)
    sums = feats.new_zeros(num_clouds, feats.shape[1]).index_add(0, ids, feats)
    centred = feats - (sums / counts[:, None])[ids]
    sq = feats.new_zeros(num_clouds).index_add(0, ids, (centred * centred).sum(dim=1))
    rms = _safe_sqrt(sq / counts)
    if rows is None:
        return centred / (rms + eps)[ids, None]
    return centred[rows] / (rms + eps)[ids[rows], None]
