"""Topology-preserving sampling (TPS, paper Algorithm 5) on a GPU: one Triton kernel launch per batch.

The same farthest-point loop as ``reference.tps_cloud`` and the host kernel
``fast.persistence.sampling.farthest_point_indices`` (decision 14), run by one Triton program
per cloud over all ``m`` steps, so a batch costs one launch instead of ``m`` launches of small
kernels (decision 42). Its indices are the reference's bit for bit:

* a distance is ``sqrt`` of the sum of squared coordinate differences summed in numpy's order
  for ``C <= 128`` columns (``np.linalg.norm(..., axis=1)``: eight interleaved partial sums,
  combined as ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``, then the last ``C % 8``
  columns one after the other; fewer than 8 columns: one running sum), with floating-point
  contraction off (``enable_fp_fusion=False``: a fused multiply-add rounds once where numpy
  rounds twice) and the correctly rounded square root;
* the next index is the first maximiser of the running minimum, selected points at ``-inf``: each
  thread keeps the first maximum of the points it visits, and one reduction per step picks the
  lowest index among the threads that hold the overall maximum;
* the triangle-inequality skip of the host kernel, with its thresholds (``2 d (1 + 1e-9)`` for
  ``d`` in ``[1e-100, 1e100]``, ``-inf`` for ``d <= 0``, ``+inf`` otherwise; the safety argument
  is in ``fast/persistence/sampling.py``), so most points read three numbers per step instead of
  their C features. The centre-to-centre distances the test reads are a plain sum (accuracy is
  all the test needs).

Written by hand: the farthest-point samplers of point-cloud libraries do not return the
reference's indices (torch-cluster's ``fps`` sums distances in torch's order, not numpy's, so a
near-tie can go the other way, and has no wheels here; Pointcept's pointops samples 3-d float32
coordinates only).

The constants of the skip test reach the kernel as float64 values in a tensor: a Python float
given to a Triton kernel is a float32, in which ``1 + 1e-9`` is 1 and ``1e100`` is inf.

Triton is optional (it comes with CUDA builds of torch): this module imports it, and ``fast.tps``
imports this module only on CUDA where Triton is installed. Features with more than 128 columns
(numpy's pairwise recursion above one block) are refused; ``fast.tps`` then keeps the host kernel.
The tests run the kernel in Triton's interpreter on the CPU (``TRITON_INTERPRET=1``) against
``reference.tps_cloud``, and compiled on CUDA.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import triton
import triton.language as tl

from fast.persistence import TPS_SKIP_CONSTANTS, tps_start
from fast.transfer import to_device

MAX_COLUMNS = 128  # numpy's pairwise-summation block: one block of eight interleaved sums
# Points per inner iteration of a program (one per thread of its 8 warps) and centres per
# iteration of the centre-distance loop. Compiled for sm_90 here without a GPU (``ptxas -v``):
# 256 points on 8 warps use 54-251 registers and spill nothing for C = 3, 8, 13, 64, 100, 128; two
# points per thread spilled up to 1.7 kB at C = 128, 16 warps up to 312 bytes at C = 64. Not yet
# timed on a GPU (the campaign's ``tps`` section measures the kernel).
_BLOCK = 256
_CENTRE_BLOCK = 128
_OPTIONS = {"num_warps": 8, "enable_fp_fusion": False}  # no contraction: see the module docstring


@triton.jit
def _sum_sq(h_row, r, centre, need, C: tl.constexpr, BLOCK: tl.constexpr):
    """Sum over c of (h[r, c] - h[centre, c])**2 for the rows ``r`` where ``need``, in numpy's order."""
    if C < 8:
        res = tl.zeros([BLOCK], tl.float64)
        for c in tl.static_range(C):
            t = tl.load(h_row + r * C + c, mask=need, other=0.0) - tl.load(h_row + centre * C + c)
            res += t * t
    else:
        lanes = tl.arange(0, 8)
        x = tl.load(h_row + r[:, None] * C + lanes[None, :], mask=need[:, None], other=0.0)
        t = x - tl.load(h_row + centre * C + lanes)[None, :]
        acc = t * t
        for g in tl.static_range(1, C // 8):
            x = tl.load(h_row + r[:, None] * C + (g * 8 + lanes)[None, :], mask=need[:, None], other=0.0)
            t = x - tl.load(h_row + centre * C + g * 8 + lanes)[None, :]
            acc += t * t
        # lane i = 4a + 2b + c: summing c, then b, then a is numpy's ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))
        res = tl.sum(tl.sum(tl.sum(tl.reshape(acc, [BLOCK, 2, 2, 2]), axis=3), axis=2), axis=1)
        for c in tl.static_range(C - C % 8, C):
            t = tl.load(h_row + r * C + c, mask=need, other=0.0) - tl.load(h_row + centre * C + c)
            res += t * t
    return res


@triton.jit
def _tps_kernel(h_ptr, row_start_ptr, count_ptr, first_ptr, const_ptr, idx_ptr, d_min_ptr, owner_ptr,
                skip_ptr, centre_dist_ptr, m, C: tl.constexpr, BLOCK: tl.constexpr, CENTRE_BLOCK: tl.constexpr):
    """The TPS loop of cloud ``program_id`` (rows ``start .. start + n``, first index ``first``)
    into ``idx[cloud, :m]``; ``d_min``, ``owner``, ``skip`` (per point) and ``centre_dist`` (per
    cloud and centre) are its working memory, as in ``farthest_point_indices``."""
    cloud = tl.program_id(0)
    start = tl.load(row_start_ptr + cloud)
    n = tl.load(count_ptr + cloud)
    p = tl.load(first_ptr + cloud)
    h_row = h_ptr + start * C
    d_min = d_min_ptr + start
    owner = owner_ptr + start
    skip = skip_ptr + start
    idx = idx_ptr + cloud * m
    centre_dist = centre_dist_ptr + cloud * m
    factor = tl.load(const_ptr)  # 1 + margin, float64
    safe_low = tl.load(const_ptr + 1)
    safe_high = tl.load(const_ptr + 2)
    inf = tl.full([BLOCK], float("inf"), tl.float64)
    for lo in range(0, n, BLOCK):
        r = lo + tl.arange(0, BLOCK)
        ok = r < n
        tl.store(d_min + r, inf, mask=ok)  # no centre yet: every distance to the first is computed
        tl.store(skip + r, inf, mask=ok)
        tl.store(owner + r, tl.zeros([BLOCK], tl.int64), mask=ok)
    tl.store(centre_dist, tl.zeros([], tl.float64))
    for k in range(m):
        tl.store(idx + k, p)
        for lo in range(0, k, CENTRE_BLOCK):  # D(centre j, p) for the skip test: a plain sum
            j = lo + tl.arange(0, CENTRE_BLOCK)
            okj = j < k
            cj = tl.load(idx + j, mask=okj, other=0)
            acc = tl.zeros([CENTRE_BLOCK], tl.float64)
            for c in tl.static_range(C):
                t = tl.load(h_row + cj * C + c, mask=okj, other=0.0) - tl.load(h_row + p * C + c)
                acc += t * t
            tl.store(centre_dist + j, tl.sqrt(acc), mask=okj)
        tl.store(d_min + p, -float("inf"))  # selected: never computed again, never the maximiser
        tl.store(skip + p, -float("inf"))
        tl.debug_barrier()  # the stores above are read by other threads of the program below
        # each thread keeps the first maximum of the points it sees (their index grows, so a strict
        # ">" keeps the earliest); one reduction per step then takes the first of the maximisers
        best = tl.full([BLOCK], float("-inf"), tl.float64)
        best_at = tl.zeros([BLOCK], tl.int64) + n
        for lo in range(0, n, BLOCK):
            r = lo + tl.arange(0, BLOCK)
            ok = r < n
            threshold = tl.load(skip + r, mask=ok, other=float("-inf"))
            dc = tl.load(centre_dist + tl.load(owner + r, mask=ok, other=0), mask=ok, other=0.0)
            need = ok & ~(dc > threshold)
            e = tl.sqrt(_sum_sq(h_row, r, p, need, C, BLOCK))
            d = tl.load(d_min + r, mask=ok, other=float("-inf"))
            better = need & (e < d)
            d = tl.where(better, e, d)
            in_range = (e >= safe_low) & (e <= safe_high)
            new_skip = tl.where(e <= 0.0, float("-inf"), tl.where(in_range, 2.0 * e * factor, float("inf")))
            tl.store(d_min + r, d, mask=better)
            tl.store(skip + r, new_skip, mask=better)
            tl.store(owner + r, tl.zeros([BLOCK], tl.int64) + k, mask=better)
            ahead = d > best  # strictly: an earlier point keeps a tie
            best = tl.where(ahead, d, best)
            best_at = tl.where(ahead, r, best_at)
        top = tl.max(best, axis=0)
        p = tl.min(tl.where(best == top, best_at, n), axis=0)  # the first maximiser of the cloud
        tl.debug_barrier()


def tps_device(feats: torch.Tensor, ends: Sequence[int], m: int, seed: int) -> list[torch.Tensor]:
    """TPS indices (``min(m, n_b)`` int64 each, on ``feats.device``) of every cloud of the (sumN, C)
    float64 ``feats`` with END offsets ``ends`` (checked by the caller), in one launch and without
    waiting for it: cloud ``b`` starts at ``tps_start(n_b, seed + b)``; ``reference.tps`` of
    ``feats``, bit for bit."""
    if feats.dtype != torch.float64 or feats.dim() != 2:
        raise ValueError(f"tps_device takes (sumN, C) float64 features, got {tuple(feats.shape)} {feats.dtype}")
    columns = feats.shape[1]
    if not 1 <= columns <= MAX_COLUMNS:
        raise ValueError(f"tps_device sums at most {MAX_COLUMNS} columns in numpy's order, got C = {columns}")
    starts = [0] + list(ends[:-1])
    counts = [e - s for s, e in zip(starts, ends)]
    sampled = [b for b, n in enumerate(counts) if n > m]
    device = feats.device
    picked = [torch.arange(n, dtype=torch.int64, device=device) for n in counts]
    if not sampled:
        return picked
    h = feats.contiguous()
    # each sampled cloud's first row, size and first index: one copy to the device
    plan = to_device(np.array([[starts[b] for b in sampled], [counts[b] for b in sampled],
                               [tps_start(counts[b], seed + b) for b in sampled]], dtype=np.int64), device)
    margin, safe_low, safe_high = TPS_SKIP_CONSTANTS
    consts = to_device(np.array([1.0 + margin, safe_low, safe_high]), device)  # float64, see above
    idx = torch.empty((len(sampled), m), dtype=torch.int64, device=device)
    d_min = torch.empty(h.shape[0], dtype=torch.float64, device=device)
    skip = torch.empty_like(d_min)
    owner = torch.empty(h.shape[0], dtype=torch.int64, device=device)
    centre_dist = torch.empty((len(sampled), m), dtype=torch.float64, device=device)
    _tps_kernel[(len(sampled),)](
        h, plan[0], plan[1], plan[2], consts, idx, d_min, owner, skip, centre_dist,
        m, C=columns, BLOCK=_BLOCK, CENTRE_BLOCK=_CENTRE_BLOCK, **_OPTIONS,
    )
    for i, b in enumerate(sampled):
        picked[b] = idx[i]
    return picked
