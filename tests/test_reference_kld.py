"""reference.kld: temperature-scaled KL logit distillation (paper Sec. 3.4, decision 18).

Proves: the loss equals T^2 * mean KL computed independently with scipy.stats.entropy; the
gradient equals central finite differences; ignored points change neither loss nor gradient and
get zero gradient; an empty labelled set gives 0 and a zero gradient; the T^2 scaling law
``kld(T z_S, T z_T, T) = T^2 kld(z_S, z_T, 1)``; identical logits give 0; huge logits stay finite;
bad inputs raise ValueError; with class weights (decision 44) the loss is the weighted mean of the
per-point KL and the gradient its central differences, unit weights change nothing.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import softmax
from scipy.stats import entropy

from reference.kld import kld

FD_STEP = 1e-6


def _logits(seed: int, n: int, k: int, scale: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, k, size=n)
    return rng.normal(scale=scale, size=(n, k)), rng.normal(scale=scale, size=(n, k)), labels


cases = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(2, 6))
temperatures = st.sampled_from([0.5, 1.0, 2.0, 4.0])


@given(case=cases, T=temperatures, use_labels=st.booleans())
def test_kld_equals_scipy_entropy_of_tempered_softmax(case, T: float, use_labels: bool) -> None:
    zs, zt, labels = _logits(*case)
    keep = labels != -1 if use_labels else np.ones(len(zs), bool)
    loss, _ = kld(zs, zt, labels if use_labels else None, temperature=T)
    if not keep.any():
        assert loss == 0.0
        return
    per_point = entropy(softmax(zt[keep] / T, axis=1), softmax(zs[keep] / T, axis=1), axis=1)
    assert loss == pytest.approx(T * T * per_point.mean(), rel=1e-10, abs=1e-14)


@given(case=cases, T=temperatures)
def test_kld_gradient_matches_central_differences(case, T: float) -> None:
    zs, zt, labels = _logits(*case)
    _, grad = kld(zs, zt, labels, temperature=T)
    fd = np.zeros_like(zs)
    for idx in np.ndindex(*zs.shape):
        zp, zm = zs.copy(), zs.copy()
        zp[idx] += FD_STEP
        zm[idx] -= FD_STEP
        fd[idx] = (kld(zp, zt, labels, T)[0] - kld(zm, zt, labels, T)[0]) / (2 * FD_STEP)
    scale = max(float(np.abs(grad).max()), 1e-3)
    assert float(np.abs(fd - grad).max()) / scale < 1e-6


@given(case=cases)
def test_kld_ignored_points_do_not_count_and_get_zero_gradient(case) -> None:
    zs, zt, labels = _logits(*case)
    keep = labels != -1
    loss, grad = kld(zs, zt, labels)
    assert np.all(grad[~keep] == 0.0)
    if keep.any():
        loss_sub, grad_sub = kld(zs[keep], zt[keep])
        assert loss == pytest.approx(loss_sub, rel=1e-12)
        np.testing.assert_allclose(grad[keep], grad_sub, rtol=1e-12)


def test_kld_custom_ignore_index() -> None:
    zs, zt, _ = _logits(1, 6, 3)
    labels = np.array([255, 0, 1, 255, 2, 0])
    loss, grad = kld(zs, zt, labels, ignore_index=255)
    loss_sub, _ = kld(zs[labels != 255], zt[labels != 255])
    assert loss == pytest.approx(loss_sub, rel=1e-12)
    assert np.all(grad[labels == 255] == 0.0)


@pytest.mark.parametrize("n", [0, 5])
def test_kld_empty_labelled_set_gives_zero_loss_and_gradient(n: int) -> None:
    zs, zt, _ = _logits(2, n, 4)
    loss, grad = kld(zs, zt, np.full(n, -1, dtype=np.int64))
    assert loss == 0.0 and grad.shape == (n, 4) and np.all(grad == 0.0)


@given(case=cases, T=st.sampled_from([0.25, 2.0, 5.0]))
def test_kld_temperature_scaling_law(case, T: float) -> None:
    zs, zt, labels = _logits(*case)
    loss_1, grad_1 = kld(zs, zt, labels, temperature=1.0)
    loss_T, grad_T = kld(T * zs, T * zt, labels, temperature=T)
    assert loss_T == pytest.approx(T * T * loss_1, rel=1e-10, abs=1e-14)
    # dL/dz_S at T is T (p_S - p_T) / n; with the logits scaled by T it equals T * grad at T = 1.
    np.testing.assert_allclose(grad_T, T * grad_1, rtol=1e-10, atol=1e-15)


@given(case=cases)
def test_kld_identical_logits_give_zero_and_row_shifts_do_not_matter(case) -> None:
    zs, zt, labels = _logits(*case)
    loss, grad = kld(zs, zs.copy(), labels)
    assert loss == pytest.approx(0.0, abs=1e-14) and np.abs(grad).max() < 1e-15
    shift = np.random.default_rng(case[0]).normal(size=(len(zs), 1)) * 100
    np.testing.assert_allclose(kld(zs + shift, zt, labels)[1], kld(zs, zt, labels)[1], atol=1e-12)


def test_kld_huge_logits_stay_finite() -> None:
    zs = np.array([[1e4, -1e4, 0.0], [-5e3, 5e3, 1.0]])
    zt = np.array([[-1e4, 1e4, 0.0], [5e3, 5e3, -1.0]])
    loss, grad = kld(zs, zt, temperature=0.5)
    assert np.isfinite(loss) and np.all(np.isfinite(grad)) and loss > 1e3


@pytest.mark.parametrize(
    "zs, zt, labels, T, match",
    [
        (np.zeros((3, 2)), np.zeros((3, 3)), None, 1.0, "same shape"),
        (np.zeros(3), np.zeros(3), None, 1.0, r"\(N, K\)"),
        (np.array([[np.nan, 0.0]]), np.zeros((1, 2)), None, 1.0, "student_logits.*NaN"),
        (np.zeros((1, 2)), np.array([[np.inf, 0.0]]), None, 1.0, "teacher_logits.*NaN"),
        (np.zeros((2, 2)), np.zeros((2, 2)), None, 0.0, "temperature"),
        (np.zeros((2, 2)), np.zeros((2, 2)), None, -1.0, "temperature"),
        (np.zeros((2, 2)), np.zeros((2, 2)), np.zeros(3, dtype=int), 1.0, "labels"),
        (np.zeros((2, 2)), np.zeros((2, 2)), np.zeros(2), 1.0, "labels"),
    ],
)
def test_kld_bad_input_raises_value_error(zs, zt, labels, T, match) -> None:
    with pytest.raises(ValueError, match=match):
        kld(zs, zt, labels, temperature=T)


@given(case=cases, T=temperatures)
def test_kld_class_weights_give_the_weighted_mean_and_its_gradient(case, T: float) -> None:
    """Decision 44: sum_i w_{y_i} KL_i / sum_i w_{y_i} over labelled points (scipy entropy per point),
    and its gradient by central differences."""
    zs, zt, labels = _logits(*case)
    w = np.random.default_rng(case[0] + 1).uniform(0.0, 3.0, size=zs.shape[1])
    loss, grad = kld(zs, zt, labels, temperature=T, class_weight=w)
    keep = labels != -1
    if not keep.any():
        assert loss == 0.0 and np.all(grad == 0.0)
        return
    per_point = entropy(softmax(zt[keep] / T, axis=1), softmax(zs[keep] / T, axis=1), axis=1)
    wk = w[labels[keep]]
    assert loss == pytest.approx(T * T * np.sum(wk * per_point) / wk.sum(), rel=1e-10, abs=1e-14)
    fd = np.zeros_like(zs)
    for idx in np.ndindex(*zs.shape):
        zp, zm = zs.copy(), zs.copy()
        zp[idx] += FD_STEP
        zm[idx] -= FD_STEP
        fd[idx] = (kld(zp, zt, labels, T, class_weight=w)[0] - kld(zm, zt, labels, T, class_weight=w)[0]) / (2 * FD_STEP)
    assert float(np.abs(fd - grad).max()) / max(float(np.abs(grad).max()), 1e-3) < 1e-6


def test_kld_unit_class_weights_change_nothing_and_zero_weights_give_zero() -> None:
    zs, zt, labels = _logits(3, 9, 4)
    loss, grad = kld(zs, zt, labels)
    loss_w, grad_w = kld(zs, zt, labels, class_weight=np.ones(4))
    assert loss_w == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(grad_w, grad, rtol=1e-12)
    loss_0, grad_0 = kld(zs, zt, labels, class_weight=np.zeros(4))
    assert loss_0 == 0.0 and np.all(grad_0 == 0.0)


@pytest.mark.parametrize(
    "labels, w, match",
    [
        (None, np.ones(2), "pass labels"),
        (np.array([0, 1]), np.ones(3), r"class_weight must be a \(2,\)"),
        (np.array([0, 1]), np.array([1.0, -1.0]), "class_weight"),
        (np.array([0, 1]), np.array([1.0, np.nan]), "class_weight"),
        (np.array([0, 5]), np.ones(2), r"labels must lie in \[0, 2\)"),
    ],
)
def test_kld_bad_class_weight_raises_value_error(labels, w, match) -> None:
    with pytest.raises(ValueError, match=match):
        kld(np.zeros((2, 2)), np.zeros((2, 2)), labels, class_weight=w)
