"""The methods of paper Table 6 (App. B.4): one cloud's H0+H1 topological loss, forward and backward.

Every method computes Algorithm 1 for a single cloud of N points (N <= M = 1024, so TPS keeps all
points) with the same normalisation and PWCD, and returns a differentiable scalar:

- ``naive``: ``benchmarks.cpu.naive_rips`` (decision 21), measured in a killable child process
  (:func:`naive_point`, run through ``benchmarks.cpu.isolated``);
- ``paper-style``: ``benchmarks.cpu.paper_pipeline`` (Ripser per diagram, Python-loop routing);
- ``ours``: ``fast.topo_loss`` (CPU, and CUDA when a GPU is present);
- ``torch-topological``: the peer library's ``VietorisRipsComplex`` layer with the project's PWCD on
  top, only when ``torch_topological`` is importable (it is not a dependency).

Peak memory is measured in a fresh child process per (method, N) (:func:`memory_point`): inside a
long test process, freed memory that the allocator keeps resident is reused and the RSS high-water
mark would not move.
"""
from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.cpu.clouds import student_teacher
from benchmarks.cpu.measure import peak_memory, rss_peak_probe, sync, tracemalloc_peak_probe
from benchmarks.cpu.naive_rips import distances as _distances
from benchmarks.cpu.naive_rips import naive_topo_loss
from benchmarks.cpu.paper_pipeline import paper_topo_loss
from fast.normalize import normalize as normalize_clouds
from fast.pwcd import pwcd
from fast.topo_loss import topo_loss

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
FAMILY = "latent"  # structured features (decision 6c); the same clouds for every method


def has_torch_topological() -> bool:
    return importlib.util.find_spec("torch_topological") is not None


def torch_topological_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The peer's differentiable Rips layer (giotto-ph, ``n_threads=1`` per decision 6b) + PWCD.

    The layer gets the exact distance matrix (``treat_as_distances``) that the naive baseline uses,
    so that all rows share the same filtration.
    """
    from torch_topological.nn import VietorisRipsComplex

    layer = VietorisRipsComplex(dim=1, n_threads=1)
    one_cloud = [student.shape[0]]
    s_info = layer(_distances(normalize_clouds(student, one_cloud)), treat_as_distances=True)
    with torch.no_grad():
        t_info = layer(_distances(normalize_clouds(teacher, one_cloud)), treat_as_distances=True)
    total = student.new_zeros(())
    for s, t in zip(s_info, t_info):
        s_dgm, t_dgm = s.diagram, t.diagram
        # Decision 2: finite, non-zero-persistence pairs only (the layer already drops infinite ones).
        s_dgm = s_dgm[(s_dgm[:, 1] > s_dgm[:, 0]).detach()]
        t_dgm = t_dgm[t_dgm[:, 1] > t_dgm[:, 0]]
        total = total + pwcd(t_dgm.to(student.dtype), s_dgm.to(student.dtype))
    return total


def in_process_methods() -> dict[str, LossFn]:
    """Method name -> loss function for the Table 6 rows measured inside the test process."""
    methods: dict[str, LossFn] = {
        "paper-style": lambda s, t: paper_topo_loss(s, t, [s.shape[0]]),
        "ours": lambda s, t: topo_loss(s, t, [s.shape[0]]),
    }
    if has_torch_topological():
        methods["torch-topological"] = torch_topological_loss
    return methods


def naive_point(
    n: int, seed: int, tracemalloc_below_s: float, deadline: float | None = None
) -> dict[str, Any]:
    """Child-process target: one naive forward + backward at N = ``n`` (Table 6 naive columns).

    Times and peak RSS come from the same call; a second call under tracemalloc runs only when the
    first took less than ``tracemalloc_below_s`` (tracing slows the naive Python loop down).
    """
    student, teacher = student_teacher(n, FAMILY, seed)
    out: dict[str, Any] = {}

    def forward_backward(deadline: float | None) -> dict[str, Any]:
        student.grad = None
        t0 = time.perf_counter()
        loss = naive_topo_loss(student, teacher, deadline=deadline)
        t1 = time.perf_counter()
        loss.backward()
        return {
            "forward_s": t1 - t0,
            "backward_s": time.perf_counter() - t1,
            "loss": float(loss.detach()),
            "grad_finite": bool(torch.isfinite(student.grad).all()),
        }

    out["rss_peak_mb"] = rss_peak_probe(lambda: out.update(forward_backward(deadline)))
    if out["forward_s"] + out["backward_s"] < tracemalloc_below_s:
        out["tracemalloc_peak_mb"] = tracemalloc_peak_probe(lambda: forward_backward(None))
    out["status"] = "ok"
    out["torch_threads"] = torch.get_num_threads()
    return out


def memory_point(method: str, device: str, n: int, seed: int) -> dict[str, Any]:
    """Child-process target: peak memory of one forward + backward of ``method`` at N = ``n``.

    A tiny warm-up call first starts what the method keeps for the whole run (the engine's worker
    processes, lazily loaded libraries), so the peak is the cost of the N-point loss itself.
    """
    loss_fn = in_process_methods()[method]
    dev = torch.device(device)

    def on_device(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return pair[0].detach().to(dev).requires_grad_(True), pair[1].to(dev)

    warm_student, warm_teacher = on_device(student_teacher(8, FAMILY, seed + 1))
    loss_fn(warm_student, warm_teacher).backward()
    student, teacher = on_device(student_teacher(n, FAMILY, seed))

    def forward_backward() -> None:
        student.grad = None
        loss_fn(student, teacher).backward()
        sync(dev)

    out: dict[str, Any] = dict(peak_memory(forward_backward, dev))
    out["grad_finite"] = bool(torch.isfinite(student.grad).all())
    out["status"] = "ok"
    out["torch_threads"] = torch.get_num_threads()
    return out
