"""reference.pwcd: PWCD loss of Eq. (2)-(3) and its Algorithm 4 gradient (decisions 6-10).

Proves: the gradient equals central finite differences on generic diagrams (every empty case
included); Lemma 1 noise suppression; every empty-diagram convention; loss >= 0, zero for identical
diagrams, invariance to permutations of either diagram; hand-computed values at the documented
ties (match == diagonal -> match wins; equal nearest neighbours share uniformly); bad inputs.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.pwcd import pwcd

FD_STEP = 1e-6
FD_REL_TOL = 1e-6


def _random_diagram(rng: np.random.Generator, k: int) -> np.ndarray:
    birth = rng.uniform(0.0, 2.0, k)
    return np.stack([birth, birth + rng.uniform(0.05, 2.0, k)], axis=1)


def pwcd_kink_margin(P: np.ndarray, Q: np.ndarray) -> float:
    """Smallest distance of the inputs to a kink of PWCD (NN switch or match/diagonal switch)."""
    if len(P) == 0 or len(Q) == 0:
        return np.inf
    cost = np.sum((P[:, None] - Q[None]) ** 2, axis=-1)
    margins = []
    for c, diag in ((cost, (P[:, 1] - P[:, 0]) ** 2 / 2), (cost.T, (Q[:, 1] - Q[:, 0]) ** 2 / 2)):
        srt = np.sort(c, axis=1)
        if c.shape[1] > 1:
            margins.append(np.min(srt[:, 1] - srt[:, 0]))
        margins.append(np.min(np.abs(srt[:, 0] - diag)))
    return float(min(margins))


def central_differences(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    fd = np.zeros_like(Q)
    for idx in np.ndindex(*Q.shape):
        Qp, Qm = Q.copy(), Q.copy()
        Qp[idx] += FD_STEP
        Qm[idx] -= FD_STEP
        fd[idx] = (pwcd(P, Qp)[0] - pwcd(P, Qm)[0]) / (2 * FD_STEP)
    return fd


@given(seed=st.integers(0, 2**32 - 1), m=st.integers(0, 7), k=st.integers(0, 7))
def test_pwcd_gradient_matches_central_differences(seed: int, m: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    P, Q = _random_diagram(rng, m), _random_diagram(rng, k)
    if pwcd_kink_margin(P, Q) < 1e-4:  # FD is only meaningful away from the nonsmooth set
        return
    loss, grad = pwcd(P, Q)
    fd = central_differences(P, Q)
    assert grad.shape == (k, 2)
    scale = max(float(np.abs(grad).max(initial=0.0)), 1e-3)
    assert float(np.abs(fd - grad).max(initial=0.0)) / scale < FD_REL_TOL


@given(seed=st.integers(0, 2**32 - 1), m=st.integers(0, 8), k=st.integers(0, 8))
def test_pwcd_nonnegative_and_invariant_to_permutations(seed: int, m: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    P, Q = _random_diagram(rng, m), _random_diagram(rng, k)
    loss, grad = pwcd(P, Q)
    assert loss >= 0.0
    perm_p, perm_q = rng.permutation(m), rng.permutation(k)
    loss_perm, grad_perm = pwcd(P[perm_p], Q[perm_q])
    assert loss_perm == pytest.approx(loss, rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(grad_perm, grad[perm_q], rtol=1e-12, atol=1e-15)


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 8), dup=st.booleans())
def test_pwcd_identical_diagrams_give_zero_loss_and_gradient(seed: int, k: int, dup: bool) -> None:
    P = _random_diagram(np.random.default_rng(seed), k)
    if dup:  # repeated pairs are legal in a multiset diagram
        P = np.concatenate([P, P[:1]])
    loss, grad = pwcd(P, P.copy())
    assert loss == 0.0
    assert np.all(grad == 0.0)


@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 6), extra=st.integers(0, 4))
def test_pwcd_student_point_on_teacher_point_gets_zero_gradient(seed: int, m: int, extra: int) -> None:
    rng = np.random.default_rng(seed)
    P = _random_diagram(rng, m)
    Q = np.concatenate([P, _random_diagram(rng, extra) + 5.0])  # copies first, then far extras
    _, grad = pwcd(P, Q)
    assert np.all(grad[:m] == 0.0)
    if extra:  # the far extras fall back to the diagonal: grad (-delta, delta) / K
        delta = Q[m:, 1] - Q[m:, 0]
        np.testing.assert_allclose(grad[m:], np.stack([-delta, delta], 1) / len(Q), rtol=1e-12)


def test_pwcd_noise_point_contribution_vanishes() -> None:
    """Lemma 1: a teacher point of persistence delta -> 0 changes loss and gradient by -> 0."""
    rng = np.random.default_rng(3)
    P = _random_diagram(rng, 5)
    Q = _random_diagram(rng, 6)
    base_loss, base_grad = pwcd(P, Q)
    eps_w = 1e-8
    changes = []
    for delta in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5):
        p0 = np.array([[50.0, 50.0 + delta]])  # near-diagonal noise point far from every student
        loss, grad = pwcd(np.concatenate([P, p0]), Q, eps_w=eps_w)
        change = abs(loss - base_loss) + float(np.abs(grad - base_grad).max())
        changes.append(change)
        # Eq. (12): the noise point's own recall summand is at most log(1+delta)/eps_w * min_q ||p0-q||^2,
        # and never more than its diagonal fallback weighted by w(p0) / w_bar.
        w0 = np.log1p(delta)
        w_bar = np.log1p(P[:, 1] - P[:, 0]).sum() + w0 + eps_w
        assert w0 * delta**2 / 2 / w_bar <= w0 / eps_w * float(np.min(np.sum((Q - p0) ** 2, 1)))
    assert all(a > b for a, b in zip(changes, changes[1:]))
    assert changes[-1] < 1e-3 * changes[0]


def test_pwcd_single_noise_teacher_point_alone_vanishes() -> None:
    for delta in (1e-2, 1e-4, 1e-6):
        loss, grad = pwcd(np.array([[1.0, 1.0 + delta]]), np.zeros((0, 2)))
        assert loss <= delta**2 / 2
        assert grad.shape == (0, 2)


@pytest.mark.parametrize("empty", [np.zeros((0, 2)), np.zeros(0), []])
def test_pwcd_both_empty_is_zero(empty) -> None:
    loss, grad = pwcd(empty, empty)
    assert loss == 0.0 and grad.shape == (0, 2)


def test_pwcd_student_empty_recall_uses_diagonal_and_precision_is_zero() -> None:
    P = np.array([[0.0, 1.0], [0.5, 3.0], [1.0, 1.5]])
    w = np.log1p(P[:, 1] - P[:, 0])
    expected = float(np.sum(w * (P[:, 1] - P[:, 0]) ** 2 / 2) / (w.sum() + 1e-8))
    loss, grad = pwcd(P, np.zeros((0, 2)))
    assert loss == pytest.approx(expected, rel=1e-14)
    assert grad.shape == (0, 2)


def test_pwcd_teacher_empty_recall_zero_and_precision_uses_diagonal() -> None:
    Q = np.array([[0.0, 2.0], [1.0, 1.5]])
    loss, grad = pwcd(np.zeros((0, 2)), Q)
    assert loss == pytest.approx((4 / 2 + 0.25 / 2) / 2, rel=1e-14)
    np.testing.assert_allclose(grad, [[-1.0, 1.0], [-0.25, 0.25]], rtol=1e-14)


def test_pwcd_match_wins_when_match_equals_diagonal() -> None:
    # p = (0, 2): dist_diag = 2; q = (1, 3): ||p - q||^2 = 2 = dist_diag(q) = dist_diag(p).
    P, Q = np.array([[0.0, 2.0]]), np.array([[1.0, 3.0]])
    loss, grad = pwcd(P, Q)
    s = np.log(3.0) / (np.log(3.0) + 1e-8)
    assert loss == pytest.approx(2.0 * s + 2.0, rel=1e-14)
    # recall 2 s (q - p) + precision 2 (q - p); the diagonal would have given (-2, 2) instead.
    np.testing.assert_allclose(grad, [[2 + 2 * s, 2 + 2 * s]], rtol=1e-14)


def test_pwcd_equal_nearest_students_share_the_recall_gradient() -> None:
    P = np.array([[0.0, 10.0]])
    Q = np.array([[1.0, 10.0], [0.0, 11.0]])  # both at squared distance 1 from p
    _, grad = pwcd(P, Q)
    s = np.log(11.0) / (np.log(11.0) + 1e-8)
    # recall: 2 s (q - p) / 2 to each; precision: 2/K (q - p) each.
    np.testing.assert_allclose(grad, [[s + 1.0, 0.0], [0.0, s + 1.0]], rtol=1e-14)


def test_pwcd_equal_nearest_teachers_share_the_precision_gradient() -> None:
    P = np.array([[4.0, 10.0], [5.0, 11.0]])
    Q = np.array([[5.0, 10.0]])  # squared distance 1 to both teacher points
    _, grad = pwcd(P, Q)
    w = np.log1p(np.array([6.0, 6.0]))
    s = w / (w.sum() + 1e-8)
    recall = 2 * s[0] * (Q[0] - P[0]) + 2 * s[1] * (Q[0] - P[1])
    precision = 2 * (Q[0] - P.mean(axis=0))
    np.testing.assert_allclose(grad[0], recall + precision, rtol=1e-14)


@pytest.mark.parametrize(
    "teacher, student, eps_w, match",
    [
        (np.zeros((3, 3)), np.zeros((1, 2)), 1e-8, "teacher_pairs"),
        (np.zeros((1, 2)), np.zeros(4), 1e-8, "student_pairs"),
        (np.array([[0.0, np.inf]]), np.zeros((1, 2)), 1e-8, "teacher_pairs.*essential"),
        (np.zeros((1, 2)), np.array([[np.nan, 1.0]]), 1e-8, "student_pairs"),
        (np.zeros((1, 2)), np.zeros((1, 2)), 0.0, "eps_w"),
        (np.zeros((1, 2)), np.zeros((1, 2)), -1.0, "eps_w"),
    ],
)
def test_pwcd_bad_input_raises_value_error_naming_it(teacher, student, eps_w, match) -> None:
    with pytest.raises(ValueError, match=match):
        pwcd(teacher, student, eps_w=eps_w)
