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

On every device the normalised features of a model go to the host once per batch
(``fast.transfer.to_host``: on CUDA a pinned, non-blocking copy on a side stream, so the student
forward runs while the teacher's features travel, decision 42), and with the worker pool each
teacher cloud is one task of the engine's pool: TPS (Algorithm 5, the compiled kernel
``fast.persistence.tps_indices``), then the teacher diagrams of the selected points, all in one
worker process; the selected rows come back as soon as TPS is done, and the student task of that
cloud starts from them without any work in the calling process. With ``tps_on="device"`` TPS runs on
the GPU instead (``fast.tps_device``, two launches per step on a side stream) and only the selected rows of
each model are copied to the host. With the device batch path
(``fast.persistence.DEFAULT_PATHS``, decision 34) TPS runs in the same compiled kernel before the
batch is handed over. The results come back to the device in one copy: the selected rows, every
critical edge and the teacher diagrams; the PWCD of all clouds and dimensions is then one set of
operators (``fast.pwcd.segment_pwcd``), so the loss's forward and backward launch a fixed number of
kernels per batch, not per cloud.

:func:`topo_loss` is exactly those three calls in a row. Time budget (decision 6c): each cloud's
H1 gets ``time_budget`` seconds of its own computation (time in the queue does not count); if the
H1 of the teacher or the student of a cloud misses it, that cloud's loss uses H0 only for this
step (the event is logged and counted by ``fast.persistence.budget_miss_count``, and per model in
:attr:`TopoLossJob.h1_misses`).
"""
from __future__ import annotations

import importlib.util
import math
import os
import time
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
    tps_indices,
)
from fast.normalize import MODES, check_end_offsets
from fast.normalize import normalize as normalize_clouds
from fast.persistence_image import persistence_image_distance
from fast.pwcd import Segments, segment_pwcd
from fast.sinkhorn import sinkhorn_distance
from fast.transfer import side_stream, to_device, to_host
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
    if feats.device.type != "cpu":
        return  # read on the host copy by the persistence front door: no wait for the device here
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


def _normalized_entropy(weights: torch.Tensor) -> torch.Tensor:
    """``-sum p log p / log K`` of ``p = weights / sum(weights)`` over K >= 2 entries (0 log 0 = 0; 0 if all 0),
    a 0-d tensor computed where ``weights`` lie: the step logs it without waiting for the device."""
    total = weights.sum()
    p = weights / torch.where(total > 0, total, torch.ones_like(total))
    positive = p > 0
    return (-torch.where(positive, p * torch.where(positive, p, torch.ones_like(p)).log(), 0.0).sum()
            / math.log(weights.numel()))


TPS_PLACES = ("host", "device")


def _check_tps_on(tps_on: str, feats: torch.Tensor) -> None:
    if tps_on not in TPS_PLACES:
        raise ValueError(f"tps_on must be one of {TPS_PLACES}, got {tps_on!r}")
    if tps_on == "host":
        return
    if importlib.util.find_spec("triton") is None:
        raise ValueError("tps_on='device' runs a Triton kernel, and Triton is not installed (it comes with CUDA "
                         "builds of torch); use tps_on='host'")
    from fast.tps_device import MAX_COLUMNS

    if feats.shape[1] > MAX_COLUMNS:
        raise ValueError(f"tps_on='device' sums at most {MAX_COLUMNS} channels in numpy's order, the features have "
                         f"{feats.shape[1]}; use tps_on='host'")
    if feats.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"tps_on='device' needs CUDA features (these are on {feats.device}); use tps_on='host'")


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

    ``tps_on``: where TPS runs, ``"host"`` (the default: in the persistence workers, beside the
    teacher diagrams, decision 42) or ``"device"`` (the Triton kernel ``fast.tps_device`` on the
    features' CUDA device, on a side stream; then only the selected rows of each model travel to
    the host). The same rows either way, so the same loss. ``"device"`` needs Triton, at most
    ``fast.tps_device.MAX_COLUMNS`` channels and CUDA features (or Triton's interpreter,
    ``TRITON_INTERPRET=1``, which the tests use on the CPU).

    :attr:`timeline` holds the ``time.perf_counter`` stamps of the job's parts, for the accounting
    of ``benchmarks.cpu.topo_split``: ``teacher_start``, ``tps_queued`` (TPS on the device),
    ``teacher_copy_start`` (the copy to the host is queued next), ``teacher_launched`` (the
    constructor returns), ``teacher_on_host`` / ``teacher_submitted`` (the features reached the
    host; the diagrams were queued), the same of the student (``student_start``,
    ``student_copy_start``, ``student_launched``, ``student_on_host``, ``student_submitted``),
    ``wait_start`` / ``diagrams_ready`` / ``loss_built`` (:meth:`loss`) and ``entropy_start`` /
    ``entropy_done`` (:meth:`grad_entropy`). The host-side stamps do not wait for the device;
    :attr:`diagram_futures` gives each model's diagram futures with the workers' times.
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
        tps_on: str = "host",
    ) -> None:
        self.timeline: dict[str, float] = {"teacher_start": time.perf_counter()}
        _check_feats(teacher_feats, "teacher_feats")
        _check_tps_on(tps_on, teacher_feats)
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
        with torch.no_grad():
            teacher64 = self._normalized(teacher_feats.detach().to(torch.float64))
        # where the diagrams run: the worker pool or the device batch path (decision 34)
        self.runner = default_runner(str(self.device)) if pool is None else pool
        self._picked: Optional[torch.Tensor] = None  # the TPS rows (batch row ids) when chosen on the device
        self._selected_event: Optional["torch.cuda.Event"] = None  # recorded when they are (on CUDA)
        if tps_on == "device":  # only the selected rows go to the host, with their row ids
            self._picked, copied = self._select_on_device(teacher64)
            self._stamp("tps_queued")
            then = self._start_teacher_selected
        else:  # TPS and the teacher diagrams start when the features have reached the host (decision 42)
            copied, then = teacher64, self._start_teacher
        self._stamp("teacher_copy_start")
        self._teacher = to_host(copied, then)
        self._student: Optional[Future] = None
        self._student_feats: Optional[torch.Tensor] = None
        self._loss: Optional[torch.Tensor] = None
        self._student_pairs: Optional[torch.Tensor] = None  # every student pair in the loss, stacked
        self._stamp("teacher_launched")

    def _stamp(self, event: str) -> None:
        self.timeline[event] = time.perf_counter()

    @property
    def diagram_futures(self) -> dict[str, list[Future]]:
        """Each model's diagram futures (waits until they have been queued); a worker pool's carry the
        worker and its times as ``task_time`` (``fast.persistence.pool.TaskTime``) once done."""
        if self._student is None:
            raise RuntimeError("TopoLossJob.diagram_futures: call submit_student(student_feats) first")
        return {"teacher": self._teacher.result()[1], "student": self._student.result()}

    def _start_teacher(self, host: np.ndarray) -> tuple[list["Future[np.ndarray]"], list["Future[CloudPersistence]"]]:
        """TPS and the teacher diagrams of every cloud: the futures of the selected rows and of the diagrams."""
        self._stamp("teacher_on_host")
        clouds, with_h1 = self._clouds(host), 1 in self.dims
        if isinstance(self.runner, PersistencePool):  # TPS and the diagrams of each cloud in one worker
            started = submit_tps_diagrams(clouds, self.m, self.seed, self.engine, self.runner, self.time_budget,
                                          with_h1, "teacher cloud")
        else:
            rows = [_done(tps_indices(c, self.m, self.seed + b)) for b, c in enumerate(clouds)]
            started = rows, submit_diagrams(clouds, self.engine, self.runner, self.time_budget, with_h1,
                                            "teacher cloud", rows=rows)
        self._stamp("teacher_submitted")
        return started

    def _select_on_device(self, teacher64: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TPS on the features' device (``fast.tps_device``): the selected rows' batch row ids, and
        those rows of ``teacher64`` with their row ids (as float64, exact) as a last column. On CUDA
        on the side stream of the host copies (``fast.transfer.side_stream``), so the student's
        forward is not queued behind TPS; :meth:`submit_student` waits for it on the device only."""
        from fast.tps_device import tps_device  # imports Triton: only here

        def select() -> tuple[torch.Tensor, torch.Tensor]:
            local = tps_device(teacher64, self.ends, self.m, self.seed)
            picked = torch.cat([rows + start for rows, start in zip(local, [0] + self.ends[:-1])])
            return picked, torch.cat([teacher64[picked], picked.to(torch.float64)[:, None]], dim=1)

        if teacher64.device.type != "cuda":
            return select()
        stream = side_stream(teacher64.device)
        stream.wait_stream(torch.cuda.current_stream(teacher64.device))
        with torch.cuda.stream(stream):
            picked, selected = select()
            self._selected_event = torch.cuda.Event()
            self._selected_event.record(stream)
        teacher64.record_stream(stream)
        return picked, selected

    def _counts(self) -> list[int]:
        """Rows TPS keeps per cloud: ``min(m, n_b)``."""
        return [min(self.m, e - s) for s, e in zip([0] + self.ends[:-1], self.ends)]

    def _start_teacher_selected(self, host: np.ndarray) -> tuple[list["Future[np.ndarray]"],
                                                                list["Future[CloudPersistence]"]]:
        """The teacher diagrams of the rows TPS selected on the device (``host``: those rows, their
        batch row ids in the last column): the futures of each cloud's rows and of its diagrams."""
        self._stamp("teacher_on_host")
        cuts = np.cumsum(self._counts())[:-1]
        picked = np.split(host[:, -1].astype(np.int64), cuts)
        rows = [_done(r - s) for r, s in zip(picked, [0] + self.ends[:-1])]
        diagrams = submit_diagrams(np.split(np.ascontiguousarray(host[:, :-1]), cuts), self.engine, self.runner,
                                   self.time_budget, 1 in self.dims, "teacher cloud")
        self._stamp("teacher_submitted")
        return rows, diagrams

    def _start_student(self, host: np.ndarray) -> list["Future[CloudPersistence]"]:
        """The student diagrams of the teacher's rows (queued after the teacher's tasks: the copies
        complete in order). With TPS on the device ``host`` holds only those rows."""
        self._stamp("student_on_host")
        rows, _ = self._teacher.result()
        if self._picked is not None:
            diagrams = submit_diagrams(np.split(host, np.cumsum(self._counts())[:-1]), self.engine, self.runner,
                                       self.time_budget, 1 in self.dims, "student cloud")
        else:
            diagrams = submit_diagrams(self._clouds(host), self.engine, self.runner, self.time_budget,
                                       1 in self.dims, "student cloud", rows=rows)
        self._stamp("student_submitted")
        return diagrams

    def _normalized(self, feats: torch.Tensor) -> torch.Tensor:
        return normalize_clouds(feats, self.ends, self.normalize)

    def _clouds(self, host: np.ndarray) -> list[np.ndarray]:
        """The (n_b, C) rows of every cloud of the batch's host copy."""
        return np.split(host, self.ends[:-1])

    def submit_student(self, student_feats: torch.Tensor) -> "TopoLossJob":
        """Normalise the student features (keeping the autograd graph) and start their diagrams."""
        self._stamp("student_start")
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
        if self._picked is not None and student64.device.type == "cuda":  # TPS's rows: wait on the device only
            current = torch.cuda.current_stream(student64.device)
            current.wait_event(self._selected_event)
            self._picked.record_stream(current)
        rows = student64 if self._picked is None else student64[self._picked]
        self._stamp("student_copy_start")
        self._student = to_host(rows, self._start_student)
        self._stamp("student_launched")
        return self

    def loss(self) -> torch.Tensor:
        """Wait for the diagrams and return the mean over clouds of sum_d PWCD_d (scalar tensor)."""
        if self._student is None or self._student_feats is None:
            raise RuntimeError("TopoLossJob.loss: call submit_student(student_feats) first")
        self._stamp("wait_start")
        rows, teacher_futures = self._teacher.result()
        student_futures = self._student.result()
        selected = [r.result() for r in rows]
        teacher = [f.result() for f in teacher_futures]
        student = [f.result() for f in student_futures]
        self._stamp("diagrams_ready")
        self.h1_misses = {"teacher": sum(t.h1_over_budget for t in teacher),
                          "student": sum(s.h1_over_budget for s in student)}
        loss = self._loss_from(selected, teacher, student)
        self._stamp("loss_built")
        return loss

    def _loss_from(self, selected: list[np.ndarray], teacher: list[CloudPersistence],
                   student: list[CloudPersistence]) -> torch.Tensor:
        # The diagrams of the loss, cloud after cloud: H0 (if asked), then H1 (if asked and neither
        # model's H1 missed the budget, decision 6c). Every student value is the length of a
        # critical edge of the TPS rows (x below); an H0 birth is the zero appended after them.
        edges, pair_index, t_pairs = [], [], []
        base, n_edges = 0, 0
        for rows, t, s in zip(selected, teacher, student):
            if 0 in self.dims:
                k = len(s.h0_death_edges)
                edges.append(s.h0_death_edges + base)
                pair_index.append(np.stack([np.full(k, -1), n_edges + np.arange(k)], axis=1))
                t_pairs.append(t.h0_pairs)
                n_edges += k
            if 1 in self.dims and not (t.h1_over_budget or s.h1_over_budget):
                k = len(s.h1_birth_edges)
                edges += [s.h1_birth_edges + base, s.h1_death_edges + base]
                pair_index.append(n_edges + np.stack([np.arange(k), k + np.arange(k)], axis=1))
                t_pairs.append(t.h1_pairs)
                n_edges += 2 * k
            base += len(rows)
        m_sizes = [len(p) for p in t_pairs]
        k_sizes = [len(p) for p in pair_index]
        index = np.concatenate(pair_index).astype(np.int64) if pair_index else np.zeros((0, 2), dtype=np.int64)
        index[index < 0] = n_edges
        t_values = np.concatenate(t_pairs) if t_pairs else np.zeros((0, 2))
        # One copy to the device: the selected rows, the edges, the pairs' edges, the diagrams'
        # row indices and the teacher values (float64 bits).
        picked = np.concatenate([r + s for r, s in zip(selected, [0] + self.ends[:-1])])
        parts = [picked, np.concatenate(edges) if edges else np.zeros((0, 2), dtype=np.int64), index,
                 *Segments.host_index(m_sizes), *Segments.host_index(k_sizes), t_values.view(np.int64)]
        flat = [np.ascontiguousarray(a, dtype=np.int64).ravel() for a in parts]
        on_device = torch.split(to_device(np.concatenate(flat), self.device), [len(a) for a in flat])
        rows_d, edges_d, index_d, t_ids, t_local, s_ids, s_local, t_bits = on_device
        # Only the TPS rows enter the loss: the differentiable normalisation (statistics of whole
        # clouds, decision 13) returns just those rows, so its backward touches little else.
        x = normalize_clouds(self._student_feats, self.ends, self.normalize, rows=rows_d)
        lengths = edge_lengths(x, edges_d.view(-1, 2), self.eps_dist)
        Q = torch.cat([lengths, lengths.new_zeros(1)])[index_d.view(-1, 2)]
        P = t_bits.view(torch.float64).view(-1, 2).to(x.dtype)
        self._student_pairs = Q
        total = x[:0].sum()  # 0, but attached to the graph even when no pair contributes
        if self.distance == "pwcd":
            total = total + segment_pwcd(P, Q, Segments(m_sizes, t_ids, t_local), Segments(k_sizes, s_ids, s_local),
                                         self.eps_w).sum()
        else:
            for p, q in zip(torch.split(P, m_sizes), torch.split(Q, k_sizes)):
                total = total + self._distance(p, q)
        self._loss = total / len(self.ends)
        return self._loss

    def _distance(self, teacher_pairs: torch.Tensor, student_pairs: torch.Tensor) -> torch.Tensor:
        if self.distance == "sinkhorn":
            return sinkhorn_distance(teacher_pairs, student_pairs, self.sinkhorn_eps)
        return persistence_image_distance(teacher_pairs, student_pairs, self.pi_norm)

    def grad_entropy(self) -> torch.Tensor:
        """Normalised entropy of the gradient the loss sends to the student's diagram points (decision 33).

        Call after :meth:`loss`. Every student pair of every cloud and dimension gets the share
        ``g_k / sum g`` of the norms ``g_k = ||dL/d(b_k, d_k)||``; the result is
        ``-sum p_k log p_k / log K`` over the K pairs, in [0, 1] (1: spread evenly, 0: on one pair),
        and 0 when fewer than two pairs or no gradient: a 0-d float64 tensor on the pairs' device,
        so that logging it does not wait for the device. The paper's Table 11 diagnostic; the
        gradient is taken by a separate autograd pass down to the pairs only (the graph is kept).
        """
        if self._loss is None or self._student_pairs is None:
            raise RuntimeError("TopoLossJob.grad_entropy: call loss() first")
        self._stamp("entropy_start")
        entropy = self._grad_entropy()
        self._stamp("entropy_done")
        return entropy

    def _grad_entropy(self) -> torch.Tensor:
        pairs = self._student_pairs
        none = torch.zeros((), dtype=torch.float64, device=pairs.device)
        if not self._loss.requires_grad or pairs.shape[0] < 2:
            return none
        (grad,) = torch.autograd.grad(self._loss, [pairs], retain_graph=True, allow_unused=True)
        if grad is None:
            return none
        return _normalized_entropy(grad.detach().norm(dim=1).double())


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
