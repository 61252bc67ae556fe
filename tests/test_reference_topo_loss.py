"""reference.topo_loss_cloud / topo_loss (paper Algorithm 1) and reference.normalize_cloud (decision 13).

Proves: the gradient w.r.t. the raw student features equals central finite differences for every
normalisation mode and dimension set (generic, tie-free clouds); the batch loss and gradient are
the mean of the single-cloud ones with TPS seeds seed + b; a student whose features equal the
teacher's (up to translation and scale under ``scale``) has zero loss and gradient; the loss is
invariant to translation and scale of either input under ``scale`` and the gradient scales as
1/scale; dims=(0, 1) is the sum of dims=(0,) and dims=(1,); N <= m uses every point, m = 1 gives
zero; duplicated points give a finite gradient; clouds without H1 classes give the H0-only loss;
normalize_cloud's backward equals finite differences and the batch normalize (and backward) is
the cloud form applied per cloud; bad inputs raise ValueError naming the problem.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import min_relative_gap, tie_free_point_clouds
from test_reference_pwcd import pwcd_kink_margin

from reference.distances import pairwise_distances
from reference.normalize import normalize, normalize_backward, normalize_cloud, normalize_cloud_backward
from reference.persistence import rips_persistence
from reference.topo_loss import topo_loss, topo_loss_cloud
from reference.tps import tps_cloud

FD_REL_TOL = 1e-6
FEW = max(settings.default.max_examples // 25, 5)


def _pwcd_margin(S: np.ndarray, T: np.ndarray, m: int, seed: int, mode: str) -> float:
    """Distance of the sampled diagrams to a PWCD kink (NN switch, match/diagonal switch)."""
    idx = tps_cloud(normalize_cloud(T, mode), m, seed)
    dS = rips_persistence(pairwise_distances(normalize_cloud(S, mode)[idx]))
    dT = rips_persistence(pairwise_distances(normalize_cloud(T, mode)[idx]))
    return min(pwcd_kink_margin(a.pairs, b.pairs) for a, b in zip(dT, dS))


def central_differences(S: np.ndarray, T: np.ndarray, step: float, **kw) -> np.ndarray:
    fd = np.zeros_like(S)
    for idx in np.ndindex(*S.shape):
        Sp, Sm = S.copy(), S.copy()
        Sp[idx] += step
        Sm[idx] -= step
        fd[idx] = (topo_loss_cloud(Sp, T, **kw)[0] - topo_loss_cloud(Sm, T, **kw)[0]) / (2 * step)
    return fd


@settings(max_examples=FEW)
@given(
    S=tie_free_point_clouds(min_n=4, max_n=12, min_dim=1, max_dim=3),
    t_seed=st.integers(0, 2**32 - 1),
    m_frac=st.floats(0.4, 1.0),
    seed=st.integers(0, 1000),
    mode=st.sampled_from(["scale", "l2", "none"]),
    dims=st.sampled_from([(0, 1), (0,), (1,)]),
)
def test_topo_loss_cloud_gradient_matches_central_differences(S, t_seed, m_frac, seed, mode, dims) -> None:
    N = len(S)
    T = np.random.default_rng(t_seed).normal(size=(N, 4))
    m = max(2, int(round(m_frac * N)))
    if _pwcd_margin(S, T, m, seed, mode) < 1e-5:  # FD only away from the PWCD kinks
        return
    if mode == "l2" and min_relative_gap(normalize_cloud(S, "l2")) < 1e-5:  # l2 can create near ties
        return
    kw = dict(m=m, seed=seed, normalize=mode, dims=dims)
    loss, grad = topo_loss_cloud(S, T, **kw)
    rms = float(np.sqrt(np.mean(S**2)))
    fd = central_differences(S, T, 1e-6 * rms, **kw)
    # Relative to max |grad|, floored at 1e-3 loss / rms (the gradient's natural size) when tiny.
    scale = max(float(np.abs(grad).max()), 1e-3 * loss / rms, 1e-300)
    assert float(np.abs(fd - grad).max()) / scale < FD_REL_TOL


@settings(max_examples=FEW)
@given(
    sizes=st.lists(st.integers(2, 14), min_size=1, max_size=4),
    data_seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 10),
    seed=st.integers(0, 1000),
)
def test_topo_loss_is_the_mean_of_topo_loss_cloud_with_seeds_seed_plus_b(sizes, data_seed, m, seed) -> None:
    rng = np.random.default_rng(data_seed)
    S, T = rng.normal(size=(sum(sizes), 3)), rng.normal(size=(sum(sizes), 6))
    offsets = np.cumsum(sizes)
    loss, grad = topo_loss(S, T, offsets, m=m, seed=seed)
    starts = offsets - np.array(sizes)
    singles = [topo_loss_cloud(S[a:b], T[a:b], m=m, seed=seed + i) for i, (a, b) in enumerate(zip(starts, offsets))]
    assert loss == pytest.approx(np.mean([l for l, _ in singles]), rel=1e-14, abs=1e-300)
    np.testing.assert_allclose(grad, np.concatenate([g for _, g in singles]) / len(sizes), rtol=1e-14, atol=0)


@settings(max_examples=FEW)
@given(
    T=tie_free_point_clouds(min_n=3, max_n=16, min_dim=1, max_dim=8),
    shift=st.floats(-100, 100),
    log_scale=st.floats(-3, 3),
    seed=st.integers(0, 1000),
)
def test_topo_loss_cloud_is_zero_for_student_equal_to_teacher_up_to_translation_and_scale(T, shift, log_scale, seed) -> None:
    loss, grad = topo_loss_cloud(T.copy(), T, m=8, seed=seed)
    assert loss == 0.0 and np.all(grad == 0.0)
    # Equal up to rounding and the normalisation's eps = 1e-12 (relative eps / rms ~ 1e-9 here).
    loss, grad = topo_loss_cloud(T * 10**log_scale + shift, T, m=8, seed=seed)
    assert loss < 1e-15
    assert float(np.abs(grad).max()) < 1e-6 * 10 ** (-log_scale)


@settings(max_examples=FEW)
@given(
    S=tie_free_point_clouds(min_n=3, max_n=14, min_dim=1, max_dim=5),
    t_seed=st.integers(0, 2**32 - 1),
    a=st.floats(0.05, 20.0),
    b=st.floats(0.05, 20.0),
    shift=st.floats(-50, 50),
)
def test_topo_loss_cloud_scale_mode_is_invariant_to_input_translation_and_scale(S, t_seed, a, b, shift) -> None:
    T = np.random.default_rng(t_seed).normal(size=(len(S), 3))
    if min_relative_gap(T) < 1e-6:  # TPS/persistence of T must not flip on rounding
        return
    loss, grad = topo_loss_cloud(S, T, m=9, seed=1)
    loss_t, grad_t = topo_loss_cloud(a * S + shift, b * T - shift, m=9, seed=1)
    assert loss_t == pytest.approx(loss, rel=1e-8, abs=1e-14)
    # The absolute floor (1e-13 for these O(1) features) covers gradients that are exactly 0 in one
    # frame and rounding noise (~1e-17) in the other; without it atol would be 0 in that case.
    atol = (1e-9 * float(np.abs(grad).max()) + 1e-13) / a
    np.testing.assert_allclose(grad_t, grad / a, rtol=1e-6, atol=atol)


def test_topo_loss_cloud_dims_sum_and_budget_conventions() -> None:
    rng = np.random.default_rng(4)
    S, T = rng.normal(size=(15, 3)), rng.normal(size=(15, 5))
    both = topo_loss_cloud(S, T, m=12, dims=(0, 1))
    h0, h1 = topo_loss_cloud(S, T, m=12, dims=(0,)), topo_loss_cloud(S, T, m=12, dims=(1,))
    assert both[0] == pytest.approx(h0[0] + h1[0], rel=1e-14)
    np.testing.assert_allclose(both[1], h0[1] + h1[1], rtol=1e-12, atol=1e-15)
    assert h0[0] > 0 and h1[0] > 0
    # N <= m: every point, whatever the seed.
    full = topo_loss_cloud(S, T, m=15, seed=0)
    assert full[0] == topo_loss_cloud(S, T, m=1024, seed=99)[0]
    # m = 1: a single point has no finite pair.
    loss, grad = topo_loss_cloud(S, T, m=1)
    assert loss == 0.0 and np.all(grad == 0.0)


def test_topo_loss_cloud_teacher_gets_no_gradient_and_inputs_are_not_modified() -> None:
    rng = np.random.default_rng(5)
    S, T = rng.normal(size=(10, 2)), rng.normal(size=(10, 4))
    S0, T0 = S.copy(), T.copy()
    out = topo_loss_cloud(S, T, m=8)
    assert len(out) == 2 and out[1].shape == S.shape
    np.testing.assert_array_equal(S, S0)
    np.testing.assert_array_equal(T, T0)


@pytest.mark.parametrize("mode", ["scale", "l2", "none"])
def test_topo_loss_cloud_duplicated_points_give_a_finite_gradient(mode: str) -> None:
    rng = np.random.default_rng(6)
    S, T = rng.normal(size=(12, 3)), rng.normal(size=(12, 3))
    S[5:9] = S[0]
    T[3] = T[2]
    loss, grad = topo_loss_cloud(S, T, m=12, normalize=mode)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    loss, grad = topo_loss_cloud(np.zeros((6, 2)), T[:6], normalize=mode)  # every student point identical
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("mode", ["scale", "l2", "none"])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 8), c=st.integers(1, 5))
def test_normalize_cloud_backward_matches_central_differences(mode: str, seed: int, n: int, c: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = rng.normal(size=(n, c)), rng.normal(size=(n, c))  # loss = sum(w * normalize_cloud(h))
    # The normalisations have a kink where the norm they divide by is 0 (a row for l2, the
    # centred cloud for scale). Near it a central difference with step 1e-6 has a relative error
    # of about (1e-6 / norm)^2 (or crosses the kink), so the comparison is only well posed away
    # from it: norms of at least 0.05 keep that error under 1e-9.
    if mode == "l2":
        assume(float(np.linalg.norm(h, axis=1).min()) > 0.05)
    if mode == "scale" and n > 1:
        assume(float(np.sqrt(np.mean(np.sum((h - h.mean(0)) ** 2, axis=1)))) > 0.05)
    grad = normalize_cloud_backward(h, w, mode)
    fd = np.zeros_like(h)
    for idx in np.ndindex(*h.shape):
        hp, hm = h.copy(), h.copy()
        hp[idx] += 1e-6
        hm[idx] -= 1e-6
        fd[idx] = (np.sum(w * normalize_cloud(hp, mode)) - np.sum(w * normalize_cloud(hm, mode))) / 2e-6
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7 * max(float(np.abs(grad).max()), 1.0))


def test_normalize_modes_produce_what_decision_13_says() -> None:
    rng = np.random.default_rng(7)
    h = rng.normal(size=(20, 4)) * 5 + 3
    s = normalize_cloud(h, "scale")
    np.testing.assert_allclose(s.mean(0), 0.0, atol=1e-14)
    assert np.sqrt(np.mean(np.sum(s**2, 1))) == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(np.linalg.norm(normalize_cloud(h, "l2"), axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(normalize_cloud(h, "none"), h)
    zeros = np.zeros((3, 2))
    assert np.all(normalize_cloud(zeros, "scale") == 0) and np.all(normalize_cloud(zeros, "l2") == 0)
    assert np.all(np.isfinite(normalize_cloud_backward(zeros, np.ones((3, 2)), "scale")))
    assert np.all(np.isfinite(normalize_cloud_backward(zeros, np.ones((3, 2)), "l2")))


@pytest.mark.parametrize("mode", ["scale", "l2", "none"])
@settings(max_examples=FEW)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=4), seed=st.integers(0, 2**32 - 1))
def test_normalize_and_its_backward_apply_the_cloud_forms_cloud_by_cloud(mode: str, sizes: list, seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = rng.normal(size=(sum(sizes), 3)), rng.normal(size=(sum(sizes), 3))
    ends = np.cumsum(sizes)
    out, back = normalize(h, ends, mode), normalize_backward(h, ends, w, mode)
    for lo, hi in zip(ends - np.array(sizes), ends):
        np.testing.assert_array_equal(out[lo:hi], normalize_cloud(h[lo:hi], mode))
        np.testing.assert_array_equal(back[lo:hi], normalize_cloud_backward(h[lo:hi], w[lo:hi], mode))


def test_clouds_without_h1_classes_give_the_h0_only_loss() -> None:
    # Two or three points, or collinear points, have no H1 class: the H1 terms are PWCD(empty, empty) = 0.
    rng = np.random.default_rng(2)
    line = np.linspace(0.0, 1.0, 9)[:, None] ** 1.7
    S = np.concatenate([rng.normal(size=(5, 4)), line * rng.normal(size=(1, 4))])
    T = np.concatenate([rng.normal(size=(5, 3)), line * np.ones((1, 3))])
    offsets = [3, 5, 14]
    both, h0 = topo_loss(S, T, offsets, m=8), topo_loss(S, T, offsets, m=8, dims=(0,))
    assert both[0] == pytest.approx(h0[0], rel=1e-14) and both[0] > 0
    np.testing.assert_allclose(both[1], h0[1], rtol=1e-12, atol=1e-15)


def _cloud(n: int = 8, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, c))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(student_feats=np.full((8, 3), np.nan), teacher_feats=_cloud()), "student_feats.*NaN/Inf"),
        (dict(student_feats=_cloud(), teacher_feats=np.where(_cloud() > 1, np.inf, 0.0)), "teacher_feats.*NaN/Inf"),
        (dict(student_feats=_cloud(8), teacher_feats=_cloud(9)), "same points"),
        (dict(student_feats=_cloud(1), teacher_feats=_cloud(1)), "at least 2 points"),
        (dict(student_feats=_cloud(), teacher_feats=_cloud(), m=0), "m must be an integer >= 1"),
        (dict(student_feats=_cloud(), teacher_feats=_cloud(), m=-5), "m must be an integer >= 1"),
        (dict(student_feats=_cloud(), teacher_feats=_cloud(), dims=(2,)), "dims"),
        (dict(student_feats=_cloud(), teacher_feats=_cloud(), dims=()), "dims"),
        (dict(student_feats=_cloud(), teacher_feats=_cloud(), normalize="unit"), "normalize mode"),
        (dict(student_feats=_cloud()[:, 0], teacher_feats=_cloud()[:, 0]), "2-D"),
        (dict(student_feats=_cloud(), teacher_feats=_cloud(), eps_w=0.0), "eps_w"),
        (dict(student_feats=_cloud(), teacher_feats=_cloud(), eps_dist=-1.0), "eps_dist"),
        (dict(student_feats=_cloud(), teacher_feats=_cloud(), tie_tol=np.nan), "tie_tol"),
    ],
)
def test_topo_loss_cloud_bad_input_raises_value_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        topo_loss_cloud(**kwargs)


@pytest.mark.parametrize(
    "offsets, match",
    [
        ([4, 4, 10], "strictly increasing"),
        ([6, 4, 10], "strictly increasing"),
        ([0, 10], "strictly increasing"),
        ([4, 9], "must end at the number of rows 10"),
        ([4, 11], "must end at the number of rows 10"),
        ([], "non-empty 1-D"),
        ([[4, 10]], "non-empty 1-D"),
        ([4.5, 10], "integers"),
        ([9, 10], "at least 2 points"),
    ],
)
def test_topo_loss_bad_offsets_raise_value_error(offsets, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        topo_loss(_cloud(10), _cloud(10, 5), np.array(offsets), m=4)


def test_topo_loss_validates_every_cloud_before_any_work() -> None:
    S = _cloud(12)
    S[11, 0] = np.nan  # in the last cloud
    with pytest.raises(ValueError, match="student_feats"):
        topo_loss(S, _cloud(12), [6, 12], m=4)
