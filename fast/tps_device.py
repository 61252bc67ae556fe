"""Topology-preserving sampling (TPS, paper Algorithm 5) on a GPU, each cloud's steps spread over many programs.

The same farthest-point loop as ``reference.tps_cloud`` and the host kernel
``fast.persistence.sampling.farthest_point_indices`` (decision 14). :func:`tps_device` splits
every cloud into chunks of ``rows_per_program`` rows and runs each of the ``m`` steps as two
launches (decision 42):

* the *pick* launch (one program per cloud and block of centres) reduces the previous step's
  per-chunk maxima to the cloud's first maximiser ``p``, records it as the step's index, marks it
  selected, and computes the distances from ``p`` to the earlier centres (the skip test's input);
* the *scan* launch (one program per chunk) updates its rows' running minima with the distance to
  ``p`` and leaves the chunk's maximum and its first maximiser.

So a batch of 8 clouds of 30,000 points keeps hundreds of programs busy per step instead of 8,
and every launch depends only on the one before it (no grid-wide barrier; the launches of a step
can be replayed from a CUDA graph, and Triton's interpreter runs them one after another on the
CPU). :func:`tps_device_one_program` keeps the former kernel, one program per cloud over all
``m`` steps in one launch: the baseline of ``benchmarks.gpu``'s TPS table. Both return the
reference's indices bit for bit:

* a distance is ``sqrt`` of the sum of squared coordinate differences summed in numpy's order
  for ``C <= 128`` columns (``np.linalg.norm(..., axis=1)``: eight interleaved partial sums,
  combined as ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``, then the last ``C % 8``
  columns one after the other; fewer than 8 columns: one running sum), with floating-point
  contraction off (``enable_fp_fusion=False``: a fused multiply-add rounds once where numpy
  rounds twice) and the correctly rounded square root;
* the next index is the first maximiser of the running minimum, selected points at ``-inf``: each
  thread keeps the first maximum of the points it visits (a strict ``>``), a chunk's reduction
  takes the lowest index among its threads that hold the chunk's maximum, and the pick takes the
  lowest index among the chunks that hold the cloud's maximum (chunks are in row order, so this is
  the first maximiser of the cloud, as ``np.argmax``);
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
The tests run the kernels in Triton's interpreter on the CPU (``TRITON_INTERPRET=1``) against
``reference.tps_cloud``, with small chunks so that a cloud of a few hundred points spans several
programs, and compiled on CUDA.
"""
from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
# points per thread spilled up to 1.7 kB at C = 128, 16 warps up to 312 bytes at C = 64.
BLOCK = 256
ROWS_PER_PROGRAM = 512
"""Rows of a cloud per program of the scan launch: 8 clouds of 30,000 points make 472 programs, a
few per SM of an H100 or H200 (132 SMs). Not yet timed on a GPU: ``benchmarks.gpu``'s TPS table
times 256, 512, 1,024 and 2,048."""
_CENTRE_BLOCK = 128
_PART_BLOCK = 32  # chunk maxima per iteration of the pick (59 chunks per 30,000-point cloud: 2 iterations)
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
def _centre_distances(h_row, idx, centre_dist, p, lo, k, C: tl.constexpr, CENTRE_BLOCK: tl.constexpr):
    """D(centre j, p) into ``centre_dist[j]`` for the centres ``j`` in ``[lo, lo + CENTRE_BLOCK)``
    below ``k``, for the skip test: a plain sum."""
    j = lo + tl.arange(0, CENTRE_BLOCK)
    okj = j < k
    cj = tl.load(idx + j, mask=okj, other=0)
    acc = tl.zeros([CENTRE_BLOCK], tl.float64)
    for c in tl.static_range(C):
        t = tl.load(h_row + cj * C + c, mask=okj, other=0.0) - tl.load(h_row + p * C + c)
        acc += t * t
    tl.store(centre_dist + j, tl.sqrt(acc), mask=okj)


@triton.jit
def _scan_block(h_row, d_min, owner, skip, centre_dist, r, ok, p, k, factor, safe_low, safe_high, best, best_at,
                C: tl.constexpr, BLOCK: tl.constexpr):
    """One block of rows ``r`` (where ``ok``) of step ``k``: their running minima against centre
    ``p`` (skipped where the triangle test rules a change out), then each thread's first maximum so
    far (``best`` at row ``best_at``; rows grow, so a strict ``>`` keeps the earliest)."""
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
    return tl.where(ahead, d, best), tl.where(ahead, r, best_at)


@triton.jit
def _first_of_maxima(best, best_at, none):
    """The maximum of the block ``best`` and the lowest ``best_at`` that holds it (``none`` if none)."""
    top = tl.max(best, axis=0)
    return top, tl.min(tl.where(best == top, best_at, none), axis=0)


@triton.jit(do_not_specialize=["k"])
def _pick_kernel(h_ptr, row_start_ptr, part_start_ptr, part_count_ptr, part_val_ptr, part_at_ptr, idx_ptr, d_min_ptr,
                 skip_ptr, centre_dist_ptr, k, m, C: tl.constexpr, CENTRE_BLOCK: tl.constexpr,
                 PART_BLOCK: tl.constexpr):
    """Step ``k`` of cloud ``program_id(0)``: its first maximiser ``p`` over the chunk maxima of the
    last scan (the lowest row among the chunks that hold the largest value), recorded as
    ``idx[cloud, k]`` and marked selected by the first program of the cloud; every program then
    computes D(centre j, p) for its block ``program_id(1)`` of the centres ``j < k``."""
    cloud = tl.program_id(0)
    start = tl.load(row_start_ptr + cloud)
    first_part = tl.load(part_start_ptr + cloud)
    parts = tl.load(part_count_ptr + cloud)
    top = tl.full([], float("-inf"), tl.float64)
    p = tl.full([], 0, tl.int64)
    for lo in range(0, parts, PART_BLOCK):
        i = lo + tl.arange(0, PART_BLOCK)
        ok = i < parts
        value = tl.load(part_val_ptr + first_part + i, mask=ok, other=float("-inf"))
        at = tl.load(part_at_ptr + first_part + i, mask=ok, other=0)
        block_top, block_at = _first_of_maxima(value, at, tl.full([PART_BLOCK], 2**62, tl.int64))
        ahead = block_top > top  # strictly: an earlier block of chunks keeps a tie
        p = tl.where(ahead, block_at, p)
        top = tl.where(ahead, block_top, top)
    h_row = h_ptr + start * C
    idx = idx_ptr + cloud * m
    if tl.program_id(1) == 0:
        tl.store(idx + k, p)
        tl.store(d_min_ptr + start + p, float("-inf"))  # selected: never computed again, never the maximiser
        tl.store(skip_ptr + start + p, float("-inf"))
    _centre_distances(h_row, idx, centre_dist_ptr + cloud * m, p, tl.program_id(1) * CENTRE_BLOCK, k, C, CENTRE_BLOCK)


@triton.jit(do_not_specialize=["k"])
def _scan_kernel(h_ptr, row_start_ptr, work_cloud_ptr, work_lo_ptr, work_hi_ptr, const_ptr, idx_ptr, d_min_ptr,
                 owner_ptr, skip_ptr, centre_dist_ptr, part_val_ptr, part_at_ptr, k, m, C: tl.constexpr,
                 BLOCK: tl.constexpr):
    """Step ``k`` of chunk ``program_id(0)`` (rows ``lo .. hi`` of its cloud): the running minima
    against the step's centre, then the chunk's maximum and its first maximiser into the partials."""
    w = tl.program_id(0)
    cloud = tl.load(work_cloud_ptr + w)
    lo = tl.load(work_lo_ptr + w)
    hi = tl.load(work_hi_ptr + w)
    start = tl.load(row_start_ptr + cloud)
    p = tl.load(idx_ptr + cloud * m + k)
    factor = tl.load(const_ptr)  # 1 + margin, float64
    safe_low = tl.load(const_ptr + 1)
    safe_high = tl.load(const_ptr + 2)
    best = tl.full([BLOCK], float("-inf"), tl.float64)
    best_at = tl.zeros([BLOCK], tl.int64) + hi
    for b in range(lo, hi, BLOCK):
        r = b + tl.arange(0, BLOCK)
        best, best_at = _scan_block(h_ptr + start * C, d_min_ptr + start, owner_ptr + start, skip_ptr + start,
                                    centre_dist_ptr + cloud * m, r, r < hi, p, k, factor, safe_low, safe_high, best,
                                    best_at, C, BLOCK)
    top, at = _first_of_maxima(best, best_at, hi)
    tl.store(part_val_ptr + w, top)
    tl.store(part_at_ptr + w, at)


@triton.jit
def _one_program_kernel(h_ptr, row_start_ptr, count_ptr, first_ptr, const_ptr, idx_ptr, d_min_ptr, owner_ptr,
                        skip_ptr, centre_dist_ptr, m, C: tl.constexpr, BLOCK: tl.constexpr,
                        CENTRE_BLOCK: tl.constexpr):
    """The whole TPS loop of cloud ``program_id`` (rows ``start .. start + n``, first index
    ``first``) in one program (the baseline): ``idx[cloud, :m]``; ``d_min``, ``owner``, ``skip``
    (per point, initialised by the caller) and ``centre_dist`` (per cloud and centre) are its
    working memory, as in ``farthest_point_indices``."""
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
    factor = tl.load(const_ptr)
    safe_low = tl.load(const_ptr + 1)
    safe_high = tl.load(const_ptr + 2)
    for k in range(m):
        tl.store(idx + k, p)
        for lo in range(0, k, CENTRE_BLOCK):
            _centre_distances(h_row, idx, centre_dist, p, lo, k, C, CENTRE_BLOCK)
        tl.store(d_min + p, -float("inf"))
        tl.store(skip + p, -float("inf"))
        tl.debug_barrier()  # the stores above are read by other threads of the program below
        best = tl.full([BLOCK], float("-inf"), tl.float64)
        best_at = tl.zeros([BLOCK], tl.int64) + n
        for lo in range(0, n, BLOCK):
            r = lo + tl.arange(0, BLOCK)
            best, best_at = _scan_block(h_row, d_min, owner, skip, centre_dist, r, r < n, p, k, factor, safe_low,
                                        safe_high, best, best_at, C, BLOCK)
        p = _first_of_maxima(best, best_at, n)[1]  # the first maximiser of the cloud
        tl.debug_barrier()


@dataclass
class _Batch:
    """A batch's sampled clouds and the one-program kernel's working memory (:meth:`reset`)."""

    picked: list[torch.Tensor]
    sampled: list[int]
    starts: list[int]
    counts: list[int]
    firsts: list[int]
    h: torch.Tensor
    consts: torch.Tensor
    idx: torch.Tensor
    d_min: torch.Tensor
    skip: torch.Tensor
    owner: torch.Tensor
    centre_dist: torch.Tensor

    def reset(self) -> None:
        _reset(self.d_min, self.skip, self.owner, self.centre_dist)

    def result(self) -> list[torch.Tensor]:
        for i, b in enumerate(self.sampled):
            self.picked[b] = self.idx[i]
        return self.picked


def _reset(d_min: torch.Tensor, skip: torch.Tensor, owner: torch.Tensor, centre_dist: torch.Tensor) -> None:
    """The working memory before step 0: ``d_min`` and ``skip`` at +inf (every distance to the first
    centre is computed), ``owner`` at centre 0, whose distance to itself (``centre_dist[:, 0]``) is 0."""
    d_min.fill_(float("inf"))
    skip.fill_(float("inf"))
    owner.zero_()
    centre_dist.zero_()


def _row_counts(ends: Sequence[int]) -> list[int]:
    """Every cloud's row count, from the batch's END offsets."""
    return [e - s for s, e in zip([0, *ends[:-1]], ends)]


def _every_row(counts: Sequence[int], device: torch.device) -> list[torch.Tensor]:
    """Each cloud's indices when TPS keeps all its rows (the clouds of no more than ``m`` rows)."""
    return [torch.arange(n, dtype=torch.int64, device=device) for n in counts]


def _check_feats(feats: torch.Tensor) -> None:
    if feats.dtype != torch.float64 or feats.dim() != 2:
        raise ValueError(f"tps_device takes (sumN, C) float64 features, got {tuple(feats.shape)} {feats.dtype}")
    if not 1 <= feats.shape[1] <= MAX_COLUMNS:
        raise ValueError(f"tps_device sums at most {MAX_COLUMNS} columns in numpy's order, got C = {feats.shape[1]}")


def _clouds(ends: Sequence[int], m: int, seed: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """Every cloud's row count, and the sampled clouds' (more than ``m`` rows) ids, starts and first indices."""
    all_starts = [0, *ends[:-1]]
    all_counts = _row_counts(ends)
    sampled = [b for b, n in enumerate(all_counts) if n > m]
    return all_counts, sampled, [all_starts[b] for b in sampled], [tps_start(all_counts[b], seed + b) for b in sampled]


def _skip_constants(device: torch.device) -> torch.Tensor:
    margin, safe_low, safe_high = TPS_SKIP_CONSTANTS
    return to_device(np.array([1.0 + margin, safe_low, safe_high]), device)  # float64, see the module docstring


def _prepare(feats: torch.Tensor, ends: Sequence[int], m: int, seed: int) -> _Batch:
    """The checked batch of the one-program kernel (no sampled cloud when none has more than ``m`` points)."""
    _check_feats(feats)
    all_counts, sampled, starts, firsts = _clouds(ends, m, seed)
    device = feats.device
    rows = feats.shape[0] if sampled else 0
    return _Batch(_every_row(all_counts, device), sampled, starts,
                  [all_counts[b] for b in sampled], firsts, feats.contiguous(), _skip_constants(device),
                  torch.empty((len(sampled), m), dtype=torch.int64, device=device),
                  torch.empty(rows, dtype=torch.float64, device=device),
                  torch.empty(rows, dtype=torch.float64, device=device),
                  torch.empty(rows, dtype=torch.int64, device=device),
                  torch.empty((len(sampled), m), dtype=torch.float64, device=device))


@dataclass(frozen=True)
class LaunchShape:
    """What the split kernel's launches depend on besides the data: a :class:`TpsLaunches` serves
    every batch of one shape whose rows fit its capacity."""

    device: torch.device
    m: int
    columns: int
    clouds: int  # sampled clouds (more than m rows)
    rows_per_program: int
    block: int


MIN_CAPACITY = 1024
"""Fewest rows a :class:`TpsLaunches` is sized for; capacities are powers of two from there."""


class TpsLaunches:
    """The ``2 m`` launches of :func:`tps_device` for batches of one :class:`LaunchShape`, on
    working memory sized for up to ``capacity`` rows, queued from one place.

    The launches read every per-batch value (the features, the clouds' starts, the chunks of the
    scan, the first indices) from device buffers allocated once, so their arguments do not change
    from batch to batch: :meth:`run` copies a batch into the buffers and queues the launches. The
    scan's grid has a chunk per ``rows_per_program`` rows of the capacity plus one per cloud (a
    cloud's last, partial chunk); the chunks a batch does not use span no rows (they store an empty
    maximum that no pick reads). On CUDA the launches are captured once in a CUDA graph, which each
    later batch replays: queueing them one by one costs the calling thread about 40 us each (2,048 a
    step at m = 1,024, 73-90 ms on an H100, docs/notes/gpu-campaign-h100.md), a replay well under a
    millisecond. Elsewhere (Triton's interpreter on the CPU) they are queued one by one.
    """

    def __init__(self, shape: LaunchShape, capacity: int) -> None:
        self.shape, self.capacity = shape, capacity
        clouds, device = shape.clouds, shape.device
        self.chunks = capacity // shape.rows_per_program + clouds
        f64 = {"dtype": torch.float64, "device": device}
        i64 = {"dtype": torch.int64, "device": device}
        self.h = torch.zeros((capacity, shape.columns), **f64)
        self.d_min, self.skip = torch.empty(capacity, **f64), torch.empty(capacity, **f64)
        self.owner = torch.empty(capacity, **i64)
        self.idx, self.centre_dist = torch.empty((clouds, shape.m), **i64), torch.empty((clouds, shape.m), **f64)
        self.consts = _skip_constants(device)
        # per batch: starts, part_start, part_count (a cloud each); work cloud, lo, hi, first_at (a chunk each)
        self.plan = torch.zeros(3 * clouds + 4 * self.chunks, **i64)
        self.first_val = torch.empty(self.chunks, **f64)
        self.part_val, self.part_at = torch.empty(self.chunks, **f64), torch.empty(self.chunks, **i64)
        # the launches' arguments, as views made once (a view per launch was 7 selects a step)
        self.starts, self.part_start, self.part_count = self.plan[:3 * clouds].view(3, clouds).unbind(0)
        per_chunk = self.plan[3 * clouds:].view(4, self.chunks)
        self.work_cloud, self.work_lo, self.work_hi, self.first_at = per_chunk.unbind(0)
        self.graph: "torch.cuda.CUDAGraph | object | None" = None  # captured at the first CUDA run
        # one batch in the buffers at a time: the calling threads take turns, and on CUDA a batch
        # queued on another stream waits on the device for the last one's indices to be copied out
        self._lock = threading.Lock()
        self._read: "torch.cuda.Event | None" = None

    def fits(self, rows: int) -> bool:
        return rows <= self.capacity

    def run(self, feats: torch.Tensor, ends: Sequence[int], seed: int) -> list[torch.Tensor]:
        """Queue TPS of ``feats`` (checked, at most ``capacity`` rows, ``shape.clouds`` sampled
        clouds) on the current stream; every cloud's indices, without waiting for the device."""
        with self._lock:
            return self._run(feats, ends, seed)

    def _run(self, feats: torch.Tensor, ends: Sequence[int], seed: int) -> list[torch.Tensor]:
        device = self.shape.device
        if self._read is not None:
            torch.cuda.current_stream(device).wait_event(self._read)
        m = self.shape.m
        all_counts, sampled, starts, firsts = _clouds(ends, m, seed)
        chunks = [(i, lo, min(lo + self.shape.rows_per_program, all_counts[b]))
                  for i, b in enumerate(sampled) for lo in range(0, all_counts[b], self.shape.rows_per_program)]
        part_start = np.searchsorted([c for c, _, _ in chunks], np.arange(len(sampled)))
        work = np.zeros((4, self.chunks), dtype=np.int64)  # unused chunks: cloud 0, no rows
        work[:3, :len(chunks)] = np.array(chunks, dtype=np.int64).T
        work[3, part_start] = firsts  # step 0's "chunk maxima": each cloud's first index in its first chunk
        first_val = np.full(self.chunks, -np.inf)
        first_val[part_start] = 0.0
        plan = np.concatenate([starts, part_start, np.diff(np.append(part_start, len(chunks))), work.ravel()])
        self.plan.copy_(to_device(plan.astype(np.int64), device))
        self.first_val.copy_(to_device(first_val, device))
        self.h[:feats.shape[0]].copy_(feats)
        self._queue()
        idx = self.idx.clone()  # the buffer is the next batch's
        if device.type == "cuda":
            self._read = torch.cuda.Event()
            self._read.record(torch.cuda.current_stream(device))
        picked = _every_row(all_counts, feats.device)
        for i, b in enumerate(sampled):
            picked[b] = idx[i]
        return picked

    def _queue(self) -> None:
        if self.shape.device.type != "cuda":
            self._launch()
            return
        if self.graph is None:
            self._launch()  # compiles the kernels on first use, and is this batch's result
            self.graph = _captured(self._launch)
            return
        if self.graph is _NO_GRAPH:
            self._launch()
            return
        self.graph.replay()

    def _launch(self) -> None:
        """Queue the ``2 m`` launches (one pick and one scan per step) on the buffers."""
        shape = self.shape
        _reset(self.d_min, self.skip, self.owner, self.centre_dist)
        self.part_val.copy_(self.first_val)
        self.part_at.copy_(self.first_at)
        for k in range(shape.m):
            _pick_kernel[(shape.clouds, max(1, triton.cdiv(k, _CENTRE_BLOCK)))](
                self.h, self.starts, self.part_start, self.part_count, self.part_val, self.part_at, self.idx,
                self.d_min, self.skip, self.centre_dist, k, shape.m, C=shape.columns, CENTRE_BLOCK=_CENTRE_BLOCK,
                PART_BLOCK=_PART_BLOCK, **_OPTIONS)
            if k + 1 < shape.m:
                _scan_kernel[(self.chunks,)](
                    self.h, self.starts, self.work_cloud, self.work_lo, self.work_hi, self.consts, self.idx, self.d_min,
                    self.owner, self.skip, self.centre_dist, self.part_val, self.part_at, k, shape.m, C=shape.columns,
                    BLOCK=shape.block, **_OPTIONS)


_NO_GRAPH = object()  # the capture failed: the launches are queued one by one


def _captured(launch: Callable[[], None]) -> "torch.cuda.CUDAGraph | object":
    """``launch``'s kernels recorded (not run) in a CUDA graph, or :data:`_NO_GRAPH` with a warning
    where this driver or build cannot capture them (TPS stays right, only slower to queue)."""
    graph = torch.cuda.CUDAGraph()
    try:
        # thread-local: the host-copy thread (fast.transfer) may wait on an event meanwhile
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            launch()
    except RuntimeError as error:
        warnings.warn(f"fast.tps_device: the TPS launches could not be captured in a CUDA graph ({error}); "
                      "they are queued one by one instead", RuntimeWarning, stacklevel=3)
        return _NO_GRAPH
    return graph


_launches: dict[LaunchShape, TpsLaunches] = {}
_launches_lock = threading.Lock()


def launches_for(shape: LaunchShape, rows: int) -> TpsLaunches:
    """The process's :class:`TpsLaunches` of ``shape``, replaced by one of twice the capacity (a
    power of two, at least :data:`MIN_CAPACITY`) when ``rows`` do not fit: a training run's batches
    of one size settle on one set of buffers, and on CUDA one graph, after a few steps."""
    with _launches_lock:
        held = _launches.get(shape)
        if held is None or not held.fits(rows):
            capacity = max(MIN_CAPACITY, 1 << (rows - 1).bit_length())
            held = _launches[shape] = TpsLaunches(shape, capacity)
        return held


def tps_device(feats: torch.Tensor, ends: Sequence[int], m: int, seed: int, *,
               rows_per_program: int = ROWS_PER_PROGRAM, block: int = BLOCK) -> list[torch.Tensor]:
    """TPS indices (``min(m, n_b)`` int64 each, on ``feats.device``) of every cloud of the (sumN, C)
    float64 ``feats`` with END offsets ``ends`` (checked by the caller), without waiting for the
    device: cloud ``b`` starts at ``tps_start(n_b, seed + b)``; ``reference.tps`` of ``feats``, bit
    for bit. Each cloud's rows are split into chunks of ``rows_per_program`` rows, scanned ``block``
    rows (a power of two) per iteration; a step is one pick and one scan launch, queued by the
    process's :class:`TpsLaunches` of the batch's shape (:func:`launches_for`; on CUDA a graph replay)."""
    _check_feats(feats)
    if rows_per_program < 1 or block < 8 or block & (block - 1):
        raise ValueError(f"tps_device needs rows_per_program >= 1 and a power-of-two block >= 8, got "
                         f"{rows_per_program} and {block}")
    counts = _row_counts(ends)
    sampled = sum(n > m for n in counts)
    if not sampled:
        return _every_row(counts, feats.device)
    shape = LaunchShape(feats.device, m, feats.shape[1], sampled, rows_per_program, block)
    return launches_for(shape, feats.shape[0]).run(feats, ends, seed)


def tps_device_one_program(feats: torch.Tensor, ends: Sequence[int], m: int, seed: int) -> list[torch.Tensor]:
    """:func:`tps_device` with one program per cloud over all ``m`` steps, in one launch (the former
    kernel: 8 clouds use 8 SMs), kept as the baseline of ``benchmarks.gpu``; the same indices."""
    batch = _prepare(feats, ends, m, seed)
    if not batch.sampled:
        return batch.picked
    batch.reset()
    plan = to_device(np.array([batch.starts, batch.counts, batch.firsts], dtype=np.int64), feats.device)
    _one_program_kernel[(len(batch.counts),)](
        batch.h, plan[0], plan[1], plan[2], batch.consts, batch.idx, batch.d_min, batch.owner, batch.skip,
        batch.centre_dist, m, C=feats.shape[1], BLOCK=BLOCK, CENTRE_BLOCK=_CENTRE_BLOCK, **_OPTIONS)
    return batch.result()
