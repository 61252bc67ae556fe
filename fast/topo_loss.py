"""Batched feature-space topological distillation loss in torch, paper Algorithm 1 (with Algorithm 3).

Torch twin of ``reference.topo_loss``. For every cloud b of a batch given as
concatenated rows with END offsets (the PTv3 layout): normalise student and teacher over the cloud
(decision 13), select ``min(m, n_b)`` points by TPS on the normalised teacher with seed ``seed + b``
(Algorithm 5, decision 14), compute the H0/H1 Rips diagrams of both selections with their critical
edges (``fast.persistence``), sum the PWCD of each requested dimension (Eq. 2-3, decision 11), or
one of the alternative distances (``distance``: Sinkhorn OT, decision 31; TopKD's persistence
images, decision 32), and average over the clouds.

How the gradient flows (Theorem 1, Eq. 1, Algorithm 3): the pairing is discrete and comes from
the engine; every student birth/death value is then the length of its critical edge, computed by
``fast.routing.EdgeLengths`` from the normalised student features, so autograd carries the PWCD
gradient (Algorithm 4) to the critical edges and the edge gradients to the features with index
scatters (decision 5), then through the normalisation to the raw features (``loss`` normalises
with autograd only the TPS rows, from statistics of whole clouds, so the backward's full-size
passes are those of the statistics alone). H1 deaths go to the
single longest edge of the death triangle that the engine reports (decision 4); ``tie_tol > 0``
(splitting among near-tied edges) is therefore not offered here.

Precision. The discrete choices (TPS argmax, the engine's filtration order) are taken on float64
copies of the normalised features, as in the reference; the differentiable values are computed in
the working dtype: float64 for float64 inputs, float32 otherwise (float16/bfloat16 are upcast).
Teacher diagram values are read from the engine's float64 distances.

Asynchronous use (training): :class:`TopoLossJob` splits the work so that persistence runs in the
engine's worker processes while the GPU does other work::

    job = TopoLossJob(teacher_out.embedding, offsets)   # teacher diagrams start now
    student_out = student(batch)
    job.submit_student(student_out.embedding)           # student diagrams start now
    ...                                                 # other losses, other GPU work
    loss_topo = job.loss()                              # joins; differentiable scalar

On the CPU, with the worker pool, each teacher cloud is one task of the engine's pool: TPS
(Algorithm 5, the compiled kernel ``fast.persistence.tps_indices``), then the teacher diagrams of the selected points, all in
one worker process; the selected rows come back as soon as TPS is done, and the student task of
that cloud starts from them without any work in the calling process. On another device TPS runs
batched there (``fast.tps``) and the selected points go to the pool or, where
``fast.persistence.DEFAULT_PATHS`` says so (decision 34), to the device batch path.

:func:`topo_loss` is exactly those three calls in a row. Time budget (decision 6c): each cloud's
H1 gets ``time_budget`` seconds of its own computation (time in the queue does not count); if the
H1 of the teacher or the student of a cloud misses it, that cloud's loss uses H0 only for this
step (the event is logged and counted by ``fast.persistence.budget_miss_count``, and per model in
:attr:`TopoLossJob.h1_misses`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Optional, Union

import numpy as np
import torch

from fast.routing import edge_lengths
from fast.persistence import (
    CloudPersistence,
    H1Engine,
    PersistencePool,
    Runner,
    check_time_budget,
    default_runner,
    resolve_engine,
    submit_diagrams,
    submit_tps_diagrams,
)
from fast.normalize import MODES, check_end_offsets
from fast.normalize import normalize as normalize_clouds
from fast.persistence_image import persistence_image_distance
from fast.pwcd import pwcd
from fast.sinkhorn import sinkhorn_distance
from fast.tps import tps
# the method's defaults and option checks are defined once, with the reference
from reference.persistence_image import DEFAULT_PI_NORM
from reference.sinkhorn import DEFAULT_SINKHORN_EPS
from reference.topo_loss import DEFAULT_M, DISTANCES, check_distance  # noqa: F401 (re-exported to train)

Offsets = Union[torch.Tensor, Sequence[int]]

def _check_feats(feats: torch.Tensor, name: str) -> None:
    if not isinstance(feats, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, C), got {type(feats).__name__}")
    if feats.ndim != 2 or feats.shape[0] == 0 or feats.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (N, C) feature tensor, got shape {tuple(feats.shape)}")
    if not feats.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {feats.dtype}")
    # min and max propagate NaN and reach +-Inf: one pass without a mask as large as the features
    if not bool(torch.isfinite(torch.stack(torch.aminmax(feats.detach()))).all()):
        bad = int((~torch.isfinite(feats.detach())).sum())
        raise ValueError(f"{name} contains {bad} NaN/Inf entries; features must be finite (check the model output)")


def _check_options(m: int, normalize: str, tie_tol: float, eps_w: float, eps_dist: float,
                   dims: Sequence[int]) -> tuple[int, ...]:
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise ValueError(f"TPS budget m must be an integer >= 1, got {m!r}")
    if normalize not in MODES:
        raise ValueError(f"normalize must be one of {MODES}, got {normalize!r}")
    if tie_tol != 0.0:
        raise ValueError(
            f"tie_tol={tie_tol}: the fast path routes each H1 death to the single longest edge its engine "
            "reports (decision 4), which is the tie_tol=0 rule; use tie_tol=0 here, or "
            "reference.topo_loss for a tolerance"
        )
    if not eps_w > 0:
        raise ValueError(f"eps_w must be > 0, got {eps_w}")
    if not eps_dist >= 0:
        raise ValueError(f"eps_dist must be >= 0, got {eps_dist}")
    dims_t = tuple(int(d) for d in dims)
    if not dims_t or len(set(dims_t)) != len(dims_t) or not set(dims_t) <= {0, 1}:
        raise ValueError(f"dims must be a non-empty subset of (0, 1) without repeats, got {dims!r}")
    return dims_t


def _normalized_entropy(weights: torch.Tensor) -> float:
    """``-sum p log p / log K`` of ``p = weights / sum(weights)`` over K >= 2 entries (0 log 0 = 0; 0 if all 0)."""
    total = weights.sum()
    if not bool(total > 0):
        return 0.0
    p = weights / total
    p = p[p > 0]
    return float(-(p * p.log()).sum() / math.log(weights.numel()))


def _working_dtype(*feats: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half and bfloat16 are upcast)."""
    return torch.float64 if any(f.dtype == torch.float64 for f in feats) else torch.float32


class TopoLossJob:
    """Algorithm 1 for one batch, started in two halves and joined by :meth:`loss`.

    Construction validates the teacher features and all options, normalises the teacher and
    starts TPS and the teacher diagrams (non-blocking). :meth:`submit_student`
    does the same for the student; :meth:`loss` waits for both and returns the differentiable
    scalar. Arguments are those of :func:`topo_loss`; ``pool`` picks where the diagrams run, a
    worker pool or a ``DeviceBatch`` (None = the default path for the features' device). After :meth:`loss`, :attr:`h1_misses` counts per model
    (``"teacher"``, ``"student"``) the clouds whose H1 missed the time budget.
    """

    def __init__(
        self,
        teacher_feats: torch.Tensor,
        offsets: Offsets,
        m: int = DEFAULT_M,
        seed: int = 0,
        normalize: str = "scale",
        tie_tol: float = 0.0,
        eps_w: float = 1e-8,
        eps_dist: float = 1e-12,
        dims: Sequence[int] = (0, 1),
        distance: str = "pwcd",
        sinkhorn_eps: float = DEFAULT_SINKHORN_EPS,
        pi_norm: str = DEFAULT_PI_NORM,
        engine: Union[str, H1Engine, None] = None,
        time_budget: Optional[float] = None,
        pool: Optional[Runner] = None,
    ) -> None:
        _check_feats(teacher_feats, "teacher_feats")
        self.dims = _check_options(m, normalize, tie_tol, eps_w, eps_dist, dims)
        check_distance(distance, sinkhorn_eps, pi_norm)
        self.distance, self.sinkhorn_eps, self.pi_norm = distance, float(sinkhorn_eps), pi_norm
        self.ends = check_end_offsets(offsets, teacher_feats.shape[0], min_points=2)
        self.m, self.seed, self.normalize = int(m), int(seed), normalize
        self.eps_w, self.eps_dist = float(eps_w), float(eps_dist)
        self.engine, self.time_budget = resolve_engine(engine), time_budget
        self.teacher_rows, self.teacher_dtype = teacher_feats.shape[0], teacher_feats.dtype
        self.device = teacher_feats.device
        self.h1_misses: Optional[dict[str, int]] = None
        check_time_budget(time_budget)
        with_h1 = 1 in self.dims
        with torch.no_grad():
            teacher64 = self._normalized(teacher_feats.detach().to(torch.float64))
        # where the diagrams run: the worker pool or the device batch path (decision 34)
        self.runner = default_runner(str(self.device)) if pool is None else pool
        if self.device.type == "cpu" and isinstance(self.runner, PersistencePool):
            # TPS and the diagrams of each cloud in one worker
            self._rows, self._teacher = submit_tps_diagrams(
                self._clouds(teacher64), self.m, self.seed, self.engine, self.runner, time_budget, with_h1,
                "teacher cloud")
        else:  # TPS batched on the device, the selected points to the runner
            local = tps(teacher64, self.ends, self.m, self.seed)
            self._rows = [_done(idx.cpu().numpy()) for idx in local]
            self._teacher = submit_diagrams(self._clouds(teacher64), self.engine, self.runner, time_budget, with_h1,
                                            "teacher cloud", rows=self._rows)
        self._student: Optional[list[Future]] = None
        self._student_feats: Optional[torch.Tensor] = None
        self._student_normalized: Optional[torch.Tensor] = None  # the TPS rows, normalised, from loss()
        self._sizes: list[int] = []  # TPS rows per cloud
        self._loss: Optional[torch.Tensor] = None
        self._student_pairs: list[torch.Tensor] = []

    def _normalized(self, feats: torch.Tensor) -> torch.Tensor:
        return normalize_clouds(feats, self.ends, self.normalize)

    def _clouds(self, feats64: torch.Tensor) -> list[np.ndarray]:
        """The (n_b, C) float64 rows of every cloud, on the host."""
        return np.split(feats64.cpu().numpy(), self.ends[:-1])

    def submit_student(self, student_feats: torch.Tensor) -> "TopoLossJob":
        """Normalise the student features (keeping the autograd graph) and start their diagrams."""
        _check_feats(student_feats, "student_feats")
        if student_feats.shape[0] != self.teacher_rows:
            raise ValueError(
                f"student_feats has {student_feats.shape[0]} rows but teacher_feats has {self.teacher_rows}; "
                "both must hold the same points in the same order"
            )
        if student_feats.device != self.device:
            raise ValueError(
                f"student_feats is on {student_feats.device} but teacher_feats on {self.device}; "
                "move both to the same device"
            )
        if self._student is not None:
            raise RuntimeError("TopoLossJob.submit_student was already called; create a new job per step")
        dtype = _working_dtype(student_feats, torch.empty(0, dtype=self.teacher_dtype))
        with torch.no_grad():
            student64 = self._normalized(student_feats.detach().to(torch.float64))
        self._student_feats = student_feats.to(dtype)  # normalised with autograd in loss()
        self._student = submit_diagrams(self._clouds(student64), self.engine, self.runner, self.time_budget,
                                        1 in self.dims, "student cloud", rows=self._rows)
        return self

    def loss(self) -> torch.Tensor:
        """Wait for the diagrams and return the mean over clouds of sum_d PWCD_d (scalar tensor)."""
        if self._student is None or self._student_feats is None:
            raise RuntimeError("TopoLossJob.loss: call submit_student(student_feats) first")
        # Only the TPS rows enter the loss: the differentiable normalisation (statistics of whole
        # clouds, decision 13) returns just those rows, so its backward touches little else. The
        # rows are known long before the diagrams: normalise while the engine still works.
        selected = [r.result() for r in self._rows]
        self._sizes = [len(r) for r in selected]
        picked = torch.from_numpy(np.concatenate([r + s for r, s in zip(selected, [0] + self.ends[:-1])]))
        self._student_normalized = normalize_clouds(self._student_feats, self.ends, self.normalize,
                                                    rows=picked.to(self.device))
        teacher = [f.result() for f in self._teacher]
        student = [f.result() for f in self._student]
        self.h1_misses = {"teacher": sum(t.h1_over_budget for t in teacher),
                          "student": sum(s.h1_over_budget for s in student)}
        return self._loss_from(teacher, student)

    def _loss_from(self, teacher: list[CloudPersistence], student: list[CloudPersistence]) -> torch.Tensor:
        x = self._student_normalized  # the TPS rows of every cloud, cloud after cloud
        # One EdgeLengths call for all clouds: the critical edges as rows of x.
        edge_lists = []
        for base, s in zip(np.cumsum([0] + self._sizes[:-1]), student):
            edge_lists += [e + base for e in (s.h0_death_edges, s.h1_birth_edges, s.h1_death_edges)]
        edges = torch.from_numpy(np.concatenate(edge_lists)).to(x.device)
        pieces = torch.split(edge_lengths(x, edges, self.eps_dist), [len(e) for e in edge_lists])
        # Teacher diagrams (constants) moved to the device in one transfer.
        t_lists = [p for t in teacher for p in (t.h0_pairs, t.h1_pairs)]
        t_pairs = torch.split(torch.from_numpy(np.concatenate(t_lists)).to(device=x.device, dtype=x.dtype),
                              [len(p) for p in t_lists])
        total = x[:0].sum()  # 0, but attached to the graph even when no pair contributes
        self._student_pairs = []
        for b, (t, s) in enumerate(zip(teacher, student)):
            h0_deaths, h1_births, h1_deaths = pieces[3 * b : 3 * b + 3]
            if 0 in self.dims:
                s_pairs = torch.stack([torch.zeros_like(h0_deaths), h0_deaths], dim=1)
                total = total + self._distance(t_pairs[2 * b], s_pairs)
            # Decision 6c: a cloud whose teacher or student H1 missed the budget has H0 only.
            if 1 in self.dims and not (t.h1_over_budget or s.h1_over_budget):
                s_pairs = torch.stack([h1_births, h1_deaths], dim=1)
                total = total + self._distance(t_pairs[2 * b + 1], s_pairs)
        self._loss = total / len(self.ends)
        return self._loss

    def _distance(self, teacher_pairs: torch.Tensor, student_pairs: torch.Tensor) -> torch.Tensor:
        self._student_pairs.append(student_pairs)
        if self.distance == "sinkhorn":
            return sinkhorn_distance(teacher_pairs, student_pairs, self.sinkhorn_eps)
        if self.distance == "persistence-image":
            return persistence_image_distance(teacher_pairs, student_pairs, self.pi_norm)
        return pwcd(teacher_pairs, student_pairs, self.eps_w)

    def grad_entropy(self) -> float:
        """Normalised entropy of the gradient the loss sends to the student's diagram points (decision 33).

        Call after :meth:`loss`. Every student pair of every cloud and dimension gets the share
        ``g_k / sum g`` of the norms ``g_k = ||dL/d(b_k, d_k)||``; the result is
        ``-sum p_k log p_k / log K`` over the K pairs, in [0, 1] (1: spread evenly, 0: on one pair),
        and 0 when fewer than two pairs or no gradient. The paper's Table 11 diagnostic; the
        gradient is taken by a separate autograd pass down to the pairs only (the graph is kept).
        """
        if self._loss is None:
            raise RuntimeError("TopoLossJob.grad_entropy: call loss() first")
        pairs = [p for p in self._student_pairs if p.shape[0] > 0]
        if not self._loss.requires_grad or sum(p.shape[0] for p in pairs) < 2:
            return 0.0
        grads = torch.autograd.grad(self._loss, pairs, retain_graph=True, allow_unused=True)
        norms = torch.cat([torch.zeros(p.shape[0], dtype=p.dtype, device=p.device) if g is None
                           else g.detach().norm(dim=1) for p, g in zip(pairs, grads)]).double()
        return _normalized_entropy(norms)


def _done(value: np.ndarray) -> "Future[np.ndarray]":
    future: "Future[np.ndarray]" = Future()
    future.set_result(value)
    return future


def topo_loss(
    student_feats: torch.Tensor,
    teacher_feats: torch.Tensor,
    offsets: Offsets,
    m: int = DEFAULT_M,
    seed: int = 0,
    normalize: str = "scale",
    tie_tol: float = 0.0,
    eps_w: float = 1e-8,
    eps_dist: float = 1e-12,
    dims: Sequence[int] = (0, 1),
    distance: str = "pwcd",
    sinkhorn_eps: float = DEFAULT_SINKHORN_EPS,
    pi_norm: str = DEFAULT_PI_NORM,
    engine: Union[str, H1Engine, None] = None,
    time_budget: Optional[float] = None,
    pool: Optional[Runner] = None,
) -> torch.Tensor:
    """Topological distillation loss of a batch (Algorithm 1), a differentiable scalar tensor.

    Args:
        student_feats: (sumN, Cs) student features; the loss is differentiable w.r.t. them.
        teacher_feats: (sumN, Ct) teacher features of the same points (no gradient flows to them).
        offsets: (B,) END offsets of the clouds (tensor or sequence of ints), >= 2 points each.
        m: TPS budget per cloud; seed: cloud b starts TPS at ``default_rng(seed + b).integers(n_b)``.
        normalize: ``scale`` | ``l2`` | ``none`` (decision 13). tie_tol: must be 0 (see module doc).
        eps_w: PWCD weight stabiliser. eps_dist: distance-backward stabiliser (decision 5).
        dims: homology dimensions summed, a subset of (0, 1).
        distance: the distance between the diagrams of each dimension, one of ``DISTANCES``: ``pwcd``
            (Eq. 2-3), ``sinkhorn`` (unbalanced entropic OT of weight ``sinkhorn_eps``, decision 31) or
            ``persistence-image`` (TopKD, ``pi_norm`` = ``l2`` | ``l1``, decision 32).
        engine: H1 engine name or function (``fast.persistence``); None = ``fast.persistence.DEFAULT_ENGINE`` (the native engine).
        time_budget: seconds for the H1 of each cloud (teacher and student diagrams alike),
            counted from the start of that cloud's own H1 computation; None = unlimited (decision 6c).
        pool: where the diagrams run, a worker pool or a ``fast.persistence.DeviceBatch``; None = the
            default path for the features' device (``fast.persistence.DEFAULT_PATHS``, decision 34).

    Returns:
        Scalar tensor (float64 for float64 inputs, else float32) equal to
        ``reference.topo_loss(...)[0]``; its gradient w.r.t. ``student_feats`` equals the
        reference gradient. Raises ValueError for bad input before the persistence engine is called
        (the time budget is checked where it becomes a deadline, ``fast.persistence.deadline_after``).
    """
    _check_feats(student_feats, "student_feats")
    _check_feats(teacher_feats, "teacher_feats")
    if student_feats.shape[0] != teacher_feats.shape[0]:
        raise ValueError(
            f"student_feats has {student_feats.shape[0]} rows but teacher_feats has {teacher_feats.shape[0]}; "
            "both must hold the same points in the same order"
        )
    if student_feats.device != teacher_feats.device:
        raise ValueError(
            f"student_feats is on {student_feats.device} but teacher_feats on {teacher_feats.device}; "
            "move both to the same device"
        )
    job = TopoLossJob(teacher_feats, offsets, m, seed, normalize, tie_tol, eps_w, eps_dist, dims, distance,
                      sinkhorn_eps, pi_norm, engine, time_budget, pool)
    return job.submit_student(student_feats).loss()
