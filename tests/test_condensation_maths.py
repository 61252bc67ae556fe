"""Properties of DD3D's maths (paper Eq. 4-11, Theorem 1; decisions 74-76): the canonical frame's
invariance, the ill-posed clouds, the gradients of Eq. (10)'s D, distribution matching and the
generator (finite differences, ``gradcheck``), and Theorem 1 checked numerically.

The twins are compared on random inputs in tests/test_twins.py; here each property is checked on both
(``TWINS``) where it is a property of the definition. Clouds are drawn well-posed by the margins of
tests/condensation_draws.py; the ill-posed ones are their own tests.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch
from condensation_draws import (anisotropic_cloud, draw_generator_forward, random_gradients, random_orthogonal,
                                sign_well_posed)
from hypothesis import given, settings
from hypothesis import strategies as st

import fast
import reference
from reference.canonical import PCA_MIN_GAP
from reference.matching import GM_EPS

SEEDS = st.integers(0, 2**32 - 1)
FEW = settings(max_examples=40)


def _run(package: str, name: str, *args: np.ndarray, **kwargs: float) -> np.ndarray:
    """``package.name`` on float64 numpy inputs, its result as numpy (the value only for a loss)."""
    if package == "reference":
        return getattr(reference, name)(*args, **kwargs)
    return getattr(fast, name)(*(torch.tensor(a) for a in args), **kwargs).numpy()


TWINS = pytest.mark.parametrize("package", ["reference", "fast"])


def _canonical(package: str, clouds: np.ndarray, w0: float) -> np.ndarray:
    return _run(package, "sign_canonical", _run(package, "pca_canonical", clouds), w0=w0)


# --- the canonical frame (Eq. 4 and the sign step, decision 74) -------------------------------------


@TWINS
@FEW
@given(seed=SEEDS)
def test_pca_canonical_is_the_centred_cloud_on_axes_of_decreasing_variance(package: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cloud = anisotropic_cloud(rng, int(rng.integers(4, 80)))
    out = _run(package, "pca_canonical", cloud[None])[0]
    cov = out.T @ out / len(out)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12 * np.abs(cloud).max())
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0.0, atol=1e-10 * cov.max())
    assert np.all(np.diff(np.diag(cov)) < 0)
    centred = cloud - cloud.mean(axis=0)  # a rigid motion: every pairwise difference keeps its length
    np.testing.assert_allclose(np.linalg.norm(out[:, None] - out, axis=2),
                               np.linalg.norm(centred[:, None] - centred, axis=2), atol=1e-10 * np.abs(centred).max())


@TWINS
@FEW
@given(seed=SEEDS)
def test_canonical_frame_is_invariant_to_rotations_reflections_and_translations(package: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w0 = float(rng.choice([0.5, 1.0, 2.0]))
    while True:  # the sign margin on the canonical cloud (condensation_draws.SIGN_MARGIN)
        cloud = anisotropic_cloud(rng, int(rng.integers(4, 80)))
        if sign_well_posed(reference.pca_canonical(cloud[None])[0], w0):
            break
    moved = np.stack([cloud @ random_orthogonal(rng) + rng.normal(scale=3.0, size=3) for _ in range(4)])
    want = _canonical(package, cloud[None], w0)
    got = _canonical(package, moved, w0)
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), atol=1e-9 * np.abs(want).max())
    # PCA alone leaves Eq. (4)'s sign ambiguity: the moved clouds agree up to the sign of each axis
    pca = _run(package, "pca_canonical", moved)
    np.testing.assert_allclose(np.abs(pca), np.broadcast_to(np.abs(want), pca.shape), atol=1e-9 * np.abs(want).max())


@TWINS
@FEW
@given(seed=SEEDS)
def test_sign_canonical_undoes_every_axis_flip(package: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w0 = float(rng.choice([0.5, 1.0, 5.0]))
    while True:
        cloud = rng.normal(size=(int(rng.integers(1, 50)), 3)) * rng.uniform(0.2, 3, size=3) + rng.normal(size=3)
        if sign_well_posed(cloud, w0):
            break
    flips = np.array([[1 - 2 * ((k >> j) & 1) for j in range(3)] for k in range(8)], dtype=np.float64)
    out = _run(package, "sign_canonical", cloud[None] * flips[:, None, :], w0=w0)
    np.testing.assert_array_equal(out, np.broadcast_to(out[:1], out.shape))
    assert np.all(np.sin(w0 * out[0]).mean(axis=0) > 0)  # the canonical side of every axis


@TWINS
def test_pca_canonical_refuses_two_equal_nonzero_variances(package: str) -> None:
    good = np.array([[3.0, 0, 0], [-3, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 1], [0, 0, -1]])
    square = np.array([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 2], [0, 0, -2]])  # x, y equal
    turned = square @ random_orthogonal(np.random.default_rng(0))  # equal to rounding, in no particular axes
    with pytest.raises(ValueError, match=r"equal non-zero principal variances.*clouds \[1, 2\]"):
        _run(package, "pca_canonical", np.stack([good, square, turned]))
    # a gap just above the threshold is accepted
    wider = square * np.array([1.0 + 5 * PCA_MIN_GAP, 1.0, 1.0])
    assert _run(package, "pca_canonical", wider[None]).shape == (1, 6, 3)


@TWINS
def test_pca_canonical_takes_clouds_whose_equal_variances_are_zero(package: str) -> None:
    rng = np.random.default_rng(1)
    line = np.linspace(-1, 2, 7)[:, None] * rng.normal(size=3) + rng.normal(size=3)
    point = np.broadcast_to(rng.normal(size=3), (7, 3))
    out = _run(package, "pca_canonical", np.stack([line, point]))
    np.testing.assert_allclose(out[0, :, 1:], 0.0, atol=1e-12)
    np.testing.assert_allclose(np.abs(out[0, :, 0]), np.linalg.norm(line - line.mean(axis=0), axis=1), atol=1e-12)
    np.testing.assert_allclose(out[1], 0.0, atol=1e-12)  # the mean of equal values rounds


@TWINS
def test_sign_tie_keeps_the_axis(package: str) -> None:
    # sin(+-pi/2) = +-1 exactly: the second axis's mean of sin is exactly 0 (the tie of decision 74)
    cloud = np.array([[0.3, np.pi / 2, -0.2], [0.5, -np.pi / 2, -0.4], [0.1, np.pi / 2, -0.1], [0.2, -np.pi / 2, 0.1]])
    assert np.sin(cloud[:, 1]).mean() == 0.0
    out = _run(package, "sign_canonical", cloud[None], w0=1.0)[0]
    np.testing.assert_array_equal(out, cloud * np.array([1.0, 1.0, -1.0]))


def test_fast_canonical_frame_passes_gradcheck() -> None:
    """Differentiable where it is well-posed: through ``eigh`` for distinct variances, the flips constant."""
    rng = np.random.default_rng(8)
    clouds = torch.tensor(np.stack([anisotropic_cloud(rng, 7) for _ in range(2)]), requires_grad=True)
    assert torch.autograd.gradcheck(fast.pca_canonical, (clouds,))
    assert torch.autograd.gradcheck(lambda p: fast.sign_canonical(fast.pca_canonical(p), w0=2.0), (clouds,))


@TWINS
@pytest.mark.parametrize(("name", "points", "kwargs", "message"), [
    ("pca_canonical", np.zeros((2, 3)), {}, "B, N, D"),
    ("pca_canonical", np.zeros((2, 0, 3)), {}, "N >= 1"),
    ("pca_canonical", np.full((1, 4, 3), np.nan), {}, "finite"),
    ("sign_canonical", np.zeros((2, 3)), {}, "B, N, D"),
    ("sign_canonical", np.zeros((1, 4, 3)), {"w0": 0.0}, "w0"),
])
def test_canonical_frame_refuses_bad_inputs(package: str, name: str, points: np.ndarray, kwargs: dict,
                                            message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _run(package, name, points, **kwargs)


# --- Eq. (10)'s D and distribution matching (decision 75) --------------------------------------------


def _central_difference(f: Callable[[list[np.ndarray]], float], xs: list[np.ndarray], h: float = 1e-6) -> list[np.ndarray]:
    """The gradient of ``f`` at ``xs`` (a list of arrays) by central differences, entry by entry."""
    grads = []
    for i, x in enumerate(xs):
        g = np.zeros_like(x)
        for j in np.ndindex(x.shape):
            up, down = [a.copy() for a in xs], [a.copy() for a in xs]
            up[i][j] += h
            down[i][j] -= h
            g[j] = (f(up) - f(down)) / (2 * h)
        grads.append(g)
    return grads


@FEW
@given(seed=SEEDS)
def test_gradient_match_distance_gradient_matches_finite_differences(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = random_gradients(rng, "generic")
    for x in a:  # rows away from zero, where the distance is smooth
        x += np.sign(x) * 0.1
    _, grad = reference.gradient_match_distance(a, b)
    want = _central_difference(lambda xs: reference.gradient_match_distance(xs, b)[0], a)
    for g, w in zip(grad, want):
        np.testing.assert_allclose(g, w, atol=1e-6 * max(1.0, np.abs(w).max()))


def test_fast_gradient_match_distance_passes_gradcheck() -> None:
    rng = np.random.default_rng(2)
    a, b = random_gradients(rng, "generic")
    a = [torch.tensor(x + np.sign(x) * 0.1, requires_grad=True) for x in a]
    b = [torch.tensor(x, requires_grad=True) for x in b]
    n = len(a)
    assert torch.autograd.gradcheck(lambda *xs: fast.gradient_match_distance(list(xs[:n]), list(xs[n:])), (*a, *b))


@TWINS
def test_gradient_match_distance_reads_rows_and_skips_vectors(package: str) -> None:
    rng = np.random.default_rng(3)
    a = [rng.normal(size=(4, 3, 2)), rng.normal(size=4)]
    b = [a[0] * rng.uniform(0.5, 2, size=(4, 1, 1)), rng.normal(size=4)]  # each row scaled: cosine 1
    opposite = [-a[0], a[1]]
    if package == "reference":
        same, flipped = reference.gradient_match_distance(a, b)[0], reference.gradient_match_distance(a, opposite)[0]
    else:
        same, flipped = (float(fast.gradient_match_distance([torch.tensor(x) for x in a], [torch.tensor(x) for x in c]))
                         for c in (b, opposite))
    # only the (4, 3, 2) gradient's 4 rows count: cosine 1 gives 0 and cosine -1 gives 2, but for eps
    norm_a = np.linalg.norm(a[0].reshape(4, -1), axis=1)
    rows = norm_a * np.linalg.norm(b[0].reshape(4, -1), axis=1)
    np.testing.assert_allclose(same, np.sum(GM_EPS / (rows + GM_EPS)), rtol=1e-8)
    np.testing.assert_allclose(flipped, np.sum(1 + norm_a**2 / (norm_a**2 + GM_EPS)), rtol=1e-12)


def test_gradient_match_distance_refuses_other_parameters() -> None:
    with pytest.raises(ValueError, match="same parameters"):
        reference.gradient_match_distance([np.zeros((2, 3))], [np.zeros((3, 2))])
    with pytest.raises(ValueError, match="same parameters"):
        fast.gradient_match_distance([torch.zeros(2, 3)], [torch.zeros(2, 3), torch.zeros(2)])


@FEW
@given(seed=SEEDS)
def test_distribution_match_loss_gradient_matches_finite_differences(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ya, yb = rng.permutation([0, 0, 2, 5, 5, 5]), np.array([5, 2, 0, 2, 0, 5, 5])
    ea, eb = rng.normal(size=(6, 4)), rng.normal(size=(7, 4))
    _, grad = reference.distribution_match_loss(ea, ya, eb, yb)
    want = _central_difference(lambda xs: reference.distribution_match_loss(xs[0], ya, eb, yb)[0], [ea])[0]
    np.testing.assert_allclose(grad, want, atol=1e-7)
    expect = sum(np.sum((ea[ya == c].mean(axis=0) - eb[yb == c].mean(axis=0)) ** 2) for c in (0, 2, 5))
    assert reference.distribution_match_loss(ea, ya, eb, yb)[0] == pytest.approx(expect, rel=1e-12)


def test_fast_distribution_match_loss_passes_gradcheck() -> None:
    rng = np.random.default_rng(4)
    ya, yb = torch.tensor([1, 3, 1, 1]), torch.tensor([3, 3, 1])
    ea = torch.tensor(rng.normal(size=(4, 3)), requires_grad=True)
    eb = torch.tensor(rng.normal(size=(3, 3)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: fast.distribution_match_loss(a, ya, b, yb), (ea, eb))


@TWINS
def test_distribution_match_loss_refuses_a_class_on_one_side(package: str) -> None:
    e = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"classes \[4\] have clouds on one side only"):
        _run(package, "distribution_match_loss", e, np.array([0, 1, 4]), e, np.array([0, 1, 1]))


# --- the generator (Eq. 7-9, decision 76) ---------------------------------------------------------------

GENERATOR_TENSORS = ("noise", "codes", "sine_weights", "sine_biases", "modulator_weights", "modulator_biases",
                     "out_weight")


def _generator_inputs(seed: int, kind: str = "generic") -> dict:
    return draw_generator_forward(np.random.default_rng(seed), kind)


def _fast_generator(inputs: dict) -> torch.Tensor:
    """``fast.generator_forward`` on the numpy ``inputs`` (float64 tensors)."""
    return fast.generator_forward(**{k: [torch.tensor(a) for a in v] if isinstance(v, list) else
                                     torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()})


def _flatten(inputs: dict) -> list[np.ndarray]:
    return [a for name in GENERATOR_TENSORS for a in (inputs[name] if isinstance(inputs[name], list) else [inputs[name]])]


def _unflatten(inputs: dict, arrays: list) -> dict:
    out, i = dict(inputs), 0
    for name in GENERATOR_TENSORS:
        k = len(inputs[name]) if isinstance(inputs[name], list) else 1
        out[name] = list(arrays[i:i + k]) if isinstance(inputs[name], list) else arrays[i]
        i += k
    return out


@pytest.mark.parametrize("kind", ["generic", "surface"])
def test_fast_generator_passes_gradcheck(kind: str) -> None:
    inputs = _generator_inputs(5, kind)  # surface: two noise scalars a point
    inputs["w0"] = 10.0
    leaves = [torch.tensor(a, requires_grad=True) for a in _flatten(inputs)]
    assert torch.autograd.gradcheck(lambda *xs: fast.generator_forward(**_unflatten(inputs, list(xs))), tuple(leaves))


@FEW
@given(seed=SEEDS)
def test_fast_generator_gradient_matches_finite_differences_of_the_reference(seed: int) -> None:
    """<cotangent, d points> along a random direction of every input: the reference's central difference
    against ``fast``'s autograd."""
    rng = np.random.default_rng(seed)
    inputs = _generator_inputs(seed, ("generic", "surface")[seed % 2])  # surface: two noise scalars a point
    arrays = _flatten(inputs)
    direction = [rng.normal(size=a.shape) for a in arrays]
    cotangent = rng.normal(size=reference.generator_forward(**inputs).shape)
    h = 1e-6 / inputs["w0"]

    def along(t: float) -> float:
        return float(np.sum(cotangent * reference.generator_forward(
            **_unflatten(inputs, [a + t * d for a, d in zip(arrays, direction)]))))

    want = (along(h) - along(-h)) / (2 * h)
    leaves = [torch.tensor(a, requires_grad=True) for a in arrays]
    (fast.generator_forward(**_unflatten(inputs, leaves)) * torch.tensor(cotangent)).sum().backward()
    got = sum(float(torch.sum(t.grad * torch.tensor(d))) for t, d in zip(leaves, direction))
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


@TWINS
def test_generator_is_point_wise_so_any_resolution_shares_its_points(package: str) -> None:
    inputs = _generator_inputs(6)
    inputs["noise"] = np.random.default_rng(6).random((inputs["codes"].shape[0], 30))
    run = reference.generator_forward if package == "reference" else lambda **kw: _fast_generator(kw).numpy()
    full = run(**inputs)
    part = run(**{**inputs, "noise": inputs["noise"][:, 7:19]})
    np.testing.assert_allclose(part, full[:, 7:19], rtol=1e-12, atol=1e-15)
    assert full.shape[2] == 3 and np.all(np.abs(full) < 1)


def test_generator_refuses_weights_that_do_not_chain() -> None:
    inputs = _generator_inputs(7)
    inputs["sine_weights"] = [w.T for w in inputs["sine_weights"]]
    with pytest.raises(ValueError, match="do not chain"):
        reference.generator_forward(**inputs)
    with pytest.raises(ValueError, match="do not chain"):
        _fast_generator(inputs)


# --- Theorem 1 --------------------------------------------------------------------------------------------


def _linear_gradient(features: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """d/dW of the mean squared error (1/n) |X W^T - Y|_F^2 of a linear classifier W (C, d), by autograd."""
    w = weight.clone().requires_grad_(True)
    loss = ((features @ w.T - targets) ** 2).sum() / len(features)
    return torch.autograd.grad(loss, w)[0]


def _moment_matched(rng: np.random.Generator, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Other features with the same second moment X^T X and class sums Y^T X: each class's rows mixed by
    a Householder reflection that fixes the all-ones vector."""
    out = x.copy()
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        v = rng.normal(size=len(rows))
        v -= v.mean()
        out[rows] = x[rows] - 2 * np.outer(v, v @ x[rows]) / (v @ v)
    return out


@FEW
@given(seed=SEEDS)
def test_theorem_1_gradient_matching_of_a_linear_classifier_is_matching_second_moments_and_class_means(
        seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, d, classes = 24, 5, 3
    labels = np.arange(n) % classes
    y = torch.tensor(np.eye(classes)[labels])
    x_real = rng.normal(size=(n, d)) + np.eye(classes, d)[labels] * 2
    x_syn = rng.normal(size=(n, d))
    weights = [torch.tensor(rng.normal(size=(classes, d))) for _ in range(4)]

    def moments(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.tensor(x)
        return t.T @ t / n, y.T @ t / n  # second moment (d, d), class means times class shares (C, d)

    # the gradient difference is 2 (W dSigma - dM): the variance term and the mean term of Eq. (14)
    (s_syn, m_syn), (s_real, m_real) = moments(x_syn), moments(x_real)
    for w in weights:
        diff = _linear_gradient(torch.tensor(x_syn), y, w) - _linear_gradient(torch.tensor(x_real), y, w)
        torch.testing.assert_close(diff, 2 * (w @ (s_syn - s_real) - (m_syn - m_real)), rtol=1e-10, atol=1e-12)
    # matched moments: the gradients agree for every classifier, and D is 0 but for its eps
    x_matched = _moment_matched(rng, x_real, labels)
    assert np.abs(x_matched - x_real).max() > 1e-3  # other clouds
    for w in weights:
        g_syn, g_real = (_linear_gradient(torch.tensor(x), y, w) for x in (x_matched, x_real))
        torch.testing.assert_close(g_syn, g_real, rtol=1e-10, atol=1e-12)
        bound = float(torch.sum(GM_EPS / (torch.linalg.vector_norm(g_real, dim=1) ** 2 + GM_EPS)))
        assert float(fast.gradient_match_distance([g_syn], [g_real])) <= bound * (1 + 1e-6) + 1e-12
    # each term alone is not enough: the same features under other labels (same second moment, other
    # class means) differ at W = 0; scaled deviations (same class means, other second moment) differ at W != 0
    zero = torch.zeros(classes, d, dtype=torch.float64)
    relabelled = torch.tensor(np.eye(classes)[(labels + 1) % classes])
    assert float(torch.abs(_linear_gradient(torch.tensor(x_real), relabelled, zero)
                           - _linear_gradient(torch.tensor(x_real), y, zero)).max()) > 1e-3
    means = np.stack([x_real[labels == c].mean(axis=0) for c in range(classes)])[labels]
    spread = torch.tensor(means + 1.5 * (x_real - means))
    torch.testing.assert_close(_linear_gradient(spread, y, zero), _linear_gradient(torch.tensor(x_real), y, zero))
    assert float(torch.abs(_linear_gradient(spread, y, weights[0])
                           - _linear_gradient(torch.tensor(x_real), y, weights[0])).max()) > 1e-3
