"""Batch throughput: forward + backward of the topological loss of B=12 clouds at M=1024 (Algorithm 1).

The figure a training step pays (paper: batch size 12, TPS budget M = 1024). Each cloud has
``N_PER_CLOUD`` points of 64-d features, TPS selects M of them. Methods: the paper-style pipeline
(clouds in series, one Ripser call per diagram) and ``fast.topo_loss`` with its default parallel
engine. Families (decision 6c): ``clusters`` and ``latent`` are representative; ``shell``
(unstructured features, on which TPS picks a near-spherical shell) is the worst case, reported
separately. Both methods must return the same loss; the smoke run uses B=3, M=32.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from benchmarks.clouds import batch
from benchmarks.paper_pipeline import paper_topo_loss
from fast.topo_loss import topo_loss

METHODS = {"paper-style": paper_topo_loss, "ours": topo_loss}
# (B, M, points per cloud): paper sizes under --benchmark, tiny in the smoke run.
FULL = (12, 1024, 4096)
SMOKE = (3, 32, 64)


@pytest.mark.parametrize("family", ["clusters", "latent", "shell"])
@pytest.mark.parametrize("method", list(METHODS))
def test_batch_forward_backward(benchmark: Any, method: str, family: str, full_run: bool,
                                thread_info: dict[str, Any]) -> None:
    benchmark.group = "batch"
    b, m, n = FULL if full_run else SMOKE
    student, teacher, offsets = batch(b, n, family, seed=1000)
    loss_fn = METHODS[method]
    losses: list[float] = []

    def step() -> None:
        student.grad = None
        loss = loss_fn(student, teacher, offsets, m=m)
        loss.backward()
        losses.append(float(loss.detach()))

    # The worst case is too slow to repeat within the suite's 30-minute budget.
    rounds = (1 if family == "shell" else 3) if full_run else 1
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=int(full_run and method == "ours"))
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert student.grad is not None and torch.isfinite(student.grad).all()
    benchmark.extra_info.update(thread_info)
    benchmark.extra_info.update(method=method, family=family, clouds=b, m=m, points_per_cloud=n,
                                loss=losses[-1])


def test_batch_methods_agree_on_the_loss() -> None:
    """Paper-style and ours are the same Algorithm 1: equal losses and gradients on one batch."""
    b, m, n = SMOKE
    student, teacher, offsets = batch(b, n, "latent", seed=5)
    results = {}
    for name, loss_fn in METHODS.items():
        student.grad = None
        loss = loss_fn(student, teacher, offsets, m=m)
        loss.backward()
        results[name] = (float(loss.detach()), student.grad.clone())
    (l_paper, g_paper), (l_ours, g_ours) = results["paper-style"], results["ours"]
    assert l_paper == pytest.approx(l_ours, rel=1e-9)
    torch.testing.assert_close(g_paper, g_ours, rtol=1e-7, atol=1e-12)
