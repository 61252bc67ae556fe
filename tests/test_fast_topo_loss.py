"""fast.topo_loss (paper Algorithm 1, batched): the special cases next to the twin table.

The comparison with ``reference.topo_loss`` on fresh random inputs (float64 and float32, every
normalisation, separated clouds, duplicated points, empty H1 diagrams, clouds of very different
sizes, CUDA) is the ``topo_loss`` row of tests/test_twins.py. Here: exact ties, where the engine
may pick another valid subgradient than the reference (decision 4), gradcheck, the asynchronous
job, the teacher's missing gradient, mixed precision, the time budget (decision 6c) and bad inputs.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fast
from fast.persistence import PersistencePool, budget_miss_count
from fast.topo_loss import TopoLossJob
from reference.topo_loss import topo_loss as reference_topo_loss
from strategies import build_cloud, student_teacher_batch

FEW = max(settings.default.max_examples // 25, 5)
SEEDS = st.integers(0, 2**32 - 1)


def _fast(S: np.ndarray, T: np.ndarray, offsets: np.ndarray, dtype: torch.dtype = torch.float64,
          **kwargs) -> tuple[float, np.ndarray]:
    s = torch.tensor(S, dtype=dtype, requires_grad=True)
    loss = fast.topo_loss(s, torch.tensor(T, dtype=dtype), torch.from_numpy(offsets), **kwargs)
    loss.backward()
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    return loss.item(), s.grad.double().numpy()


def _assert_matches(got: tuple[float, np.ndarray], want: tuple[float, np.ndarray], rtol: float) -> None:
    """Loss and gradient equal to ``rtol`` relative to their magnitude, floored at 1e-6 (a loss
    that is 0 in exact arithmetic, e.g. two-point clouds, is rounding noise in float32)."""
    (loss, grad), (want_loss, want_grad) = got, want
    assert abs(loss - want_loss) <= rtol * max(abs(want_loss), 1e-6), (loss, want_loss)
    scale = max(np.abs(want_grad).max(), 1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=rtol, atol=rtol * scale)


@settings(max_examples=FEW)
@given(seed=SEEDS)
def test_fast_topo_loss_with_duplicated_points_equals_reference_and_stays_finite(seed: int) -> None:
    # Duplicates tie distances exactly, so the engine may route a gradient to another copy of the
    # same point than the reference does (decision 4): both are valid subgradients, with the same
    # sum over each group of copies and the same gradient on every other point.
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(5, 22, size=2)]
    S, T, offsets = student_teacher_batch(rng, sizes, 16, "scale", seed=0, duplicates=True)
    want_loss, want_grad = reference_topo_loss(S, T, offsets, m=16)
    loss, grad = _fast(S, T, offsets, m=16)
    assert np.isfinite(grad).all()
    assert abs(loss - want_loss) <= 1e-10 * want_loss
    groups = np.unique(np.concatenate([np.repeat(np.arange(len(sizes)), sizes)[:, None], S], axis=1),
                       axis=0, return_inverse=True)[1].ravel()
    assert groups.max() + 1 < len(S), "the test needs duplicated points"
    for g in range(groups.max() + 1):
        np.testing.assert_allclose(grad[groups == g].sum(0), want_grad[groups == g].sum(0), atol=1e-10)


@settings(max_examples=FEW)
@given(seed=SEEDS)
def test_fast_topo_loss_on_integer_lattice_clouds_full_of_exact_ties_equals_reference_loss(seed: int) -> None:
    # Exact ties (equal integer distances, duplicates) in float64 and float32 alike: the engines
    # may pick other critical simplices than the reference (decision 4), but the diagrams and so
    # the loss are the same; the gradient stays finite. normalize="none" keeps the ties exact.
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(4, 30, size=2)]
    S = np.concatenate([build_cloud("lattice", n, 4, int(rng.integers(2**32))) for n in sizes])
    T = np.concatenate([build_cloud("lattice", n, 3, int(rng.integers(2**32))) for n in sizes])
    offsets = np.cumsum(sizes)
    want_loss, _ = reference_topo_loss(S, T, offsets, m=16, normalize="none")
    loss, grad = _fast(S, T, offsets, m=16, normalize="none")
    assert abs(loss - want_loss) <= 1e-10 * max(want_loss, 1e-6)
    assert np.isfinite(grad).all()


def test_fast_topo_loss_passes_gradcheck_on_small_float64_clouds() -> None:
    rng = np.random.default_rng(8)
    S, T, offsets = student_teacher_batch(rng, [7, 6], 6, "scale", seed=0)
    t, off = torch.tensor(T), torch.from_numpy(offsets)
    s = torch.tensor(S, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: fast.topo_loss(x, t, off, m=6), (s,), eps=1e-7, atol=1e-6)


def test_asynchronous_job_gives_the_synchronous_result() -> None:
    rng = np.random.default_rng(5)
    S, T, offsets = student_teacher_batch(rng, [20, 9, 15], 12, "scale", seed=1)
    sync_loss, sync_grad = _fast(S, T, offsets, m=12, seed=1)
    s = torch.tensor(S, requires_grad=True)
    job = TopoLossJob(torch.tensor(T), offsets, m=12, seed=1)  # teacher diagrams start now
    s_work = s * 1.0  # other work between the halves, as the student forward would be
    job.submit_student(s_work)
    loss = job.loss()
    loss.backward()
    assert loss.item() == sync_loss
    np.testing.assert_array_equal(s.grad.numpy(), sync_grad)


def test_job_stamps_each_part_in_order_and_pool_workers_report_their_time_per_cloud() -> None:
    # benchmarks.cpu.topo_split reads these: the stamps of the training thread in the order the parts
    # run, and per cloud the worker that held it with the time it was held
    rng = np.random.default_rng(6)
    S, T, offsets = student_teacher_batch(rng, [20, 9, 15], 12, "scale", seed=1)
    pool = PersistencePool(workers=2)
    try:
        job = TopoLossJob(torch.tensor(T), offsets, m=12, seed=1, pool=pool)
        job.submit_student(torch.tensor(S, requires_grad=True))
        job.loss()
        job.grad_entropy()
    finally:
        pool.shutdown()
    t = job.timeline
    order = ["teacher_start", "teacher_copy_start", "teacher_on_host", "teacher_submitted", "teacher_launched",
             "student_start", "student_copy_start", "student_on_host", "student_submitted", "student_launched",
             "wait_start", "diagrams_ready", "loss_built", "entropy_start", "entropy_done"]  # on the CPU: no copy
    assert [t[e] for e in order] == sorted(t[e] for e in order)
    times = [f.task_time for model in ("teacher", "student") for f in job.diagram_futures[model]]
    assert len(times) == 6 and {x.worker for x in times} <= {0, 1}
    assert all(t["teacher_on_host"] <= x.started <= x.finished <= t["diagrams_ready"] for x in times)


def test_teacher_features_get_no_gradient() -> None:
    rng = np.random.default_rng(6)
    S, T, offsets = student_teacher_batch(rng, [10, 12], 8, "scale", seed=0)
    s, t = torch.tensor(S, requires_grad=True), torch.tensor(T, requires_grad=True)
    fast.topo_loss(s, t, offsets, m=8).backward()
    assert t.grad is None and s.grad is not None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_inputs_are_upcast_to_float32(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(7)
    S, T, offsets = student_teacher_batch(rng, [12, 9], 10, "scale", seed=0)
    s = torch.tensor(S, dtype=dtype, requires_grad=True)
    t = torch.tensor(T, dtype=dtype)
    loss = fast.topo_loss(s, t, offsets, m=10)
    loss.backward()
    assert loss.dtype == torch.float32 and s.grad.dtype == dtype and torch.isfinite(s.grad).all()
    want_loss, _ = reference_topo_loss(s.detach().double().numpy(), t.double().numpy(), offsets, m=10)
    assert abs(loss.item() - want_loss) <= 1e-5 * want_loss


def test_time_budget_zero_gives_h0_only_and_counts_every_cloud(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(9)
    S, T, offsets = student_teacher_batch(rng, [15, 11, 9], 10, "scale", seed=0)
    before = budget_miss_count()
    with caplog.at_level(logging.WARNING, logger="fast.persistence"):
        got = _fast(S, T, offsets, m=10, time_budget=0.0)
    assert budget_miss_count() - before == 2 * len(offsets)  # teacher and student of every cloud
    assert sum("missed its time budget" in r.getMessage() for r in caplog.records) == 2 * len(offsets)
    _assert_matches(got, reference_topo_loss(S, T, offsets, m=10, dims=(0,)), 1e-10)


class _NoWorkPool(PersistencePool):
    """A pool that fails the test if any diagram is requested."""

    def submit(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        raise AssertionError("bad input reached the persistence engine")


_S = np.random.default_rng(0).normal(size=(10, 4))
_T = np.random.default_rng(1).normal(size=(10, 3))


def _with(array: np.ndarray, row: int, value: float) -> np.ndarray:
    out = array.copy()
    out[row, 0] = value
    return out


BAD_INPUTS = {
    "NaN student": (dict(student_feats=_with(_S, 3, np.nan)), "student_feats"),
    "Inf teacher": (dict(teacher_feats=_with(_T, 0, np.inf)), "teacher_feats"),
    "row counts differ": (dict(teacher_feats=_T[:9], offsets=[4, 9]), "student_feats has 10 rows"),
    "offsets end early": (dict(offsets=[4, 9]), "offsets end at 9"),
    "offsets decrease": (dict(offsets=[6, 4, 10]), "strictly increasing"),
    "one-point cloud": (dict(offsets=[1, 10]), "at least 2 point"),
    "float offsets": (dict(offsets=torch.tensor([4.0, 10.0])), "integer tensor"),
    "2-D offsets": (dict(offsets=torch.tensor([[4, 10]])), "1-D"),
    "m = 0": (dict(m=0), "m must be an integer >= 1"),
    "m not integer": (dict(m=2.5), "m must be an integer >= 1"),
    "tie_tol": (dict(tie_tol=0.1), "tie_tol"),
    "dims": (dict(dims=(2,)), "dims"),
    "normalize": (dict(normalize="unit"), "normalize"),
    "engine": (dict(engine="ripser"), "engine="),
    "time budget": (dict(time_budget=-1.0), "time_budget"),
    "eps_w": (dict(eps_w=0.0), "eps_w"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_value_error_naming_it_before_any_work(case: str) -> None:
    changes, message = BAD_INPUTS[case]
    args = dict(student_feats=_S, teacher_feats=_T, offsets=[4, 10])
    args.update(changes)
    for key in ("student_feats", "teacher_feats"):
        args[key] = torch.as_tensor(args[key])
    with pytest.raises(ValueError, match=message):
        fast.topo_loss(**args, pool=_NoWorkPool(0))
