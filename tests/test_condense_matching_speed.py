"""Gradient matching at the layout's speed (decisions 95 and 103): the same maths, fewer waits.

- The fused last layer (instance norm, ReLU, max pool), and the same with its perceptron and the
  gradient through the second moments, have their composition's first and second derivatives;
  on duplicated points (tied maxima) the two forms agree; the rule that picks the second form.
- The channels-first PointNet computes the straightforward channels-last function (linear maps over
  the last axis, instance norm over the points, ReLU, ``amax``) and its gradients, in float64, on
  both sides of that rule.
- ``class_distances`` (Eq. 10) and the inner step's gradient, summed over chunks of clouds, equal
  the one-pass form on a whole batch, in float64, for the distance, the weights' gradients and the
  synthetic clouds' gradient through it.
- One outer iteration of gradient matching reads the device once per outer step (the loss), never
  per class (a CPU-countable proxy of the host waits); on CUDA no class or inner step synchronises
  with the host at all.
- ``hold_freed_memory`` serves large blocks from the heap and keeps them when freed (glibc), in the
  ranks spawned later too, and leaves no variable another child would inherit.
"""
from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fast import gradient_match_distance
from train.condense.matching import matching_loops
from train.condense.matching.matching_loops import (CHUNK_POINTS, DistillSpec, class_distances, fresh_network,
                                                    match_gradients, task_backward)
from train.condense.matching.released import loops_for
from train.engine.op_count import count_ops
from train.models.objects.pointnet import instance_relu_max, linear_instance_relu_max, second_moments_pay
from train.runtime.distributed import DistInfo

REPO = Path(__file__).resolve().parents[1]
POINTS = 16
CLASSES = [0, 1, 2]
CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def _clouds(b: int, seed: int, points: int = POINTS) -> torch.Tensor:
    return torch.rand(b, points, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def _straightforward_logits(net: torch.nn.Module, points: torch.Tensor) -> torch.Tensor:
    """The lightweight PointNet written channels last, from the network's own weights."""
    x = points
    for layer in net.trunk.layers:
        x = F.instance_norm(F.linear(x, layer[0].weight).transpose(1, 2)).transpose(1, 2).relu()
    return net.classifier(x.amax(dim=1))


def _straightforward_gradients(net: torch.nn.Module, points: torch.Tensor, k: int, create_graph: bool
                               ) -> list[torch.Tensor]:
    labels = torch.full((len(points),), k, dtype=torch.long)
    loss = F.cross_entropy(_straightforward_logits(net, points), labels)
    return list(torch.autograd.grad(loss, list(net.parameters()), create_graph=create_graph))


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return fresh_network(len(CLASSES), torch.device("cpu")).double()


@pytest.mark.parametrize("points", [POINTS, 400])  # 400: the last perceptron's gradient through the second moments
def test_the_channels_first_pointnet_is_the_channels_last_function(points: int) -> None:
    net, points = _net(), _clouds(5, 1, points).requires_grad_()
    logits = net(points)
    want = _straightforward_logits(net, points)
    assert torch.allclose(logits, want, rtol=1e-12, atol=1e-12)
    got_grads = torch.autograd.grad(logits.square().sum(), [points, *net.parameters()])
    want_grads = torch.autograd.grad(want.square().sum(), [points, *net.parameters()])
    for got, expected in zip(got_grads, want_grads):
        assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_instance_relu_max_has_the_gradients_and_second_gradients_of_its_composition() -> None:
    """The fused last layer against autograd's own first and second derivatives (float64)."""
    x = torch.randn(2, 3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    fused = lambda x: instance_relu_max(x, 1e-5)  # noqa: E731
    assert torch.allclose(fused(x), F.instance_norm(x, eps=1e-5).relu().amax(dim=2), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fused, (x,)) and torch.autograd.gradgradcheck(fused, (x,))


@pytest.mark.parametrize("b,c_in,c_out,n", [(2, 3, 7, 5), (1, 4, 3, 3), (1, 2, 5, 2), (3, 5, 6, 9)])
def test_linear_instance_relu_max_has_the_gradients_and_second_gradients_of_its_composition(
        b: int, c_in: int, c_out: int, n: int) -> None:
    """The perceptron and the fused last layer with the gradient through the second moments, against
    autograd's own first and second derivatives of the composition (float64; down to two points)."""
    gen = torch.Generator().manual_seed(b * 100 + n)
    h = torch.randn(b, c_in, n, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(c_out, c_in, dtype=torch.float64, generator=gen, requires_grad=True)
    fused = lambda h, w: linear_instance_relu_max(h, w, 1e-5)  # noqa: E731
    plain = F.instance_norm(F.conv1d(h, w.unsqueeze(-1)), eps=1e-5).relu().amax(dim=2)
    assert torch.allclose(fused(h, w), plain, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fused, (h, w)) and torch.autograd.gradgradcheck(fused, (h, w))


def test_on_duplicated_points_the_two_fused_forms_agree() -> None:
    """Each cloud's points twice over (every maximum tied): both forms send a maximum's gradient to
    the first of its copies, so values and gradients agree (float64)."""
    gen = torch.Generator().manual_seed(4)
    h = torch.randn(3, 4, 5, dtype=torch.float64, generator=gen).repeat(1, 1, 2).requires_grad_()
    w = torch.randn(6, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    weights = torch.randn(3, 6, dtype=torch.float64, generator=gen)
    outs = [linear_instance_relu_max(h, w, 1e-5), instance_relu_max(F.conv1d(h, w.unsqueeze(-1)), 1e-5)]
    assert torch.allclose(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    got, want = (torch.autograd.grad((out * weights).sum(), (h, w)) for out in outs)
    for a, e in zip(got, want):
        assert torch.allclose(a, e, rtol=1e-10, atol=1e-12)


def test_the_second_moments_are_taken_where_they_halve_the_multiplications() -> None:
    assert not second_moments_pay(341, 128, 1024) and second_moments_pay(342, 128, 1024)
    assert not second_moments_pay(64, 128, 1024) and second_moments_pay(1024, 128, 1024)
    assert not any(second_moments_pay(n, 64, 128) for n in (1, 1024, 10**6))  # C_out <= 2 C_in: never


def test_chunked_class_distances_equal_the_one_pass_form_in_float64() -> None:
    """Real batches of 2.5 chunks and synthetic ones of 1.25 (CHUNK_POINTS points a chunk): the
    distances and the synthetic clouds' gradients are those of one pass over each batch."""
    net, chunk = _net(), CHUNK_POINTS // POINTS
    real = {k: _clouds(5 * chunk // 2, 10 + k) for k in CLASSES}
    synthetic = torch.nn.Parameter(torch.stack([_clouds(5 * chunk // 4, 20 + k) for k in CLASSES]))
    got = list(class_distances(net, CLASSES, lambda k: (real[k], None), lambda k: (synthetic[k], None)))
    (got_grad,) = torch.autograd.grad(sum(got), [synthetic])
    want = [gradient_match_distance(_straightforward_gradients(net, synthetic[k], k, True),
                                    [g.detach() for g in _straightforward_gradients(net, real[k], k, False)])
            for k in CLASSES]
    (want_grad,) = torch.autograd.grad(sum(want), [synthetic])
    assert torch.allclose(torch.stack(got), torch.stack(want), rtol=1e-10, atol=1e-12)
    assert torch.allclose(got_grad, want_grad, rtol=1e-8, atol=1e-12)


def test_the_chunked_inner_step_adds_the_one_pass_gradient() -> None:
    net, chunk = _net(), CHUNK_POINTS // POINTS
    points, labels = _clouds(3 * chunk + 1, 3), torch.arange(3 * chunk + 1) % len(CLASSES)
    task_backward(net, points, None, labels)
    want = torch.autograd.grad(F.cross_entropy(_straightforward_logits(net, points), labels), list(net.parameters()))
    for p, expected in zip(net.parameters(), want):
        assert torch.allclose(p.grad, expected, rtol=1e-10, atol=1e-13)


def _iteration(device: torch.device, cpc: int, classes: int = len(CLASSES)) -> tuple[torch.optim.Optimizer, list]:
    """One outer iteration of gradient matching of explicit clouds on ``device``, its arguments."""
    gen = torch.Generator().manual_seed(0)
    real_points = torch.rand(classes * 6, POINTS, 3, generator=gen).to(device)
    labels = torch.arange(classes).repeat_interleave(6).numpy()
    synthetic = torch.nn.Parameter(torch.rand(classes * cpc, POINTS, 3, generator=gen).to(device))
    rows = {k: torch.arange(k * cpc, (k + 1) * cpc, device=device) for k in range(classes)}
    real = matching_loops.real_sampler(real_points, labels, 4, gen)
    optimizer = torch.optim.Adam([synthetic], lr=1e-3)
    spec, info = DistillSpec(iterations=1), DistInfo(0, 1, 0, device)
    loops = loops_for("shapes", "rotated", "classification", cpc)  # (5, 5) at CPC 1 to 9: inner epochs between

    def clouds(k: int) -> tuple[torch.Tensor, None]:
        return synthetic[rows[k]], None
    return optimizer, [list(range(classes)), classes, loops, real, clouds, spec, gen, info]


@pytest.mark.parametrize("classes", [2, 3])
def test_an_iteration_reads_the_device_twice_an_outer_step_never_per_class(classes: int) -> None:
    """Each outer step reads its loss (summed_step) and Adam its step count (a host tensor); no
    class and no inner step adds a read, at any number of classes."""
    optimizer, args = _iteration(torch.device("cpu"), 2, classes)
    count = count_ops(lambda: match_gradients(optimizer, *args))
    assert count.syncs == 2 * args[2].outer, count.by_sync


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_no_class_and_no_inner_step_waits_for_the_device() -> None:
    """Every class's draws and gradients and every inner step queue their work without a host wait
    (CUDA's sync debug mode raises on one): the real draws' indices and the inner draws go through
    page-locked memory."""
    optimizer, args = _iteration(torch.device("cuda"), 2)
    classes, _, _, real, synthetic, _, gen, info = args
    torch.manual_seed(0)
    net = fresh_network(len(classes), info.device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        total = sum(class_distances(net, classes, real, synthetic))
        points = torch.cat([synthetic(k)[0] for k in classes]).detach()
        labels = matching_loops.to_device(torch.arange(len(classes)).repeat_interleave(2), info.device)
        rows = matching_loops.to_device(torch.randperm(len(labels), generator=gen), info.device)
        task_backward(net, points[rows], None, labels[rows])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(total).item()


def _rank_heap(argv: list[str]) -> int:
    """A rank ``spawn_local`` started, reporting in its exit status: 10, plus 1 where a fresh 64 MB
    block comes from the heap (below the program break), plus 2 where it sees a ``MALLOC_`` variable."""
    libc = ctypes.CDLL(None)
    libc.sbrk.restype = ctypes.c_void_p
    block = torch.empty(2**24)
    return 10 + int(block.data_ptr() < libc.sbrk(0)) + 2 * any(k.startswith("MALLOC_") for k in os.environ)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_hold_freed_memory_serves_large_blocks_from_the_heap_keeps_them_and_reaches_only_the_ranks() -> None:
    """A 64 MB block comes from the heap (below the program break) rather than from its own mapping,
    and freeing it does not move the break back; the ranks spawned later hold their memory too, while
    another child (a persistence worker, a tool) starts with glibc's defaults: no ``MALLOC_`` variable
    is left in the environment (decision 90)."""
    script = """
import ctypes, os, subprocess, sys
import torch
from tests.test_condense_matching_speed import _rank_heap
from train.runtime.distributed import spawn_local
from train.runtime.heap import hold_freed_memory
applied = hold_freed_memory() if sys.argv[1] == "hold" else False
libc = ctypes.CDLL(None)
libc.sbrk.restype = ctypes.c_void_p
block = torch.empty(2**24)
in_heap = block.data_ptr() < libc.sbrk(0)
before = libc.sbrk(0)
del block
probe = "import os; print(','.join(k for k in os.environ if k.startswith('MALLOC_')) or 'none')"
child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
print(applied, in_heap, libc.sbrk(0) == before, child, spawn_local(_rank_heap, [], 1))
"""
    outputs = {}
    for mode in ("hold", "default"):
        done = subprocess.run([sys.executable, "-c", script, mode], cwd=REPO, capture_output=True, text=True,
                              check=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                                               "OMP_NUM_THREADS": "1"})
        outputs[mode] = done.stdout.split()
    assert outputs["hold"] == ["True", "True", "True", "none", "11"]
    assert outputs["default"] == ["False", "False", "True", "none", "10"]
