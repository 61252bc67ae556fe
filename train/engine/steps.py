"""One optimisation step of each stage: L = L_seg + l_topo L_topo + l_grad L_grad + l_kld L_kld
(paper Eq. 8, Sec. 3; decisions 12-20).

* Segmentation step (teacher, CE-only student): L_seg = CE + Lovasz-softmax or CE alone
  (``seg_loss``, see :data:`train.engine.losses.SEG_LOSSES`).
* Distillation step, in the order that lets persistence overlap the network work:
  1. teacher forward (frozen, eval mode) on the same augmented, voxelised batch as the student
     (decisions 20); the teacher's persistence diagrams are started right away on its
     pre-classifier embeddings (decisions 12) through ``fast``'s asynchronous engine; the points of
     the batch's unlabelled scans (``--unlabelled-split``) get the teacher's most likely class as
     the target of L_kld's mean and of both saliency task losses, while L_seg skips them (decision 57);
  2. teacher saliency gradients: dL_seg(teacher)/dF_l of its decoder stages by
     ``torch.autograd.grad`` (parameters frozen, so only activation gradients; decisions 15),
     under AMP in bfloat16 with no loss scale, independent of the student's scaler (decision 23);
  3. student forward; the student's diagrams are started right away on its embeddings (before the
     step's finiteness read: a bad step drops the job unread);
  4. L_seg of the student; its saliency gradients by ``autograd.grad(create_graph=False)``, so the
     channel weights omega are constants (decisions 16); L_grad (Eq. 4-7) over the chosen decoder
     stages (Table 10); L_kld (decisions 18);
  5. join the persistence jobs for L_topo (Algorithm 1, with the diagram distance of
     ``--topo-distance``, decisions 31-32), log the entropy of its gradient over the student's
     diagram points (decision 33), and back-propagate the weighted sum.
A term whose switch is off (paper Table 5 ablations) or whose weight is 0 is not computed at all.

With the camera teacher (``--teacher images``, decision 61) there is no teacher network: step 1
reads the batch's projected camera probabilities as L_kld's teacher on the points a camera sees and
starts the diagrams of its 2D features there (:mod:`train.engine.camera_terms`); step 2 and L_grad
do not exist (the options refuse them). With its pseudo-labels (``--camera-pseudo-labels``, decision
65) L_seg also reads the camera's most likely class on the seen points of the unlabelled scans.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from fast.kld import kld
from fast.persistence import default_pool, set_default_workers, worker_share
from fast.saliency import saliency_loss
from fast.topo_loss import DEFAULT_M, TopoLossJob
from fast.pwcd import load_search_kernels
from fast.tps import auto_tps_place
from train.config import RunConfig
from train.engine.camera_terms import camera_classes, camera_kld_teacher, seen_clouds
from train.engine.losses import DEFAULT_SEG_LOSS, segmentation_loss
from train.engine.profiling import StepTimer

TENSOR_KEYS = ("coord", "grid_coord", "feat", "offset", "segment", "inverse", "origin_offset", "origin_segment")


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the tensor entries of a collated batch to ``device`` (other entries as they are)."""
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The keys the PTv3 forward reads: the point tensors and, when the batch has one, its
    ``BatchPlan`` (``train.models.plan``, decision 40), shared by every model that sees the batch."""
    inputs = {k: batch[k] for k in ("coord", "grid_coord", "feat", "offset")}
    if "plan" in batch:
        inputs["plan"] = batch["plan"]
    return inputs


_RUN = RunConfig()  # a run's defaults: DistillSettings repeats none of them


@dataclass
class DistillSettings:
    """Which terms are on and their weights/options (from :class:`train.config.RunConfig`, whose
    defaults are these fields' defaults; the TPS budget's is the kernel's, ``fast.topo_loss.DEFAULT_M``)."""

    kld: bool = False
    topo: bool = False
    grad: bool = False
    lambda_kld: float = _RUN.lambda_kld
    lambda_topo: float = _RUN.lambda_topo
    lambda_grad: float = _RUN.lambda_grad
    temperature: float = _RUN.kld_temperature
    topo_m: int = DEFAULT_M
    topo_normalize: str = _RUN.topo_normalize
    topo_dims: tuple[int, ...] = tuple(_RUN.topo_dims)
    topo_time_budget: float | None = _RUN.topo_time_budget
    topo_tps: str = _RUN.topo_tps
    topo_distance: str = _RUN.topo_distance
    sinkhorn_eps: float = _RUN.sinkhorn_eps
    pi_norm: str = _RUN.pi_norm
    saliency_layers: Sequence[int] = tuple(_RUN.saliency_layers)
    saliency_eps: float = _RUN.saliency_eps
    saliency_detach_range: bool = _RUN.saliency_detach_range
    kld_class_weights: bool = _RUN.kld_class_weights  # weight L_kld per point as the CE (decision 44)
    seg_loss: str = DEFAULT_SEG_LOSS
    class_weight: tuple[float, ...] | None = None  # CE class weights (train.engine.losses.class_weights)
    camera: bool = False  # the teacher is the batch's projected camera predictions (--teacher images, decision 61)
    # L_seg reads the camera's classes on the unlabelled scans (--camera-pseudo-labels, decision 65)
    pseudo_labels: bool = False
    pseudo_label_threshold: float = _RUN.pseudo_label_threshold

    def seg_weight(self) -> torch.Tensor | None:
        return None if self.class_weight is None else torch.tensor(self.class_weight, dtype=torch.float32)

    @property
    def uses_teacher(self) -> bool:
        return self.pseudo_labels or self.active("kld") or self.active("topo") or self.active("grad")

    def active(self, term: str) -> bool:
        return bool(getattr(self, term)) and float(getattr(self, f"lambda_{term}")) > 0.0


def start_persistence(workers: int | None = None, clouds: int | None = None) -> None:
    """Size the persistence pool of this process and start its workers now, so that they start (and
    on a new machine compile their kernels) while the models are built and loaded (decision 41).

    ``workers`` is ``--topo-workers``; None = one worker per cloud of a step (``clouds``,
    :func:`step_clouds`) up to this process's share of the cores (``fast.persistence.worker_share``;
    the share itself without ``clouds``). Each worker gets the share divided among the workers as
    threads for its cloud (decision 89): on a 16-core GPU host with 8 clouds a step, 8 workers of
    2 threads, where 16 workers of one thread left 8 idle; where the share is no larger than a
    step's clouds (the 2-core CPU demo), the share, one thread each.
    """
    if workers is None and clouds is not None:
        workers = min(worker_share(), max(clouds, 1))
    set_default_workers(workers)
    default_pool()


def step_clouds(batch_size: int, world_size: int) -> int:
    """Clouds whose diagrams one training step of a process asks for at once: the teacher's and the
    student's features of each of its scans."""
    return 2 * max(batch_size // world_size, 1)


def warm_up_persistence() -> None:
    """Wait until the workers of the pool :func:`start_persistence` started are ready (decision 41).

    Under a time budget (decision 6c) a worker's start-up (process launch, loading or, on a new
    machine, compiling its kernels) would otherwise be charged to the first step's H1 and drop it
    to H0 only. Then the compiled code the calling process runs in ``fast.topo_loss`` (the PWCD's
    nearest-neighbour search) is loaded here too, not in the first loss.
    """
    default_pool().warm()
    load_search_kernels()


def _stage_positions(layers: Sequence[int], available: int) -> list[int]:
    """Decoder stage numbers (1 = dec1, computed first) -> list positions; checks they exist."""
    bad = [s for s in layers if not 1 <= s <= available]
    if bad:
        raise ValueError(f"saliency layers {bad} do not exist: the model has decoder stages 1..{available}")
    return [s - 1 for s in layers]


def saliency_gradients(
    loss: torch.Tensor, feats: Sequence[torch.Tensor], retain_graph: bool, grad_scale: float = 1.0
) -> list[torch.Tensor]:
    """dloss/dF for each decoder activation F, as float32 constants (no second-order graph;
    decisions 16). Under AMP the loss is multiplied by the scaler's ``grad_scale`` before the
    backward pass and the gradients divided by it afterwards, so float16 activation gradients do
    not underflow."""
    grads = torch.autograd.grad(loss * grad_scale, list(feats), retain_graph=retain_graph, create_graph=False,
                                allow_unused=True)
    return [torch.zeros_like(f, dtype=torch.float32) if g is None else g.detach().float() / grad_scale
            for f, g in zip(feats, grads)]


def segmentation_step(
    model: nn.Module, batch: dict[str, Any], amp: bool, timer: StepTimer, seg_loss: str = DEFAULT_SEG_LOSS,
    class_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward + L_seg of a model trained on labels alone (teacher, CE-only student)."""
    with timer.section("forward"), torch.autocast(batch["coord"].device.type, enabled=amp):
        out = model(model_inputs(batch))
        loss, parts = segmentation_loss(out.logits.float(), batch["segment"], kind=seg_loss,
                                        class_weight=class_weight)
    return loss, {"loss": loss.detach(), "seg": loss.detach(), **parts}


def teacher_autocast(device_type: str, amp: bool, need_grad: bool) -> torch.autocast:
    """Autocast of the teacher's forward pass (decision 23).

    With the saliency term on, the teacher's activation gradients must not depend on the student's
    loss scale, and unscaled float16 gradients would underflow: under AMP that pass therefore runs
    in bfloat16 (float32's exponent range, so its gradients need no scale and cannot overflow), or
    in float32 where the device has no bfloat16. Without the saliency term the teacher is a plain
    float16 forward pass, as before."""
    if not (amp and need_grad):
        return torch.autocast(device_type, enabled=amp)
    bf16 = device_type != "cuda" or torch.cuda.is_bf16_supported()
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16)


@functools.lru_cache(maxsize=None)
def _auto_tps_place(device: torch.device, columns: int) -> str:
    """Where ``--topo-tps auto`` runs TPS of these features (``fast.tps.auto_tps_place``, decision
    42); on CUDA, where there is a choice, one line says which and why, once per process."""
    place, why = auto_tps_place(device, columns)
    if device.type == "cuda":
        print(f"--topo-tps auto: TPS runs {'on the GPU' if place == 'device' else 'in the host workers'}: {why}",
              file=sys.stderr, flush=True)
    return place


def unlabelled_points(batch: dict[str, Any]) -> torch.Tensor | None:
    """Which points of the batch belong to its unlabelled scans (decision 57; their ``segment`` is
    all ignore), or None when it has none."""
    flags = batch.get("unlabelled")
    if not flags or not any(flags):
        return None
    offset = batch["offset"]
    counts = torch.diff(offset, prepend=offset.new_zeros(1))
    return torch.repeat_interleave(torch.tensor(flags, device=offset.device), counts,
                                   output_size=batch["segment"].shape[0])


def task_targets(batch: dict[str, Any], teacher_logits: torch.Tensor) -> torch.Tensor:
    """The labels of the terms that need targets but not annotations (decision 57): ``segment``,
    with the teacher's most likely class on every point of the batch's unlabelled scans;
    ``segment`` itself when the batch has none. L_kld averages over the points these label and both
    models' saliency task losses (Eq. 4) read them; L_seg reads ``segment``."""
    on = unlabelled_points(batch)
    return batch["segment"] if on is None else torch.where(on, teacher_logits.detach().argmax(1), batch["segment"])


@dataclass
class _TeacherSide:
    """What the teacher gives a distillation step: L_kld's teacher logits and targets (the task
    targets of both saliency losses too), the started L_topo job and the student rows it reads
    (None: every row), the tensors whose finiteness the step checks, for a teacher network its
    output and saliency gradients, the values it logs, and L_seg's labels (None: the batch's
    ``segment``)."""

    kld_logits: torch.Tensor
    targets: torch.Tensor
    topo_job: TopoLossJob | None = None
    topo_rows: torch.Tensor | None = None
    checked: list[torch.Tensor] = field(default_factory=list)
    out: Any = None
    grads: list[torch.Tensor] = field(default_factory=list)
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    seg_labels: torch.Tensor | None = None


def _start_topo(features: torch.Tensor, offset: Any, s: DistillSettings, timer: StepTimer,
                topo_seed: int) -> TopoLossJob:
    """The L_topo job of the teacher's ``features`` (clouds ending at ``offset``): TPS and the
    teacher diagrams start now (decisions 12-14, 42)."""
    with timer.section("topo_launch"):
        features = features.detach().float()
        tps_on = _auto_tps_place(features.device, features.shape[1]) if s.topo_tps == "auto" else s.topo_tps
        return TopoLossJob(
            features, offset, m=s.topo_m, seed=topo_seed,
            normalize=s.topo_normalize, dims=tuple(s.topo_dims), distance=s.topo_distance,
            sinkhorn_eps=s.sinkhorn_eps, pi_norm=s.pi_norm, time_budget=s.topo_time_budget, tps_on=tps_on,
        )


def _teacher_pass(
    teacher: nn.Module, batch: dict[str, Any], s: DistillSettings, amp: bool, timer: StepTimer, topo_seed: int,
) -> _TeacherSide:
    """Teacher forward, start its diagrams, then its own-loss saliency gradients against the task
    targets (:func:`task_targets`; decisions 15, 23, 57)."""
    need_grad = s.active("grad")
    inputs = model_inputs(batch)
    if need_grad:
        # The teacher's parameters are frozen, so autograd records its graph only if an input
        # requires grad; a leaf copy of the features makes the decoder activations differentiable.
        inputs = {**inputs, "feat": inputs["feat"].detach().clone().requires_grad_(True)}
    with timer.section("teacher_forward"):
        with torch.set_grad_enabled(need_grad), teacher_autocast(batch["coord"].device.type, amp, need_grad):
            t_out = teacher(inputs)
    topo_job = None
    if s.active("topo") and _all_finite([t_out.embedding]):  # else a bad step (decision 23): nothing to start
        topo_job = _start_topo(t_out.embedding, batch["offset"], s, timer, topo_seed)
    targets = task_targets(batch, t_out.logits)
    t_grads: list[torch.Tensor] = []
    if need_grad:
        with timer.section("teacher_saliency_grad"):
            t_loss, _ = segmentation_loss(t_out.logits.float(), targets, kind=s.seg_loss,
                                          class_weight=s.seg_weight())
            pos = _stage_positions(s.saliency_layers, len(t_out.decoder_feats))
            t_grads = saliency_gradients(t_loss, [t_out.decoder_feats[p] for p in pos], retain_graph=False)
    return _TeacherSide(t_out.logits.detach().float(), targets, topo_job, checked=[t_out.logits, t_out.embedding],
                        out=t_out, grads=t_grads)


def _camera_pass(batch: dict[str, Any], s: DistillSettings, timer: StepTimer, topo_seed: int) -> _TeacherSide:
    """The camera teacher (decision 61): L_kld's teacher logits ``log p`` and targets on the points a
    camera sees, and the L_topo job of the 2D features of the clouds with two such points or more
    (:mod:`train.engine.camera_terms`); with ``s.pseudo_labels`` L_seg's labels, the camera's
    classes on the unlabelled scans' points (decision 65); logs ``camera_seen``, the share of the
    batch's points seen."""
    logits, targets = camera_kld_teacher(batch["camera_probs"])
    side = _TeacherSide(logits, targets, logs={"camera_seen": (targets >= 0).float().mean()})
    on = unlabelled_points(batch) if s.pseudo_labels else None
    if on is not None:
        pseudo = camera_classes(batch["camera_probs"], s.pseudo_label_threshold)
        side.seg_labels = torch.where(on, pseudo, batch["segment"])
    if s.active("topo"):
        found = seen_clouds(batch["camera_features"], batch["offset"])
        if found is not None:
            side.topo_rows, ends = found
            side.topo_job = _start_topo(batch["camera_features"][side.topo_rows], ends, s, timer, topo_seed)
    return side


def distillation_step(
    student: nn.Module,
    teacher: nn.Module | None,
    batch: dict[str, Any],
    s: DistillSettings,
    amp: bool,
    timer: StepTimer,
    topo_seed: int = 0,
    grad_scale: float = 1.0,
    term_grad_norms: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss of one KD / distillation step (graph attached to the student only) and its parts.

    ``teacher``: the frozen teacher network, or None with the camera teacher (``s.camera``).

    ``topo_seed``: TPS start seed of this step (cloud b uses ``topo_seed + b``, decisions 14).
    ``grad_scale``: the AMP loss scale used for the student's saliency gradients (1 without AMP).
    If those scaled gradients overflow, L_grad is left out of the total and
    ``logs["saliency_overflow"]`` is 1: the caller must skip the step (``train.engine.update.apply_update``,
    decision 23). Non-finite saliency gradients without a scale make ``L_grad`` NaN.
    ``term_grad_norms``: also log ``gradnorm_<term>``, the L2 norm over the student's parameters of
    the gradient each weighted term sends (one extra backward pass per term: a diagnostic, e.g.
    every K steps via ``--log-term-grads K``; under DDP each rank's own share of the batch).
    """
    side = (_camera_pass(batch, s, timer, topo_seed) if s.camera
            else _teacher_pass(teacher, batch, s, amp, timer, topo_seed))
    t_out, topo_job, targets = side.out, side.topo_job, side.targets
    with timer.section("student_forward"), torch.autocast(batch["coord"].device.type, enabled=amp):
        out = student(model_inputs(batch))
    if topo_job is not None and _may_start(out.embedding):
        # the student's diagrams start now, so the workers compute them beside the rest of the step
        with timer.section("topo_launch"):
            rows = out.embedding if side.topo_rows is None else out.embedding[side.topo_rows]
            topo_job.submit_student(rows.float())
    with timer.section("student_loss"):
        seg_labels = batch["segment"] if side.seg_labels is None else side.seg_labels
        seg, parts = segmentation_loss(out.logits.float(), seg_labels, kind=s.seg_loss, class_weight=s.seg_weight())
    logs: dict[str, torch.Tensor] = {"seg": seg.detach(), **parts, **side.logs}
    terms = [t for t in ("grad", "kld", "topo") if s.active(t)]
    acts: list[torch.Tensor] = []
    s_grads: list[torch.Tensor] = []
    if s.active("grad"):
        with timer.section("student_saliency"):
            pos = _stage_positions(s.saliency_layers, len(out.decoder_feats))
            acts = [out.decoder_feats[p] for p in pos]
            task = seg if targets is batch["segment"] else segmentation_loss(
                out.logits.float(), targets, kind=s.seg_loss, class_weight=s.seg_weight())[0]
            s_grads = saliency_gradients(task, acts, retain_graph=True, grad_scale=grad_scale)
    # one host read for every finiteness decision of the step (decision 39)
    outputs_ok, s_grads_ok, t_grads_ok = _finite_groups([[*side.checked, out.logits, out.embedding], s_grads,
                                                          side.grads])
    if not outputs_ok:  # the job started with bad features is dropped unread
        return _bad_step(logs, terms, term_grad_norms, seg.device)
    total = seg
    weighted = {"seg": seg}
    if s.active("grad"):
        with timer.section("student_saliency"):
            overflow = grad_scale > 1.0 and not s_grads_ok
            if overflow or not (s_grads_ok and t_grads_ok):
                # decision 23: an overflow of the scaled pass is the caller's to skip; a NaN/Inf
                # otherwise (bad features) makes the term, hence the total, NaN: a bad step
                l_grad = torch.tensor(float("nan"), device=seg.device)
            else:
                l_grad = saliency_loss(
                    [a.float() for a in acts], s_grads,
                    [out.decoder_offsets[p] for p in pos], [out.decoder_index[p] for p in pos],
                    [t_out.decoder_feats[p].detach().float() for p in pos], side.grads,
                    [t_out.decoder_offsets[p] for p in pos], [t_out.decoder_index[p] for p in pos],
                    batch["offset"], eps=s.saliency_eps, detach_range=s.saliency_detach_range,
                )
        logs["saliency_overflow"] = torch.tensor(float(overflow))
        logs["grad"] = l_grad.detach()
        if not overflow:
            weighted["grad"] = s.lambda_grad * l_grad
            total = total + weighted["grad"]
    if s.active("kld"):
        with timer.section("kld"):
            l_kld = kld(out.logits.float(), side.kld_logits, targets,  # float64 from the camera's log p
                        temperature=s.temperature,
                        class_weight=s.seg_weight() if s.kld_class_weights else None).float()
        weighted["kld"] = s.lambda_kld * l_kld
        total = total + weighted["kld"]
        logs["kld"] = l_kld.detach()
    if s.active("topo"):
        if topo_job is None:  # the camera sees fewer than two points of every cloud: no edge to compare
            l_topo, entropy, misses = out.embedding[:0].float().sum(), torch.zeros(()), {"teacher": 0, "student": 0}
        else:
            with timer.section("topo_wait"):
                l_topo = topo_job.loss()
            # paper Table 11's diagnostic (decision 33): how evenly L_topo spreads over the student's pairs
            entropy, misses = topo_job.grad_entropy().float(), topo_job.h1_misses
        weighted["topo"] = s.lambda_topo * l_topo
        total = total + weighted["topo"]
        logs["topo"] = l_topo.detach()
        logs["topo_grad_entropy"] = entropy
        # clouds whose H1 missed the time budget this step, per model (decisions 6c): never silent
        for model, count in misses.items():
            logs[f"topo_h1_over_budget_{model}"] = torch.tensor(float(count))
    if term_grad_norms:
        logs.update(_term_grad_norms(student, weighted, terms))
    logs["loss"] = total.detach()
    return total, logs


def _bad_step(logs: dict[str, torch.Tensor], terms: Sequence[str], term_grad_norms: bool,
              device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A step whose model outputs hold NaN/Inf (bad features, a diverged model; decision 23): the
    kernels refuse such input, so no term is computed. The total and every term the step would log
    are NaN (the same log columns as a good step), and the caller skips the step."""
    nan = torch.tensor(float("nan"), device=device)
    logs.update({t: nan for t in terms})
    if "grad" in terms:
        logs["saliency_overflow"] = torch.tensor(0.0)
    if "topo" in terms:
        logs["topo_grad_entropy"] = nan
        logs.update({f"topo_h1_over_budget_{model}": torch.tensor(0.0) for model in ("teacher", "student")})
    if term_grad_norms:
        logs.update({f"gradnorm_{t}": nan for t in ("seg", *terms)})
    logs["loss"] = nan
    return nan, logs


def _may_start(embedding: torch.Tensor) -> bool:
    """Whether the student's diagrams may start before the step's one finiteness read: always on a
    device (the persistence front door checks the host copy, and a bad step never reads the job's
    result); on the CPU, where ``fast.topo_loss`` checks the features when they are submitted, only
    when they are finite (a host check, no device to wait for)."""
    return embedding.device.type != "cpu" or _all_finite([embedding])


def _all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    return _finite_groups([tensors])[0]


def _finite_groups(groups: Sequence[Sequence[torch.Tensor]]) -> list[bool]:
    """For each group of tensors (on one device), whether all their entries are finite (True for an
    empty group), with one host read for all the groups."""
    flags = []
    for group in groups:
        per_tensor = [torch.isfinite(t).all() for t in group]
        flags.append(torch.stack(per_tensor).all() if per_tensor else None)
    device = next((f.device for f in flags if f is not None), torch.device("cpu"))
    read = torch.stack([torch.ones((), dtype=torch.bool, device=device) if f is None else f for f in flags])
    return [bool(v) for v in read.tolist()]


def _term_grad_norms(student: nn.Module, weighted: dict[str, torch.Tensor],
                     terms: Sequence[str]) -> dict[str, torch.Tensor]:
    """``gradnorm_<term>``: ||d(weighted term)/d(student parameters)||_2 for L_seg and each of
    ``terms`` (graph kept); NaN for a term left out of the step (an overflow, decision 23), so
    every step logs the same columns."""
    params = [p for p in student.parameters() if p.requires_grad]
    norms = {f"gradnorm_{t}": torch.tensor(float("nan")) for t in terms}
    for name, term in weighted.items():
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        sq = sum((g.detach().float() ** 2).sum() for g in grads if g is not None)
        norms[f"gradnorm_{name}"] = torch.as_tensor(sq, dtype=torch.float32).sqrt()
    return norms
