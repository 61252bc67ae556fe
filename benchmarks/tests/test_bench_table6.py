"""Paper Table 6 (App. B.4): forward time, backward time and peak memory of one cloud's H0+H1 loss.

Rows N = 30 ... 1024 (``--benchmark``; smoke: N = 12, 24). Methods: the naive baseline in a
killable child process (timeout / out of memory reported, not failed), the paper-style pipeline,
``fast.topo_loss`` on CPU (and CUDA when present), torch-topological when importable.
Every measurement also checks that the loss and gradient are finite, and the smoke run checks that
all methods compute the same loss and gradient as ``reference.topo_loss_cloud``, so a baseline that
quietly computes something else fails here.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.cpu.clouds import student_teacher
from benchmarks.cpu.isolated import run_isolated
from benchmarks.cpu.measure import sync
from benchmarks.cpu.naive_rips import naive_topo_loss
from benchmarks.cpu.sizes import SIZES
from benchmarks.cpu.table6 import FAMILY, in_process_methods
from fast.persistence import DEFAULT_ENGINE
from reference.topo_loss import topo_loss_cloud

_ROWS = [("paper-style", "cpu"), ("ours", "cpu"), ("ours", "cuda")]
if "torch-topological" in in_process_methods():
    _ROWS.append(("torch-topological", "cpu"))


def _row_param(method: str, device: str) -> Any:
    marks = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
    return pytest.param(method, device, id=f"{method}-{device}", marks=marks if device == "cuda" else [])


ROWS = [_row_param(m, d) for m, d in _ROWS]


def _rounds(n: int, full_run: bool) -> int:
    if not full_run:
        return 1
    return 10 if n <= 200 else 3


def _inputs(n: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    student, teacher = student_teacher(n, FAMILY, seed=n)
    return student.detach().to(device).requires_grad_(True), teacher.to(device)


def _engine(method: str) -> str | None:
    """The H1 engine behind a row (ours: the fast path's default engine)."""
    return {"ours": DEFAULT_ENGINE, "paper-style": "ripser", "torch-topological": "giotto-ph"}.get(method)


def _info(benchmark: Any, thread_info: dict[str, Any], **extra: Any) -> None:
    benchmark.extra_info.update(thread_info)
    benchmark.extra_info.update(extra)


@pytest.mark.parametrize(("method", "device"), ROWS)
def test_table6_forward(benchmark: Any, method: str, device: str, table6_n: int, full_run: bool,
                        thread_info: dict[str, Any]) -> None:
    benchmark.group = "table6-forward"
    loss_fn = in_process_methods()[method]
    student, teacher = _inputs(table6_n, device)
    dev = torch.device(device)

    def forward() -> torch.Tensor:
        loss = loss_fn(student, teacher)
        sync(dev)
        return loss

    loss = benchmark.pedantic(forward, rounds=_rounds(table6_n, full_run), warmup_rounds=int(full_run))
    assert torch.isfinite(loss) and float(loss.detach()) >= 0.0, f"{method} loss at N={table6_n} is {loss}"
    _info(benchmark, thread_info, method=method, device=device, n=table6_n, family=FAMILY,
          loss=float(loss.detach()), engine=_engine(method))


@pytest.mark.parametrize(("method", "device"), ROWS)
def test_table6_backward(benchmark: Any, method: str, device: str, table6_n: int, full_run: bool,
                         thread_info: dict[str, Any]) -> None:
    benchmark.group = "table6-backward"
    loss_fn = in_process_methods()[method]
    student, teacher = _inputs(table6_n, device)
    dev = torch.device(device)

    # One forward, then every round re-runs the backward on the retained graph: the backward's
    # cost alone, without paying a forward per round.
    loss = loss_fn(student, teacher)
    sync(dev)

    def zero_grad() -> None:
        student.grad = None

    def backward() -> None:
        loss.backward(retain_graph=True)
        sync(dev)

    benchmark.pedantic(backward, setup=zero_grad, rounds=_rounds(table6_n, full_run), warmup_rounds=int(full_run))
    assert student.grad is not None and torch.isfinite(student.grad).all()
    _info(benchmark, thread_info, method=method, device=device, n=table6_n, family=FAMILY,
          engine=_engine(method))


@pytest.mark.parametrize(("method", "device"), ROWS)
def test_table6_memory(method: str, device: str, table6_n: int, full_run: bool, naive_memory_mb: float,
                       record_isolated: Any) -> None:
    """Peak memory of one forward + backward, in a fresh child process (see benchmarks.cpu.table6);
    on CUDA without an address-space cap, which would break CUDA's initialisation (the device's
    peak comes from ``torch.cuda.max_memory_allocated``)."""
    if not full_run and table6_n != min(SIZES["table6_n"][0]):
        pytest.skip("the smoke run checks the memory probe at the smallest size only")
    result = run_isolated("benchmarks.cpu.table6:memory_point",
                          {"method": method, "device": device, "n": table6_n, "seed": table6_n},
                          timeout_s=600.0, memory_limit_mb=None if device == "cuda" else naive_memory_mb)
    record_isolated({"group": "table6-memory", "method": method, "device": device, "n": table6_n,
                     "family": FAMILY, "engine": _engine(method), **result})
    assert result["status"] == "ok", result
    assert result["grad_finite"], result
    assert result["tracemalloc_peak_mb"] > 0, result
    if result["rss_peak_mb"] is not None:
        assert result["rss_peak_mb"] >= 0, result
    if device == "cuda":
        assert result["cuda_peak_mb"] > 0, result


def test_table6_naive(table6_n: int, full_run: bool, naive_timeout: float, naive_memory_mb: float,
                      record_isolated: Any) -> None:
    """Naive baseline (decision 21) in a child process; timeout / out of memory are results."""
    result = run_isolated(
        "benchmarks.cpu.table6:naive_point",
        {"n": table6_n, "seed": table6_n, "tracemalloc_below_s": 60.0},
        timeout_s=naive_timeout,
        memory_limit_mb=naive_memory_mb,
    )
    record_isolated({"group": "table6", "method": "naive", "device": "cpu", "n": table6_n,
                     "family": FAMILY, **result})
    assert result["status"] in ("ok", "timeout", "out of memory"), result
    if not full_run:
        assert result["status"] == "ok", f"the naive baseline must finish at smoke size N={table6_n}: {result}"
    if result["status"] == "ok":
        assert np.isfinite(result["loss"]) and result["grad_finite"], result
        assert result["forward_s"] > 0 and result["backward_s"] > 0


def test_table6_methods_compute_the_same_loss_and_gradient() -> None:
    """All Table 6 rows are Algorithm 1 on the same cloud: loss and gradient equal the reference's."""
    n = 24
    student, teacher = student_teacher(n, FAMILY, seed=7)
    ref_loss, ref_grad = topo_loss_cloud(student.detach().numpy(), teacher.numpy())
    assert ref_loss > 0
    methods = dict(in_process_methods(), naive=lambda s, t: naive_topo_loss(s, t))
    for name, loss_fn in methods.items():
        student.grad = None
        loss = loss_fn(student, teacher)
        loss.backward()
        np.testing.assert_allclose(float(loss.detach()), ref_loss, rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(student.grad.numpy(), ref_grad, rtol=1e-7, atol=1e-12, err_msg=name)
