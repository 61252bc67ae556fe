"""Topology-preserving sampling (TPS) for a batch of clouds, paper Algorithm 5.

Torch twin of ``reference.tps`` (decision 14): cloud ``b`` starts at
``numpy.random.default_rng(seed + b).integers(n_b)``, every next index is the argmax of the
distance to the selected set with ties to the lowest index, already selected points are excluded
(so duplicated points never give a repeated index), and a cloud with ``n_b <= m`` uses all its
points.

Every cloud runs the compiled loop of ``fast.persistence.tps_indices`` on the host in float64,
which returns the reference's indices bit for bit and skips, by the triangle inequality, the
distances that cannot change the running minimum (the persistence workers run the same kernel).
Features on another device are copied to the host once and the indices come back in one copy
(decision 42: the M greedy steps on a GPU were M launches of small kernels per batch, and their
float64 distances summed in another order than the reference's). On CUDA, where Triton imports
and the features have at most 128 channels, the same loop runs on the device instead, one
Triton program per cloud in one launch (``fast.tps_device``, same indices).
"""
from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

from fast.normalize import check_end_offsets
from fast.persistence import tps_indices
from fast.transfer import to_device


def tps(feats: torch.Tensor, offsets: Union[torch.Tensor, Sequence[int]], m: int, seed: int = 0) -> list[torch.Tensor]:
    """TPS indices of every cloud of the concatenated (sumN, C) ``feats`` with END ``offsets``.

    Returns one int64 tensor per cloud (on ``feats.device``) of ``min(m, n_b)`` indices local to
    that cloud, in selection order: ``reference.tps`` of ``feats`` (in float64) on every device.
    """
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise ValueError(f"TPS budget m must be an integer >= 1, got {m!r}")
    m = int(m)
    ends = check_end_offsets(offsets, feats.shape[0])
    if feats.device.type == "cuda" and importlib.util.find_spec("triton") is not None:
        from fast.tps_device import MAX_COLUMNS, tps_device  # imports Triton: only here

        if feats.shape[1] <= MAX_COLUMNS:
            return tps_device(feats.detach().to(torch.float64), ends, m, seed)
    starts = [0] + ends[:-1]
    # the host copy (if not there already) only when some cloud has more than m points
    h = feats.detach().to(torch.float64).cpu().numpy() if max(e - s for s, e in zip(starts, ends)) > m else None
    picked = [tps_indices(h[s:e], m, seed + b) if e - s > m else np.arange(e - s, dtype=np.int64)
              for b, (s, e) in enumerate(zip(starts, ends))]
    return list(torch.split(to_device(np.concatenate(picked), feats.device), [len(p) for p in picked]))
