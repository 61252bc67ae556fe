"""One outer iteration of gradient matching (Dataset Condensation's Algorithm 1, DD3D Eq. 10) at the
layout's speed against the form before it (decision 95) and with the second moments (decision
103), at the defaults' real batch (32 clouds a class), run by
``benchmarks/tests/test_bench_matching_speed.py``.

Forms, each of :func:`measure`'s ``form``:

- ``today``: the form before decision 95, kept here alone as the baseline: the PointNet channels
  last (linear maps over the last axis, instance norm between two transposes, ``amax``), each
  class's gradients and each inner step one pass over the whole batch (:func:`today_form` swaps it
  into ``train.condense.matching.matching_loops``, the same weights);
- ``layout``: decision 95's form (channels first, a max pool, passes over chunks of about
  ``CHUNK_POINTS`` points), glibc's default allocator, the last perceptron's gradient its own;
- ``layout+heap``: the same with ``train.runtime.heap.hold_freed_memory``, as ``python -m
  train.condense`` runs it;
- ``moments``: ``layout+heap`` with the last perceptron's gradient taken through each cloud's
  second moments at every size (``linear_instance_relu_max``, decision 103); the package takes
  them where ``second_moments_pay`` says, from 342 points a cloud, and ``layout+heap``'s way below.

:func:`measure` runs explicit-cloud gradient matching (``distill_explicit``, method gm) for
``iterations`` iterations on a generated set (:func:`matching_set`), after two untimed ones (a tiny one
loads the libraries, a full one makes the kernels' first calls and the allocator's first growth),
and returns the process's CPU
seconds per iteration (``time.process_time``: on a machine shared with other jobs, less noisy
than the wall clock), the wall seconds, the page faults, the peak resident memory above the process's after the tiny
iteration, the
loss history and, with ``profile``, the share of the CPU time of the most expensive operators
(``torch.profiler``).
"""
from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from train.condense.matching import matching_loops
from train.condense.methods.explicit import distill_explicit
from train.condense.matching.matching_loops import Batch, DistillSpec, task_loss
from train.data.objects import ObjectSet
from train.models.objects import pointnet
from train.models.objects.pointnet import WIDTHS
from train.runtime.distributed import DistInfo
from train.runtime.heap import hold_freed_memory

FORMS = ("today", "layout", "layout+heap", "moments")
REAL_BATCH = DistillSpec().real_batch  # the defaults' real clouds a class


def matching_set(classes: int, points: int, clouds: int = REAL_BATCH, seed: int = 0,
                 name: str = "modelnet40") -> ObjectSet:
    """``clouds`` random clouds a class (uniform in a ball whose radius depends on the class) of
    ``points`` points: the sizes of a data set, which is all the matching's cost depends on."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), clouds)
    direction = rng.normal(size=(len(labels), points, 3))
    radius = rng.uniform(size=(len(labels), points, 1)) ** (1 / 3) * (0.5 + 0.5 * (labels + 1) / classes)[:, None, None]
    cloud = direction / np.linalg.norm(direction, axis=-1, keepdims=True) * radius
    return ObjectSet(cloud.astype(np.float32), labels.astype(np.int64), tuple(f"class{k}" for k in range(classes)),
                     name, "train", "aligned")


class TodayPointNet(nn.Module):
    """The lightweight PointNet classifier as it was before decision 95, channels last; the same
    parameter names and shapes as ``train.models.objects.pointnet.PointNetClassifier``."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.trunk = nn.Module()
        self.trunk.layers = nn.ModuleList(nn.Sequential(nn.Linear(a, b, bias=False), nn.InstanceNorm1d(b), nn.ReLU())
                                          for a, b in zip((3, *WIDTHS[:-1]), WIDTHS))
        self.classifier = nn.Linear(WIDTHS[-1], num_classes)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        x = points
        for linear, norm, relu in self.trunk.layers:
            x = relu(norm(linear(x).transpose(1, 2)).transpose(1, 2))
        return self.classifier(x.amax(dim=1))


def _today_gradients(net: nn.Module, batch: Batch, k: int, parts: list[int | None], create_graph: bool
                     ) -> list[list[torch.Tensor]]:
    """Class k's gradients in one pass over the whole batch (classification: ``parts`` is [None])."""
    points, _ = batch
    labels = torch.full((len(points),), k, dtype=torch.long, device=points.device)
    loss = F.cross_entropy(net(points), labels)
    return [list(torch.autograd.grad(loss, list(net.parameters()), create_graph=create_graph))]


def _today_task_backward(net: nn.Module, points: torch.Tensor, parts: torch.Tensor | None,
                         labels: torch.Tensor) -> None:
    task_loss(net, points, parts, labels).backward()


@contextmanager
def today_form() -> Iterator[None]:
    """``train.condense.matching.matching_loops`` with the form before decision 95 (classification only): its
    fresh networks channels last (the same weights as the package's), its gradients and inner steps
    in one pass a batch."""
    fresh, gradients, backward = matching_loops.fresh_network, matching_loops._gradients, matching_loops.task_backward

    def today_network(num_classes: int, device: torch.device, num_parts: int | None = None) -> nn.Module:
        if num_parts is not None:
            raise ValueError("the baseline form is the classifier's")
        weights = fresh(num_classes, torch.device("cpu")).state_dict()
        with torch.random.fork_rng():  # the global stream as the package's form leaves it
            net = TodayPointNet(num_classes)
        net.load_state_dict(weights)
        return net.to(device).train()
    matching_loops.fresh_network, matching_loops._gradients = today_network, _today_gradients
    matching_loops.task_backward = _today_task_backward
    try:
        yield
    finally:
        matching_loops.fresh_network, matching_loops._gradients = fresh, gradients
        matching_loops.task_backward = backward


@contextmanager
def second_moments(taken: bool) -> Iterator[None]:
    """The PointNet classifier's last perceptron with its gradient through the second moments at
    every size (``taken``) or at none, whatever ``second_moments_pay`` says."""
    rule = pointnet.second_moments_pay
    pointnet.second_moments_pay = lambda points, c_in, c_out: taken
    try:
        yield
    finally:
        pointnet.second_moments_pay = rule


def _profile(run: Any, top: int) -> list[dict[str, Any]]:
    """The ``top`` operators by self CPU time while ``run()`` runs, with their share of the total."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    return [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in rows[:top]]


def measure(form: str, cpc: int, points: int, classes: int, iterations: int = 1, device: str = "cpu",
            profile_top: int = 0) -> dict[str, Any]:
    """``iterations`` iterations of gradient matching of explicit clouds in ``form`` (module
    docstring) at ``cpc`` clouds a class, ``classes`` classes of ``points`` points, 32 real clouds a
    class; CPU and wall seconds per iteration, extra peak memory (the process's ``ru_maxrss``; on
    CUDA the device's peak), the loss history and, with ``profile_top``, where the time goes."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    torch.set_num_threads(1)
    held = hold_freed_memory() if form in ("layout+heap", "moments") else False
    train = matching_set(classes, points)
    info, spec = DistInfo(0, 1, 0, torch.device(device)), DistillSpec(iterations=iterations)
    on_gpu = info.device.type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    with today_form() if form == "today" else second_moments(form == "moments"):
        distill_explicit(matching_set(2, 16), cpc, 1, DistillSpec(iterations=1), info, "gm")  # the libraries loaded
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        distill_explicit(train, cpc, 1, DistillSpec(iterations=1), info, "gm")  # the kernels' first calls
        cpu, wall = time.process_time(), time.perf_counter()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        _, _, _, history = distill_explicit(train, cpc, 0, spec, info, "gm")
        if on_gpu:
            torch.cuda.synchronize()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        top = _profile(lambda: distill_explicit(train, cpc, 0, DistillSpec(iterations=1), info, "gm"),
                       profile_top) if profile_top else []
    gpu = {"peak_device_mb": torch.cuda.max_memory_allocated() / 2**20} if on_gpu else {}
    return {"status": "ok", "form": form, "cpu_s_per_iteration": cpu / iterations,
            "wall_s_per_iteration": wall / iterations,
            "extra_peak_rss_mb": (peak - before) / 1024, "page_faults_per_iteration": faults / iterations,
            "history": [float(h) for h in history],
            "heap_held": held, "profile": top, **gpu}
