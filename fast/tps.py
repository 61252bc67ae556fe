"""Topology-preserving sampling (TPS) for a batch of clouds on the device, paper Algorithm 5.

Torch twin of ``reference.tps`` (decision 14): cloud ``b`` starts at
``numpy.random.default_rng(seed + b).integers(n_b)``, every next index is the argmax of the
distance to the selected set with ties to the lowest index, already selected points are excluded
(so duplicated points never give a repeated index), and a cloud with ``n_b <= m`` uses all its
points.

On the CPU each cloud runs the compiled loop of ``fast.persistence.farthest_point_indices``, which
returns the reference's indices bit for bit and skips, by the triangle inequality, the distances
that cannot change the running minimum (the persistence workers run the same kernel). On another
device the M greedy steps, inherently sequential, advance all clouds at once: the clouds that need
sampling are padded to (B', N_max, C) and every step is a few tensor ops (``torch.argmax``
returns the first maximiser, which is the lowest-index tie rule).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch

from fast.normalize import check_end_offsets
from fast.persistence import tps_indices, tps_start


def _point_dist(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """||x[b, i] - centre[b]|| from coordinate differences (never |a|^2 + |b|^2 - 2ab, which
    would break exact ties between duplicated points), (B', N_max). ``torch.cdist`` in this mode
    needs no (B', N_max, C) temporary: measured 4 ms vs 18 ms per step at B'=12, N=4096, C=64."""
    return torch.cdist(x, centre[:, None, :], compute_mode="donot_use_mm_for_euclid_dist")[:, :, 0]


def tps(feats: torch.Tensor, offsets: Union[torch.Tensor, Sequence[int]], m: int, seed: int = 0) -> list[torch.Tensor]:
    """TPS indices of every cloud of the concatenated (sumN, C) ``feats`` with END ``offsets``.

    Returns one int64 tensor per cloud (on ``feats.device``) of ``min(m, n_b)`` indices local to
    that cloud, in selection order. On the CPU the distances are computed in float64 from
    ``feats``; elsewhere in its dtype, so give float64 to pick the reference's points.
    """
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise ValueError(f"TPS budget m must be an integer >= 1, got {m!r}")
    m = int(m)
    ends = check_end_offsets(offsets, feats.shape[0])
    starts = [0] + ends[:-1]
    sizes = [e - s for s, e in zip(starts, ends)]
    device = feats.device
    out = [torch.arange(n, device=device) for n in sizes]
    big = [b for b, n in enumerate(sizes) if n > m]
    if not big:
        return out
    if device.type == "cpu":
        h = feats.detach().to(torch.float64).numpy()
        for b in big:
            out[b] = torch.from_numpy(tps_indices(h[starts[b] : ends[b]], m, seed + b))
        return out
    n_max = max(sizes[b] for b in big)
    x = feats.new_zeros(len(big), n_max, feats.shape[1])
    valid = torch.zeros(len(big), n_max, dtype=torch.bool, device=device)
    for row, b in enumerate(big):
        x[row, : sizes[b]] = feats[starts[b] : ends[b]]
        valid[row, : sizes[b]] = True
    rows = torch.arange(len(big), device=device)
    first = torch.tensor([tps_start(sizes[b], seed + b) for b in big], device=device)
    selected = torch.empty(len(big), m, dtype=torch.int64, device=device)
    selected[:, 0] = first
    neg_inf = torch.tensor(-torch.inf, dtype=feats.dtype, device=device)
    d_min = torch.where(valid, _point_dist(x, x[rows, first]), neg_inf)
    d_min[rows, first] = -torch.inf
    for k in range(1, m):
        pick = torch.argmax(d_min, dim=1)
        selected[:, k] = pick
        d_min = torch.minimum(d_min, _point_dist(x, x[rows, pick]))
        d_min[rows, pick] = -torch.inf
    for row, b in enumerate(big):
        out[b] = selected[row]
    return out
