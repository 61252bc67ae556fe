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
float64 distances summed in another order than the reference's). On CUDA the same loop runs on
the device instead, each cloud's steps spread over many Triton programs (``fast.tps_device``,
same indices), where :func:`auto_tps_place` finds that it can: Triton imports, the kernel compiles
for this GPU and these channels (at most 128), and it returns the host kernel's indices on a
small check batch. That choice is made once per process, device and channel count; training's
``--topo-tps auto`` takes it too (decision 42).
"""
from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Sequence
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
    if auto_tps_place(feats.device, feats.shape[1])[0] == "device":
        from fast.tps_device import tps_device  # imports Triton: only here

        return tps_device(feats.detach().to(torch.float64), ends, m, seed)
    starts = [0] + ends[:-1]
    # the host copy (if not there already) only when some cloud has more than m points
    h = feats.detach().to(torch.float64).cpu().numpy() if max(e - s for s, e in zip(starts, ends)) > m else None
    picked = [tps_indices(h[s:e], m, seed + b) if e - s > m else np.arange(e - s, dtype=np.int64)
              for b, (s, e) in enumerate(zip(starts, ends))]
    return list(torch.split(to_device(np.concatenate(picked), feats.device), [len(p) for p in picked]))


# The check batch of the device kernel (small: on a GPU its cost is the kernel's compilation):
# clustered points, where the triangle skip is active, and an integer grid, whose many exactly
# tied distances test the first-maximiser rule across blocks of points.
_CHECK_POINTS, _CHECK_M = 300, 40


def _check_clouds(columns: int) -> list[np.ndarray]:
    """The two (300, ``columns``) float64 clouds of the device kernel's self-check."""
    rng = np.random.default_rng(42)
    centres = rng.normal(size=(4, columns)) * 4.0
    clustered = centres[rng.integers(4, size=_CHECK_POINTS)] + rng.normal(size=(_CHECK_POINTS, columns))
    grid = rng.integers(-2, 3, size=(_CHECK_POINTS, columns)).astype(np.float64)
    return [clustered, grid]


def device_self_check(device: torch.device, columns: int) -> str:
    """Why ``fast.tps_device`` cannot serve TPS of ``columns``-channel features on ``device``, or
    "" when it can: it runs on the check batch there (compiling the kernel, so a failure is caught
    here once, not in a training step) and returns the host kernel's indices, bit for bit."""
    clouds = _check_clouds(columns)
    ends = list(np.cumsum([len(c) for c in clouds]))
    try:
        from fast.tps_device import BLOCK, tps_device  # imports Triton: only here

        # chunks of one block: each 300-point cloud spans two programs (training's compiled kernel)
        got = tps_device(torch.tensor(np.concatenate(clouds), device=device), ends, _CHECK_M, 0,
                         rows_per_program=BLOCK)
        got_host = [rows.cpu().numpy() for rows in got]
    # a compile or launch failure of any kind (Triton's, the driver's, the column limit's): what
    # it says is the reason given, and the host kernel serves TPS instead
    except Exception as error:
        message = (str(error).strip().splitlines() or [""])[0]
        return f"{type(error).__name__}: {message}"
    for b, (cloud, rows) in enumerate(zip(clouds, got_host)):
        if not np.array_equal(rows, tps_indices(cloud, _CHECK_M, b)):
            return f"its indices differ from the host kernel's on check cloud {b}"
    return ""


def choose_tps_place(on_cuda: bool, has_triton: bool, self_check: Callable[[], str]) -> tuple[str, str]:
    """Where ``auto`` runs TPS, ``"device"`` or ``"host"``, and why (one clause): the Triton kernel
    for CUDA features where Triton imports and ``self_check()`` (:func:`device_self_check`,
    called only then) reports no problem, the host kernel otherwise."""
    if not on_cuda:
        return "host", "the features are not on a CUDA device"
    if not has_triton:
        return "host", "Triton is not installed (it comes with CUDA builds of torch)"
    problem = self_check()
    if problem:
        return "host", f"the Triton kernel failed its start-up check ({problem})"
    return "device", "the Triton kernel compiled for this GPU and returned the host kernel's indices on a check batch"


@functools.lru_cache(maxsize=None)
def auto_tps_place(device: torch.device, columns: int) -> tuple[str, str]:
    """:func:`choose_tps_place` for ``columns``-channel features on ``device``, decided once per
    process (the self-check compiles and runs the device kernel)."""
    return choose_tps_place(device.type == "cuda", importlib.util.find_spec("triton") is not None,
                            lambda: device_self_check(device, columns))
