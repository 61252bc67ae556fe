"""The device path of ``fast.topo_loss`` (decision 42), exercised on the CPU where it can be.

What CUDA runs differently from the CPU: the features reach the host through ``fast.transfer``
(pinned, non-blocking, the work started in copy order), and PWCD's tie search is the padded tensor
form ``fast.pwcd._device_ties`` instead of the compiled sweep. Here, on CPU tensors: the tensor form
finds exactly the sweep's minima and ties on diagrams full of exact ties (several diagrams at once,
empty ones included); ``segment_pwcd`` of many diagram pairs equals ``pwcd`` of each pair, value and
gradient; the loss with the tensor form equals the loss with the sweep bit for bit; ``to_host``
runs its functions in call order and reports their errors through the future. Marked ``cuda``:
the same on a GPU (pinned copies, the loss against the CPU's, TPS indices against the reference's).
The counts of operators and synchronisations per batch are checked in benchmarks/tests/test_op_counts.py.
"""
from __future__ import annotations

import importlib
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fast
import reference
from fast.pwcd import Segments, segment_pwcd
from fast.transfer import to_device, to_host
from strategies import student_teacher_batch

pwcd_module = importlib.import_module("fast.pwcd")  # the module (``fast.pwcd`` is the function)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
FEW = max(settings.default.max_examples // 10, 5)


def _diagrams(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """``count`` (k, 2) diagrams on a coarse grid (exact ties everywhere), some of them empty."""
    sizes = rng.integers(0, 9, size=count) * (rng.random(count) > 0.2)
    return [np.sort(rng.integers(0, 4, size=(int(k), 2)) / 4.0, axis=1) for k in sizes]


def _segments(diagrams: list[np.ndarray], device: str = "cpu") -> tuple[torch.Tensor, Segments]:
    sizes = [len(d) for d in diagrams]
    ids, local = (torch.from_numpy(a).to(device) for a in Segments.host_index(sizes))
    pairs = torch.from_numpy(np.concatenate(diagrams) if diagrams else np.zeros((0, 2))).to(device)
    return pairs, Segments(sizes, ids, local)


@settings(max_examples=FEW)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 6))
def test_device_tie_search_finds_the_sweeps_minima_and_ties(seed: int, count: int) -> None:
    rng = np.random.default_rng(seed)
    P, teacher = _segments(_diagrams(rng, count))
    Q, student = _segments(_diagrams(rng, count))
    diag = torch.cat([(P[:, 1] - P[:, 0]) ** 2 / 2, (Q[:, 1] - Q[:, 0]) ** 2 / 2])
    want = pwcd_module._host_ties(P, Q, diag, teacher, student)
    got = pwcd_module._device_ties(P, Q, diag, teacher, student)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    # the same (owner, p, q) triples; the order within one owner does not change the values
    key = lambda ties, owner: sorted(zip(owner.tolist(), ties[:, 0].tolist(), ties[:, 1].tolist()))  # noqa: E731
    assert key(got[1], got[2]) == key(want[1], want[2])


@settings(max_examples=FEW)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 6), device_form=st.booleans())
def test_segment_pwcd_is_pwcd_of_every_diagram_pair(seed: int, count: int, device_form: bool) -> None:
    rng = np.random.default_rng(seed)
    teacher_d, student_d = _diagrams(rng, count), [d + rng.normal(size=d.shape) * 0.01 for d in _diagrams(rng, count)]
    P, teacher = _segments(teacher_d)
    Q, student = _segments(student_d)
    Q.requires_grad_(True)
    search = pwcd_module._device_ties if device_form else pwcd_module._host_ties
    saved, pwcd_module._host_ties = pwcd_module._host_ties, search
    try:
        got = segment_pwcd(P, Q, teacher, student, 1e-8)
    finally:
        pwcd_module._host_ties = saved
    cot = torch.from_numpy(rng.normal(size=count))
    (grad,) = torch.autograd.grad(got, [Q], cot, allow_unused=True)
    grad = torch.zeros_like(Q) if grad is None else grad
    start = 0
    for s, (t, q) in enumerate(zip(teacher_d, student_d)):
        value, want_grad = reference.pwcd(t, q, 1e-8)
        assert abs(float(got[s].detach()) - value) <= 1e-12 * max(1.0, abs(value))
        np.testing.assert_allclose(grad[start : start + len(q)].numpy(), float(cot[s]) * want_grad.reshape(-1, 2),
                                   rtol=1e-10, atol=1e-12)
        start += len(q)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_topo_loss_with_the_device_tie_search_equals_the_sweep_bit_for_bit(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(4)
    S, T, offsets = student_teacher_batch(rng, [30, 18, 25, 12], 16, "scale", seed=2)
    results = []
    for search in (pwcd_module._host_ties, pwcd_module._device_ties):
        saved, pwcd_module._host_ties = pwcd_module._host_ties, search
        try:
            s = torch.tensor(S, dtype=dtype, requires_grad=True)
            loss = fast.topo_loss(s, torch.tensor(T, dtype=dtype), offsets, m=16, seed=2)
            loss.backward()
        finally:
            pwcd_module._host_ties = saved
        results.append((loss.item(), s.grad.numpy()))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_to_host_runs_its_functions_in_order_and_reports_their_errors() -> None:
    seen: list[int] = []
    futures = [to_host(torch.full((3, 2), float(i)), lambda a, i=i: seen.append(i) or a.sum()) for i in range(4)]
    assert [f.result() for f in futures] == [0.0, 6.0, 12.0, 18.0] and seen == [0, 1, 2, 3]

    def fail(array: np.ndarray) -> None:
        raise ValueError("bad features")

    with pytest.raises(ValueError, match="bad features"):
        to_host(torch.zeros(2), fail).result()
    moved = to_device(np.arange(5), torch.device("cpu"))
    assert moved.dtype == torch.int64 and moved.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_topo_loss_on_cuda_equals_the_cpu_loss_with_the_references_tps_rows(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(11)
    S, T, offsets = student_teacher_batch(rng, [60, 45, 70], 24, "scale", seed=3)
    out = {}
    for device in ("cpu", "cuda"):
        s = torch.tensor(S, dtype=dtype, device=device, requires_grad=True)
        job = fast.TopoLossJob(torch.tensor(T, dtype=dtype, device=device), offsets, m=24, seed=3)
        loss = job.submit_student(s).loss()
        loss.backward()
        rows, _ = job._teacher.result()
        out[device] = (loss.item(), s.grad.cpu().double().numpy(), [r.result() for r in rows])
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert abs(out["cuda"][0] - out["cpu"][0]) <= tol * abs(out["cpu"][0])
    np.testing.assert_allclose(out["cuda"][1], out["cpu"][1], rtol=tol, atol=tol * np.abs(out["cpu"][1]).max())
    # TPS ran on the host copy of the normalised teacher: the reference's rows for those features
    for got, want in zip(out["cuda"][2], out["cpu"][2]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.cuda
@needs_cuda
def test_tps_on_cuda_float32_equals_the_reference_on_the_same_values() -> None:
    rng = np.random.default_rng(12)
    feats = torch.tensor(rng.normal(size=(700, 16)), dtype=torch.float32)
    got = fast.tps(feats.cuda(), [300, 700], 64, seed=5)
    want = reference.tps(feats.double().numpy(), [300, 700], 64, seed=5)
    assert all(g.device.type == "cuda" for g in got)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.cpu().numpy(), w)


@pytest.mark.cuda
@needs_cuda
def test_to_host_on_cuda_copies_after_the_queued_work_in_its_own_thread() -> None:
    x = torch.randn(4096, 64, device="cuda", dtype=torch.float64)
    y = x * 2.0 + 1.0  # queued on the current stream before the copy
    threads: list[str] = []
    future = to_host(y, lambda a: threads.append(threading.current_thread().name) or a.copy())
    np.testing.assert_array_equal(future.result(), (x * 2.0 + 1.0).cpu().numpy())
    assert threads[0].startswith("fast-host-copy")


@pytest.mark.cuda
@needs_cuda
def test_nan_features_on_cuda_are_refused_from_the_host_copy() -> None:
    rng = np.random.default_rng(13)
    S, T, offsets = student_teacher_batch(rng, [20, 15], 8, "scale", seed=0)
    T[3, 0] = np.nan
    s = torch.tensor(S, device="cuda", requires_grad=True)
    with pytest.raises(ValueError, match="contains NaN or Inf"):
        fast.topo_loss(s, torch.tensor(T, device="cuda"), offsets, m=8)
