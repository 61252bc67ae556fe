"""fast.saliency_loss and fast.kld equal their reference twins (loss and autograd gradient).

Proves: on fresh random inputs (several clouds of very different sizes, several layers, labels
with ignored points, several temperatures) the fast loss and its autograd gradient equal
reference.saliency_loss / reference.kld to 1e-10 (float64) and 1e-5 (float32) relative; the same
holds at exact min/max ties (autograd's scatter_reduce split equals the reference's uniform split);
torch.autograd.gradcheck passes on small float64 inputs; bad inputs raise ValueError; the CUDA
variants (marked ``cuda``) repeat the comparisons on the device.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_softmax
from test_reference_saliency import ARG_ORDER, gradient_scale, random_saliency_inputs

# Imported from the defining modules: after ``import reference.kld`` the package attribute
# ``reference.kld`` is the submodule, not the function (same for fast.kld).
from fast.kld import kld as fast_kld
from fast.saliency import saliency_loss as fast_saliency_loss
from reference.kld import kld as reference_kld
from reference.saliency import saliency_loss as reference_saliency_loss

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
DEVICES = [
    pytest.param("cpu"),
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")],
    ),
]


def _to_torch(inp: dict, dtype: torch.dtype, device: str) -> dict:
    out = {}
    for key, value in inp.items():
        if key.endswith(("acts", "grads")):
            out[key] = [torch.tensor(a, dtype=dtype, device=device) for a in value]
        elif key == "offsets":
            out[key] = torch.tensor(value, device=device)
        else:
            out[key] = [torch.tensor(a, device=device) for a in value]
    for a in out["student_acts"]:
        a.requires_grad_(True)
    return out


def _assert_close(actual: torch.Tensor, expected: np.ndarray, rtol: float, scale: float | None = None) -> None:
    """max |actual - expected| <= rtol * scale, scale defaulting to max |expected|."""
    if scale is None:
        scale = float(np.abs(expected).max(initial=0.0))
    scale = max(scale, 1e-12)
    err = float(np.abs(actual.detach().cpu().double().numpy() - expected).max(initial=0.0))
    assert err <= rtol * scale, f"max abs error {err} > {rtol} * {scale}"


def _compare_saliency(inp: dict, dtype: torch.dtype, device: str) -> None:
    # The reference runs on the values the fast path sees (rounded to dtype), so only the
    # arithmetic differs, not the inputs.
    rounded = {
        k: ([np.asarray(torch.tensor(a, dtype=dtype).double()) for a in v] if k.endswith(("acts", "grads")) else v)
        for k, v in inp.items()
    }
    loss_ref, grads_ref = reference_saliency_loss(**rounded)
    t = _to_torch(inp, dtype, device)
    loss = fast_saliency_loss(**t)
    assert loss.dtype == dtype and loss.device.type == device and loss.ndim == 0
    loss.backward()
    _assert_close(loss, np.array(loss_ref), TOL[dtype])
    scale = gradient_scale(rounded, grads_ref)
    for a, g in zip(t["student_acts"], grads_ref):
        _assert_close(a.grad, g, TOL[dtype], scale)
    assert all(x.grad is None for x in t["teacher_acts"])


saliency_cases = st.tuples(
    st.integers(0, 2**32 - 1),
    st.lists(st.sampled_from([1, 2, 3, 17, 60, 300]), min_size=1, max_size=4).map(tuple),
    st.integers(1, 4),
)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@settings(max_examples=max(settings.default.max_examples // 10, 5))
@given(case=saliency_cases)
def test_fast_saliency_matches_reference_cpu(case, dtype: torch.dtype) -> None:
    _compare_saliency(random_saliency_inputs(*case), dtype, "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@settings(max_examples=max(settings.default.max_examples // 10, 5))
@given(case=saliency_cases)
def test_fast_saliency_matches_reference_cuda(case, dtype: torch.dtype) -> None:
    _compare_saliency(random_saliency_inputs(*case), dtype, "cuda")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fast_saliency_matches_reference_at_exact_min_max_ties(device: str, dtype: torch.dtype) -> None:
    inp = random_saliency_inputs(11, (40, 5, 200), 2)
    for A, g, s_off in zip(inp["student_acts"], inp["student_grads"], inp["student_stage_offsets"]):
        # Inside every cloud, copy (sign-flipped) the extremal rows: exact map ties at min and max.
        for lo, hi in zip(np.concatenate([[0], s_off[:-1]]), s_off):
            rows = np.arange(lo, hi)
            order = rows[np.argsort(np.abs(A[rows]).dot(np.abs(g[rows]).mean(0)))]
            A[order[1:3]] = A[order[0]]
            A[order[-3:-1]] = -A[order[-1]]
        A[::7] = 0.0  # zero activations: |F| has derivative sign(0) = 0 in both
    _compare_saliency(inp, dtype, device)


def test_fast_saliency_gradcheck_float64() -> None:
    inp = random_saliency_inputs(2, (4, 7, 3), 2)
    t = _to_torch(inp, torch.float64, "cpu")

    def f(*acts: torch.Tensor) -> torch.Tensor:
        return fast_saliency_loss(**{**t, "student_acts": list(acts)})

    assert torch.autograd.gradcheck(f, tuple(t["student_acts"]), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_fast_saliency_accepts_offsets_as_a_sequence_and_ignores_given_grad_graph() -> None:
    inp = random_saliency_inputs(4, (6, 9), 2)
    t = _to_torch(inp, torch.float64, "cpu")
    t["student_grads"] = [g.requires_grad_(True) for g in t["student_grads"]]
    loss = fast_saliency_loss(**{**t, "offsets": [int(x) for x in inp["offsets"]]})
    loss.backward()
    assert all(g.grad is None for g in t["student_grads"])  # Eq. (4) weights are constants
    assert loss.item() == pytest.approx(reference_saliency_loss(**inp)[0], rel=1e-12)


def _bad_saliency(mutate) -> dict:
    t = _to_torch(random_saliency_inputs(3, (4, 6), 2), torch.float64, "cpu")
    mutate(t)
    return t


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d["teacher_acts"].pop(), "one entry per layer"),
        (lambda d: d["student_acts"][0].data.__setitem__((0, 0), float("nan")), "student_acts contains"),
        (lambda d: d["teacher_grads"][1].__setitem__((1, 1), float("inf")), "teacher_grads contains"),
        (lambda d: d.update(offsets=torch.tensor([4, 9])), "offsets"),
        (lambda d: d.update(offsets=torch.tensor([4.0, 10.0])), "offsets"),
        (lambda d: d.update(offsets=torch.tensor([6, 4])), "offsets"),
        (lambda d: d["student_stage_offsets"].__setitem__(1, torch.tensor([1, 2, 5])), "student_stage_offsets"),
        (lambda d: d["teacher_index"].__setitem__(0, d["teacher_index"][0][:-1]), "teacher_index"),
        (lambda d: d["student_index"][0].__setitem__(0, int(d["student_stage_offsets"][0][-1]) - 1), "outside their own cloud"),
        (lambda d: d["student_grads"].__setitem__(0, d["student_grads"][0][:, :1]), "student_grads"),
    ],
)
def test_fast_saliency_bad_input_raises_value_error(mutate, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fast_saliency_loss(**_bad_saliency(mutate))


def _compare_kld(seed: int, n: int, k: int, T: float, labels_mode: str, dtype: torch.dtype, device: str) -> None:
    rng = np.random.default_rng(seed)
    zs = np.asarray(torch.tensor(rng.normal(scale=4, size=(n, k)), dtype=dtype).double())
    zt = np.asarray(torch.tensor(rng.normal(scale=4, size=(n, k)), dtype=dtype).double())
    labels = {"none": None, "some": rng.integers(-1, k, size=n), "all_ignored": np.full(n, -1)}[labels_mode]
    loss_ref, grad_ref = reference_kld(zs, zt, labels, temperature=T)
    s = torch.tensor(zs, dtype=dtype, device=device, requires_grad=True)
    lab = None if labels is None else torch.tensor(labels, device=device)
    loss = fast_kld(s, torch.tensor(zt, dtype=dtype, device=device), lab, temperature=T)
    assert loss.dtype == dtype and loss.ndim == 0
    loss.backward()
    # Conditioning-aware scales: the KL sums terms p_T (log p_T - log p_S) that can cancel to a tiny
    # result, so the loss error is measured against T^2 * mean sum |p_T (log p_T - log p_S)|; the
    # gradient T (p_S - p_T) / n against T / n (probabilities are <= 1).
    keep = np.ones(n, bool) if labels is None else labels != -1
    n_kept = max(int(keep.sum()), 1)
    log_ps, log_pt = log_softmax(zs[keep] / T, axis=1), log_softmax(zt[keep] / T, axis=1)
    loss_scale = T * T * float(np.sum(np.exp(log_pt) * np.abs(log_pt - log_ps))) / n_kept
    _assert_close(loss, np.array(loss_ref), TOL[dtype], loss_scale)
    _assert_close(s.grad, grad_ref, TOL[dtype], max(float(np.abs(grad_ref).max()), T / n_kept))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.sampled_from([1, 5, 64, 700]),
    k=st.integers(2, 20),
    T=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    labels_mode=st.sampled_from(["none", "some", "all_ignored"]),
)
def test_fast_kld_matches_reference_cpu(seed, n, k, T, labels_mode, dtype) -> None:
    _compare_kld(seed, n, k, T, labels_mode, dtype, "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@settings(max_examples=max(settings.default.max_examples // 10, 5))
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.sampled_from([1, 64, 5000]),
    T=st.sampled_from([0.5, 1.0, 4.0]),
    labels_mode=st.sampled_from(["none", "some", "all_ignored"]),
)
def test_fast_kld_matches_reference_cuda(seed, n, T, labels_mode, dtype) -> None:
    _compare_kld(seed, n, 13, T, labels_mode, dtype, "cuda")


def test_fast_kld_gradcheck_float64() -> None:
    rng = np.random.default_rng(0)
    zs = torch.tensor(rng.normal(size=(6, 4)), requires_grad=True)
    zt = torch.tensor(rng.normal(size=(6, 4)))
    labels = torch.tensor([0, -1, 2, 3, -1, 1])
    assert torch.autograd.gradcheck(lambda z: fast_kld(z, zt, labels, temperature=2.0), (zs,))


def test_fast_kld_all_ignored_is_zero_with_zero_gradient() -> None:
    zs = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    loss = fast_kld(zs, torch.randn(5, 3, dtype=torch.float64), torch.full((5,), -1))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(zs.grad == 0)


@pytest.mark.parametrize(
    "zs, zt, labels, T, match",
    [
        (torch.zeros(3, 2), torch.zeros(3, 3), None, 1.0, "same shape"),
        (torch.tensor([[float("nan"), 0.0]]), torch.zeros(1, 2), None, 1.0, "student_logits"),
        (torch.zeros(1, 2), torch.tensor([[float("inf"), 0.0]]), None, 1.0, "teacher_logits"),
        (torch.zeros(2, 2), torch.zeros(2, 2), None, 0.0, "temperature"),
        (torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(3, dtype=torch.long), 1.0, "labels"),
        (torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2), 1.0, "labels"),
    ],
)
def test_fast_kld_bad_input_raises_value_error(zs, zt, labels, T, match) -> None:
    with pytest.raises(ValueError, match=match):
        fast_kld(zs, zt, labels, temperature=T)


def test_argument_order_matches_the_reference() -> None:
    import inspect

    for ref, fst in ((reference_saliency_loss, fast_saliency_loss), (reference_kld, fast_kld)):
        assert list(inspect.signature(ref).parameters) == list(inspect.signature(fst).parameters)
    assert list(inspect.signature(fast_saliency_loss).parameters)[:8] == list(ARG_ORDER)
