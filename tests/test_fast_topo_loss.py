"""fast.topo_loss (paper Algorithm 1, batched) equals reference.topo_loss, loss and gradient.

Exact comparisons follow decision 6a: giotto-ph orders the filtration in float32, so the clouds
fed to it (the normalised TPS subsets of teacher and student) are drawn until their distinct
distances are more than 1e-5 apart (relative); the float64 native engine needs no such care.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist

import fast
from fast.persistence import PersistencePool, budget_miss_count
from fast.topo_loss import TopoLossJob
from reference.normalize import normalize_cloud
from reference.topo_loss import topo_loss as reference_topo_loss
from reference.tps import tps_cloud
from strategies import build_cloud

FEW = max(settings.default.max_examples // 25, 5)
SEEDS = st.integers(0, 2**32 - 1)
MODES = ["scale", "l2", "none"]


def _separated(points: np.ndarray, rel: float = 1e-5) -> bool:
    """True if the distinct pairwise distances of ``points`` differ pairwise by more than ``rel``."""
    d = np.unique(pdist(points))
    return len(d) < 2 or bool(np.min(np.diff(d) / d[1:]) > rel)


def _cloud(rng: np.random.Generator, n: int, channels: int, duplicates: bool) -> np.ndarray:
    x = rng.normal(size=(n, channels))
    if duplicates and n > 3:
        x[rng.integers(1, n, size=max(n // 5, 1))] = x[0]
    return x


def _batch(rng: np.random.Generator, sizes: list[int], m: int, normalize: str, seed: int,
           duplicates: bool = False, check: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Student (sumN, 4) and teacher (sumN, 3) clouds and END offsets; with ``check`` every cloud's
    normalised TPS subset (what the engine sees) is separated in the sense of decision 6a."""
    students, teachers = [], []
    for b, n in enumerate(sizes):
        for _ in range(200):
            s, t = _cloud(rng, n, 4, False), _cloud(rng, n, 3, duplicates)
            s[np.all(t == t[0], axis=1)] = s[0]  # duplicated points have equal features in both
            t_n = normalize_cloud(t, normalize)
            idx = tps_cloud(t_n, m, seed + b)
            if not check or (_separated(t_n[idx]) and _separated(normalize_cloud(s, normalize)[idx])):
                break
        else:
            raise AssertionError("could not draw a separated cloud; lower the sizes")
        students.append(s)
        teachers.append(t)
    return np.concatenate(students), np.concatenate(teachers), np.cumsum(sizes)


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


@pytest.mark.parametrize("normalize", MODES)
@settings(max_examples=FEW)
@given(seed=SEEDS)
def test_fast_topo_loss_matches_reference_float64(normalize: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(2, 25, size=rng.integers(1, 4))]
    m = int(rng.integers(3, 21))  # some clouds below m (all points), some above (TPS)
    dims = [(0, 1), (0,), (1,)][int(rng.integers(3))]
    S, T, offsets = _batch(rng, sizes, m, normalize, seed=5)
    want = reference_topo_loss(S, T, offsets, m=m, seed=5, normalize=normalize, dims=dims)
    _assert_matches(_fast(S, T, offsets, m=m, seed=5, normalize=normalize, dims=dims), want, 1e-10)


@pytest.mark.parametrize("normalize", MODES)
@settings(max_examples=FEW)
@given(seed=SEEDS)
def test_fast_topo_loss_matches_reference_float32(normalize: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(2, 25, size=rng.integers(1, 4))]
    m = int(rng.integers(3, 21))
    S, T, offsets = _batch(rng, sizes, m, normalize, seed=0)
    S, T = S.astype(np.float32).astype(np.float64), T.astype(np.float32).astype(np.float64)
    want = reference_topo_loss(S, T, offsets, m=m, normalize=normalize)
    _assert_matches(_fast(S, T, offsets, torch.float32, m=m, normalize=normalize), want, 1e-5)


@settings(max_examples=FEW)
@given(seed=SEEDS)
def test_fast_topo_loss_with_native_engine_matches_reference_on_any_cloud(seed: int) -> None:
    # The native engine reproduces the reference's float64 total order, ties included, so no
    # separation is needed; TPS subsets of larger clouds and duplicated points are exercised.
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(2, 120, size=rng.integers(1, 4))]
    S, T, offsets = _batch(rng, sizes, 40, "scale", seed=0, duplicates=bool(rng.integers(2)), check=False)
    want = reference_topo_loss(S, T, offsets, m=40)
    _assert_matches(_fast(S, T, offsets, m=40, engine="native"), want, 1e-10)


@settings(max_examples=FEW)
@given(seed=SEEDS)
def test_fast_topo_loss_with_duplicated_points_equals_reference_and_stays_finite(seed: int) -> None:
    # Duplicates tie distances exactly, so the engine may route a gradient to another copy of the
    # same point than the reference does (decision 4): both are valid subgradients, with the same
    # sum over each group of copies and the same gradient on every other point.
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(5, 22, size=2)]
    S, T, offsets = _batch(rng, sizes, 16, "scale", seed=0, duplicates=True)
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


def test_fast_topo_loss_with_empty_h1_diagrams_equals_reference() -> None:
    # Three points (or collinear points) have no H1 class: H1 terms are PWCD(empty, empty) = 0.
    rng = np.random.default_rng(2)
    S, T, offsets = _batch(rng, [3, 3, 2], 8, "scale", seed=0)
    line = np.linspace(0.0, 1.0, 9)[:, None] ** 1.7 * np.ones((1, 3))
    S, T = np.concatenate([S, line[:, :1] * rng.normal(size=(1, 4))]), np.concatenate([T, line])
    offsets = np.append(offsets, offsets[-1] + 9)
    want = reference_topo_loss(S, T, offsets, m=8)
    np.testing.assert_allclose(want[0], reference_topo_loss(S, T, offsets, m=8, dims=(0,))[0], rtol=1e-14)
    _assert_matches(_fast(S, T, offsets, m=8), want, 1e-10)


def test_fast_topo_loss_on_clouds_of_very_different_sizes_equals_reference() -> None:
    rng = np.random.default_rng(4)
    S, T, offsets = _batch(rng, [2, 3, 17, 300], 20, "scale", seed=3)
    want = reference_topo_loss(S, T, offsets, m=20, seed=3)
    _assert_matches(_fast(S, T, offsets, m=20, seed=3), want, 1e-10)


def test_fast_topo_loss_passes_gradcheck_on_small_float64_clouds() -> None:
    rng = np.random.default_rng(8)
    S, T, offsets = _batch(rng, [7, 6], 6, "scale", seed=0)
    t, off = torch.tensor(T), torch.from_numpy(offsets)
    s = torch.tensor(S, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: fast.topo_loss(x, t, off, m=6), (s,), eps=1e-7, atol=1e-6)


def test_asynchronous_job_gives_the_synchronous_result() -> None:
    rng = np.random.default_rng(5)
    S, T, offsets = _batch(rng, [20, 9, 15], 12, "scale", seed=1)
    sync_loss, sync_grad = _fast(S, T, offsets, m=12, seed=1)
    s = torch.tensor(S, requires_grad=True)
    job = TopoLossJob(torch.tensor(T), offsets, m=12, seed=1)  # teacher diagrams start now
    s_work = s * 1.0  # other work between the halves, as the student forward would be
    job.submit_student(s_work)
    loss = job.loss()
    loss.backward()
    assert loss.item() == sync_loss
    np.testing.assert_array_equal(s.grad.numpy(), sync_grad)


def test_teacher_features_get_no_gradient() -> None:
    rng = np.random.default_rng(6)
    S, T, offsets = _batch(rng, [10, 12], 8, "scale", seed=0)
    s, t = torch.tensor(S, requires_grad=True), torch.tensor(T, requires_grad=True)
    fast.topo_loss(s, t, offsets, m=8).backward()
    assert t.grad is None and s.grad is not None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_inputs_are_upcast_to_float32(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(7)
    S, T, offsets = _batch(rng, [12, 9], 10, "scale", seed=0)
    s = torch.tensor(S, dtype=dtype, requires_grad=True)
    t = torch.tensor(T, dtype=dtype)
    loss = fast.topo_loss(s, t, offsets, m=10)
    loss.backward()
    assert loss.dtype == torch.float32 and s.grad.dtype == dtype and torch.isfinite(s.grad).all()
    want_loss, _ = reference_topo_loss(s.detach().double().numpy(), t.double().numpy(), offsets, m=10)
    assert abs(loss.item() - want_loss) <= 1e-5 * want_loss


def test_time_budget_zero_gives_h0_only_and_counts_every_cloud(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(9)
    S, T, offsets = _batch(rng, [15, 11, 9], 10, "scale", seed=0)
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


def _cuda_params() -> list[object]:
    return [pytest.param(d, marks=pytest.mark.cuda) for d in (torch.float64, torch.float32)]


@pytest.mark.parametrize("dtype", _cuda_params())
def test_fast_topo_loss_on_cuda_matches_reference(dtype: torch.dtype) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    rng = np.random.default_rng(10)
    S, T, offsets = _batch(rng, [20, 7, 24, 60], 16, "scale", seed=0)
    if dtype == torch.float32:
        S, T = S.astype(np.float32).astype(np.float64), T.astype(np.float32).astype(np.float64)
    want = reference_topo_loss(S, T, offsets, m=16)
    s = torch.tensor(S, dtype=dtype, device="cuda", requires_grad=True)
    loss = fast.topo_loss(s, torch.tensor(T, dtype=dtype, device="cuda"), offsets, m=16)
    loss.backward()
    assert loss.device.type == "cuda"
    _assert_matches((loss.item(), s.grad.double().cpu().numpy()), want, 1e-10 if dtype == torch.float64 else 1e-5)
