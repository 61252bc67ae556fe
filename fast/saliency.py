"""Gradient-guided saliency alignment loss L_grad in PyTorch, paper Eq. (4)-(7), batched.

Twin of ``reference.saliency_loss`` (decisions 15-17), same arguments as tensors. Per layer the
clouds are handled together through per-row cloud ids: Eq. (4) channel weights by ``index_add_``
(constants: the given activation gradients are detached), Eq. (5) maps, ``M[index]`` to the input
points, Eq. (6) per-cloud min-max by ``scatter_reduce`` (``amin`` / ``amax``), Eq. (7) L1 summed
over input points / N, summed over layers. Only the loop over layers is in Python.

Tie convention (must equal the reference's uniform split): autograd's ``scatter_reduce`` backward
for ``amin``/``amax`` splits the gradient evenly among all positions equal to the result, *and it
counts the initial value of the output as one of them even with* ``include_self=False``. The
outputs are therefore initialised with +inf (min) / -inf (max), which no finite entry equals, so
the split is uniform over the tied input points only, exactly as in the reference. ``abs`` has
derivative sign(0) = 0 in autograd, as in the reference. Teacher maps are computed without grad.
``detach_range=True`` (decision 43) takes the min and max from the detached map.

Input checks (decision 39): the data checks of all layers (finite values, END offsets, every input
point inside its own cloud's rows) are gathered into one flag on the device and read once; only
when it fails are they repeated one by one on the host, to name the problem.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from fast.normalize import check_end_offsets, cloud_ids


def _end_offsets(offsets: torch.Tensor | Sequence[int], total: int, name: str, device: torch.device) -> torch.Tensor:
    """Validated END offsets (``fast.normalize.check_end_offsets``) as an int64 tensor on ``device``."""
    return torch.tensor(check_end_offsets(offsets, total, name=name), dtype=torch.int64, device=device)


def _check_layer(
    acts: torch.Tensor,
    grads: torch.Tensor,
    stage_offsets: torch.Tensor | Sequence[int],
    index: torch.Tensor,
    off: torch.Tensor,
    in_cloud: torch.Tensor,
    who: str,
) -> torch.Tensor:
    """Validate one layer of one model; return its stage END offsets on the device."""
    if acts.ndim != 2 or grads.shape != acts.shape:
        raise ValueError(
            f"{who}_acts must be (N_l, C_l) and {who}_grads the same shape, got "
            f"{tuple(acts.shape)} and {tuple(grads.shape)}"
        )
    for name, t in ((f"{who}_acts", acts), (f"{who}_grads", grads)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN/Inf; activations and their gradients must be finite")
    s_off = _end_offsets(stage_offsets, acts.shape[0], f"{who}_stage_offsets", in_cloud.device)
    if len(s_off) != len(off):
        raise ValueError(
            f"{who}_stage_offsets has {len(s_off)} clouds but offsets has {len(off)}; every stage "
            "must hold the same clouds as the input"
        )
    if index.shape != (in_cloud.shape[0],) or index.dtype.is_floating_point or index.dtype == torch.bool:
        raise ValueError(
            f"{who}_index must be an (N,) integer tensor, N = offsets[-1] = {in_cloud.shape[0]} input points, "
            f"mapping every input point to its stage row; got shape {tuple(index.shape)} dtype {index.dtype}"
        )
    s_start = s_off - torch.diff(s_off, prepend=s_off.new_zeros(1))
    idx = index.to(in_cloud.device)
    if bool(((idx < s_start[in_cloud]) | (idx >= s_off[in_cloud])).any()):
        raise ValueError(
            f"{who}_index maps some input points outside their own cloud's rows at this stage "
            f"(stage END offsets {s_off.tolist()}); pass the pooling inverse of the same batch"
        )
    return s_off


def _normalized_map(
    acts: torch.Tensor,
    grads: torch.Tensor,
    s_off: torch.Tensor,
    index: torch.Tensor,
    in_cloud: torch.Tensor,
    n_clouds: int,
    eps: float,
    detach_range: bool,
) -> torch.Tensor:
    """Eq. (4)-(6): per-cloud channel weights, saliency map, ``M[index]``, per-cloud min-max."""
    stage_cloud = cloud_ids(s_off, s_off.device, acts.shape[0])
    counts = torch.diff(s_off, prepend=s_off.new_zeros(1)).to(acts.dtype)
    g_abs = grads.detach().to(acts.dtype).abs()
    omega = torch.zeros(n_clouds, acts.shape[1], dtype=acts.dtype, device=acts.device)
    omega = omega.index_add_(0, stage_cloud, g_abs) / counts[:, None]
    # From here on in float64 (N-vectors, cheap): Eq. (6) divides by max - min + eps with eps = 1e-8,
    # below float32 resolution, so on a cloud whose map is (nearly) constant the 1/eps-sized min,
    # max and direct gradient terms cancel to rounding noise only in float64 (in float32 they left
    # O(1) garbage).
    u = (omega[stage_cloud] * acts.abs()).sum(dim=1)[index.to(acts.device)].to(torch.float64)
    inf = torch.full((n_clouds,), float("inf"), dtype=torch.float64, device=acts.device)
    ends = u.detach() if detach_range else u
    lo = inf.scatter_reduce(0, in_cloud, ends, "amin", include_self=False)
    hi = (-inf).scatter_reduce(0, in_cloud, ends, "amax", include_self=False)
    return (u - lo[in_cloud]) / (hi - lo + eps)[in_cloud]


def _checked_one_by_one(
    lists: dict[str, Sequence[torch.Tensor]], offsets: torch.Tensor | Sequence[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], None]:
    """Every input check in turn, each read on the host: a ValueError names the first that fails.
    Returns the END offsets, the cloud id of every input point and each layer's stage END offsets
    (student, teacher) on ``device``."""
    off_cpu = torch.as_tensor(offsets).detach().cpu()
    total = int(off_cpu[-1]) if off_cpu.ndim == 1 and off_cpu.numel() > 0 else -1
    off = _end_offsets(off_cpu, total, "offsets", device)
    in_cloud = cloud_ids(off, device, total)
    stage_offs = [
        tuple(_check_layer(lists[f"{who}_acts"][l], lists[f"{who}_grads"][l], lists[f"{who}_stage_offsets"][l],
                           lists[f"{who}_index"][l], off, in_cloud, who) for who in ("student", "teacher"))
        for l in range(len(lists["student_acts"]))
    ]
    return off, in_cloud, stage_offs, None


def _integers(t: torch.Tensor, shape: tuple[int, ...]) -> bool:
    return t.shape == shape and not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _checked_on_device(
    lists: dict[str, Sequence[torch.Tensor]], offsets: torch.Tensor | Sequence[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor] | None:
    """The checks of :func:`_checked_one_by_one` without a host synchronisation (decision 39): None
    when a shape or dtype check fails, else its results and a 0-d bool tensor on ``device`` that
    holds when every data check passes (finite values, END offsets strictly increasing to the row
    counts, every input point mapped inside its own cloud's rows). The caller reads it once."""
    index0 = lists["student_index"][0]
    off = torch.as_tensor(offsets)
    if not isinstance(index0, torch.Tensor) or index0.ndim != 1 or off.ndim != 1 or not _integers(off, off.shape) \
            or off.numel() == 0:
        return None
    n, b = index0.shape[0], off.shape[0]
    off = off.to(device, torch.int64)
    # cloud of every input point; safe for any offsets (the flag below rejects bad ones)
    in_cloud = torch.searchsorted(off, torch.arange(n, device=device), right=True).clamp_max(b - 1)
    flags = [(torch.diff(off, prepend=off.new_zeros(1)) > 0).all(), off[-1] == n]
    stage_offs = []
    for l in range(len(lists["student_acts"])):
        pair = []
        for who in ("student", "teacher"):
            acts, grads = lists[f"{who}_acts"][l], lists[f"{who}_grads"][l]
            s_off, index = torch.as_tensor(lists[f"{who}_stage_offsets"][l]), lists[f"{who}_index"][l]
            if acts.ndim != 2 or grads.shape != acts.shape or not _integers(s_off, (b,)) \
                    or not _integers(index, (n,)):
                return None
            s_off = s_off.to(device, torch.int64)
            s_start = s_off - torch.diff(s_off, prepend=s_off.new_zeros(1))
            idx = index.to(device)
            flags += [torch.isfinite(acts).all().to(device), torch.isfinite(grads).all().to(device),
                      (s_start < s_off).all(), s_off[-1] == acts.shape[0],
                      ((idx >= s_start[in_cloud]) & (idx < s_off[in_cloud])).all()]
            pair.append(s_off)
        stage_offs.append((pair[0], pair[1]))
    return off, in_cloud, stage_offs, torch.stack(flags).all()


def saliency_loss(
    student_acts: Sequence[torch.Tensor],
    student_grads: Sequence[torch.Tensor],
    student_stage_offsets: Sequence[torch.Tensor],
    student_index: Sequence[torch.Tensor],
    teacher_acts: Sequence[torch.Tensor],
    teacher_grads: Sequence[torch.Tensor],
    teacher_stage_offsets: Sequence[torch.Tensor],
    teacher_index: Sequence[torch.Tensor],
    offsets: torch.Tensor | Sequence[int],
    eps: float = 1e-8,
    detach_range: bool = False,
) -> torch.Tensor:
    """Scalar L_grad of Eq. (7), differentiable w.r.t. ``student_acts``; see ``reference.saliency_loss``.

    Lists have one entry per layer: ``*_acts[l]`` (N_l, C_l), ``*_grads[l]`` (N_l, C_l) = dL_seg/dF
    (constants), ``*_stage_offsets[l]`` (B,) END offsets at that stage, ``*_index[l]`` (N,) input
    point -> global stage row; ``offsets`` (B,) END offsets of the N input points.
    """
    lists = {
        "student_acts": student_acts, "student_grads": student_grads,
        "student_stage_offsets": student_stage_offsets, "student_index": student_index,
        "teacher_acts": teacher_acts, "teacher_grads": teacher_grads,
        "teacher_stage_offsets": teacher_stage_offsets, "teacher_index": teacher_index,
    }
    L = len(student_acts)
    if L == 0 or any(len(v) != L for v in lists.values()):
        raise ValueError(
            "every per-layer argument must be a non-empty list with one entry per layer; got lengths "
            + ", ".join(f"{k}={len(v)}" for k, v in lists.items())
        )
    if not (isinstance(eps, (int, float)) and 0 < eps < float("inf")):
        raise ValueError(f"eps must be a finite number > 0 (Eq. 6 stabiliser), got {eps}")
    device = student_acts[0].device
    dtype = torch.promote_types(student_acts[0].dtype, torch.float32)
    quick = _checked_on_device(lists, offsets, device)
    if quick is None or not bool(quick[3]):  # the one host read of the data checks
        quick = _checked_one_by_one(lists, offsets, device)  # raises naming the first problem
    off, in_cloud, stage_offs, _ = quick
    B, N = len(off), in_cloud.shape[0]
    loss = torch.zeros((), dtype=torch.float64, device=device)
    for l, (s_off_S, s_off_T) in enumerate(stage_offs):
        hat_S = _normalized_map(
            student_acts[l].to(dtype), student_grads[l].to(device), s_off_S, student_index[l], in_cloud, B, eps,
            detach_range,
        )
        with torch.no_grad():
            hat_T = _normalized_map(
                teacher_acts[l].detach().to(device=device, dtype=dtype),
                teacher_grads[l].to(device), s_off_T, teacher_index[l], in_cloud, B, eps, detach_range,
            )
        loss = loss + (hat_T - hat_S).abs().sum() / N
    return loss.to(dtype)
