"""reference.routing: critical-edge gradient routing (Theorem 1, Eq. 1, Algorithm 3; decisions 4-5).

Claims checked:
- the routed gradient of a smooth function of the H0/H1 diagrams, pushed through the Euclidean
  distances, equals central finite differences in float64 (relative error < 1e-6) on tie-free
  clouds, where the filtration order (hence the pairing) is constant along the stencil;
- routing conserves the diagram gradient (the sum over undirected edges of G equals the sum of
  all routed dL/db, dL/dd), H0 births route nowhere, G is symmetric with a zero diagonal;
- an H1 death gradient is split uniformly over the death triangle's edges within tie_tol of its
  longest edge (exact ties, tie_tol > 0), and the shares sum to the incoming gradient;
- feature gradients sum to zero (translation invariance), duplicated points get exactly zero
  gradient and nothing is ever NaN;
- the edge-list form (the shape of the twin ``fast.edge_lengths``): ``edge_lengths`` reads the
  distance matrix, and ``edge_lengths_backward`` equals central differences of a weighted sum of
  the lengths, with repeated edges accumulating;
- bad inputs raise ValueError naming the problem.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import (
    Diagram,
    diagram_grad_to_dist_grad,
    dist_grad_to_feature_grad,
    edge_lengths,
    edge_lengths_backward,
    pairwise_distances,
    rips_persistence,
)
from strategies import point_clouds, tie_free_point_clouds

FD_RTOL = 1e-6


def _pair_function(pairs: np.ndarray, weight: float) -> tuple[float, np.ndarray]:
    """``weight * sum_k sin(b) d + (d - b)^2 cos(d)`` and its (K, 2) gradient: smooth, and
    symmetric in the pairs so it does not depend on their order."""
    b, d = pairs[:, 0], pairs[:, 1]
    value = np.sum(np.sin(b) * d + (d - b) ** 2 * np.cos(d))
    d_b = np.cos(b) * d - 2 * (d - b) * np.cos(d)
    d_d = np.sin(b) + 2 * (d - b) * np.cos(d) - (d - b) ** 2 * np.sin(d)
    return weight * float(value), weight * np.stack([d_b, d_d], axis=1)


def _loss_and_grad(feats: np.ndarray, weights: tuple[float, float]) -> tuple[float, np.ndarray]:
    dist = pairwise_distances(feats)
    diagrams = rips_persistence(dist)
    parts = [_pair_function(diagram.pairs, w) for diagram, w in zip(diagrams, weights)]
    dist_grad = diagram_grad_to_dist_grad(dist, diagrams, [g for _, g in parts])
    return sum(v for v, _ in parts), dist_grad_to_feature_grad(feats, dist_grad)


@given(
    tie_free_point_clouds(min_n=2, max_n=12, min_dim=1, max_dim=6),
    st.floats(-2.0, 2.0),
    st.floats(-2.0, 2.0),
)
def test_routed_gradient_matches_central_differences(feats: np.ndarray, w0: float, w1: float) -> None:
    loss, grad = _loss_and_grad(feats, (w0, w1))
    dist = pairwise_distances(feats)
    values = np.sort(dist[np.triu_indices(len(dist), 1)])
    # Moving one coordinate by h changes every distance by at most h, so with 2h below the
    # smallest gap between distances the edge order, hence the whole filtration order and the
    # pairing, is the same at both stencil points: the loss is smooth there. The 1e-6 cap keeps
    # the O(h^2) truncation error far below the tolerance.
    h = 1e-6 * (1.0 + float(np.abs(feats).max()))
    if values.size > 1:
        h = min(h, 0.25 * float(np.min(np.diff(values))))
    numeric = np.zeros_like(feats)
    for idx in np.ndindex(feats.shape):
        plus, minus = feats.copy(), feats.copy()
        plus[idx] += h
        minus[idx] -= h
        step = plus[idx] - minus[idx]  # the step actually taken after rounding
        numeric[idx] = (_loss_and_grad(plus, (w0, w1))[0] - _loss_and_grad(minus, (w0, w1))[0]) / step
    scale = max(float(np.linalg.norm(grad)), 1e-300)
    assert np.linalg.norm(numeric - grad) <= FD_RTOL * scale, (np.linalg.norm(numeric - grad) / scale, loss)


def _random_grads(diagrams: list[Diagram], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(len(diagram), 2)) for diagram in diagrams]


@given(point_clouds(min_n=2, max_n=60, min_dim=1, max_dim=16), st.integers(0, 2**32 - 1), st.sampled_from([0.0, 1e-3, 0.5]))
def test_routing_conserves_gradient_and_splits_ties_uniformly(feats: np.ndarray, seed: int, tie_tol: float) -> None:
    dist = pairwise_distances(feats)
    diagrams = rips_persistence(dist)
    grads = _random_grads(diagrams, seed)
    dist_grad = diagram_grad_to_dist_grad(dist, diagrams, grads, tie_tol=tie_tol)
    np.testing.assert_array_equal(dist_grad, dist_grad.T)
    np.testing.assert_array_equal(np.diag(dist_grad), 0.0)
    routed = grads[0][:, 1].sum() + grads[1].sum()  # H0 births (column 0) route nowhere
    np.testing.assert_allclose(np.triu(dist_grad, 1).sum(), routed, rtol=1e-9, atol=1e-9 * (1 + np.abs(grads[1]).sum()))

    h0, h1 = diagrams
    empty = [np.zeros((len(h0), 2)), np.zeros((len(h1), 2))]
    for k, (a, b, c) in enumerate(h1.death_simplices.tolist()):
        one = [empty[0], empty[1].copy()]
        one[1][k, 1] = grads[1][k, 1]
        routed_one = np.triu(diagram_grad_to_dist_grad(dist, diagrams, one, tie_tol=tie_tol), 1)
        faces = [(a, b), (a, c), (b, c)]
        longest = max(dist[e] for e in faces)
        tied = [e for e in faces if abs(dist[e] - longest) <= tie_tol]
        expected = np.zeros_like(routed_one)
        for e in tied:
            expected[e] = grads[1][k, 1] / len(tied)
        np.testing.assert_allclose(routed_one, expected, rtol=1e-15, atol=0)

    feat_grad = dist_grad_to_feature_grad(feats, dist_grad)
    assert np.all(np.isfinite(feat_grad))
    magnitude = np.abs(dist_grad).sum() * (1 + np.abs(feats).max())
    np.testing.assert_allclose(feat_grad.sum(axis=0), 0.0, atol=1e-12 * magnitude)


def test_exact_tie_in_death_triangle_is_split_in_halves_and_tie_tol_widens_it() -> None:
    # Square of side 2 plus the midpoint of its bottom side: the H1 class born at 2 dies at
    # sqrt(5) in the triangle {2, 3, 4}, whose edges {2, 4} and {3, 4} are both sqrt(5) long.
    feats = np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0], [1.0, 0.0]])
    dist = pairwise_distances(feats)
    diagrams = rips_persistence(dist)
    h1 = diagrams[1]
    np.testing.assert_array_equal(h1.death_simplices, [[2, 3, 4]])
    np.testing.assert_allclose(h1.pairs, [[2.0, np.sqrt(5.0)]])
    grads = [np.zeros((len(diagrams[0]), 2)), np.array([[0.0, 3.0]])]
    halves = diagram_grad_to_dist_grad(dist, diagrams, grads)
    assert halves[2, 4] == halves[4, 2] == halves[3, 4] == 1.5 and halves[2, 3] == 0.0
    thirds = diagram_grad_to_dist_grad(dist, diagrams, grads, tie_tol=0.3)  # sqrt(5) - 2 < 0.3
    np.testing.assert_allclose([thirds[2, 3], thirds[2, 4], thirds[3, 4]], [1.0, 1.0, 1.0], rtol=1e-15)
    assert np.count_nonzero(np.triu(thirds, 1)) == 3


def test_birth_and_h0_death_gradients_land_on_their_critical_edges() -> None:
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    dist = pairwise_distances(square)
    h0, h1 = rips_persistence(dist)
    grads = [np.array([[9.0, 1.0], [9.0, 2.0], [9.0, 3.0]]), np.array([[5.0, 7.0]])]
    dist_grad = diagram_grad_to_dist_grad(dist, [h0, h1], grads)
    expected = np.zeros((4, 4))
    for (i, j), g in zip(h0.death_edges.tolist(), [1.0, 2.0, 3.0]):
        expected[i, j] += g
    expected[tuple(h1.birth_edges[0])] += 5.0
    expected[tuple(h1.death_edges[0])] += 7.0
    np.testing.assert_array_equal(dist_grad, expected + expected.T)
    # H0 births carry no gradient: their column is ignored.
    grads[0][:, 0] = -100.0
    np.testing.assert_array_equal(diagram_grad_to_dist_grad(dist, [h0, h1], grads), dist_grad)


def test_duplicated_points_get_zero_gradient_never_nan() -> None:
    feats = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [3.0, 4.0]])
    dist_grad = np.zeros((4, 4))
    dist_grad[0, 1] = dist_grad[1, 0] = 1e30
    dist_grad[2, 3] = dist_grad[3, 2] = -7.0
    np.testing.assert_array_equal(dist_grad_to_feature_grad(feats, dist_grad), 0.0)
    dist_grad[0, 2] = dist_grad[2, 0] = 2.0  # a real edge of length 5 next to the duplicates
    got = dist_grad_to_feature_grad(feats, dist_grad)
    np.testing.assert_allclose(got, [[-1.2, -1.6], [0.0, 0.0], [1.2, 1.6], [0.0, 0.0]], rtol=1e-12)


@given(point_clouds(min_n=2, max_n=60, min_dim=1, max_dim=16, kinds=("duplicated", "lattice")), st.integers(0, 2**32 - 1))
def test_clouds_with_duplicates_give_finite_gradients(feats: np.ndarray, seed: int) -> None:
    dist = pairwise_distances(feats)
    diagrams = rips_persistence(dist)
    dist_grad = diagram_grad_to_dist_grad(dist, diagrams, _random_grads(diagrams, seed))
    np.fill_diagonal(dist_grad, 0.0)
    dist_grad[dist == 0] = np.random.default_rng(seed).normal()  # route onto duplicate pairs too
    dist_grad = np.triu(dist_grad, 1) + np.triu(dist_grad, 1).T
    got = dist_grad_to_feature_grad(feats, dist_grad)
    assert np.all(np.isfinite(got))
    expected = np.zeros_like(feats)
    for i, j in zip(*np.nonzero(np.triu(dist_grad, 1))):
        if dist[i, j] > 0:
            step = dist_grad[i, j] * (feats[i] - feats[j]) / (dist[i, j] + 1e-12)
            expected[i] += step
            expected[j] -= step
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * (1 + np.abs(expected).max()))


@settings(max_examples=max(settings.default.max_examples // 5, 10))
@given(point_clouds(min_n=2, max_n=16, min_dim=1, max_dim=6, kinds=("gaussian", "clustered")), st.integers(0, 2**32 - 1))
def test_edge_lengths_backward_matches_central_differences_of_weighted_lengths(feats: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = len(feats)
    edges = rng.integers(n, size=(int(rng.integers(1, 3 * n)), 2))
    edges = edges[edges[:, 0] != edges[:, 1]]
    edges = np.concatenate([edges, edges[:2, ::-1]])  # repeated edges, listed either way round
    weights = rng.normal(size=len(edges))
    dist = pairwise_distances(feats)
    np.testing.assert_array_equal(edge_lengths(feats, edges), dist[edges[:, 0], edges[:, 1]])
    h = 1e-6 * (1.0 + float(np.abs(feats).max()))
    if len(edges) == 0 or dist[edges[:, 0], edges[:, 1]].min() < 1e4 * h:
        return  # near the kink of ||h_i - h_j|| at 0 the O(h^2 / length^2) stencil error is too large
    grad = edge_lengths_backward(feats, edges, weights)
    numeric = np.zeros_like(feats)
    for idx in np.ndindex(feats.shape):
        plus, minus = feats.copy(), feats.copy()
        plus[idx] += h
        minus[idx] -= h
        numeric[idx] = (weights @ edge_lengths(plus, edges) - weights @ edge_lengths(minus, edges)) / (plus[idx] - minus[idx])
    np.testing.assert_allclose(grad, numeric, rtol=FD_RTOL, atol=FD_RTOL * max(float(np.abs(grad).max()), 1.0))


_FEATS = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
_DIST = pairwise_distances(_FEATS)
_DIAGRAMS = rips_persistence(_DIST)
_GRADS = [np.zeros((3, 2)), np.zeros((1, 2))]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: diagram_grad_to_dist_grad(_DIST, _DIAGRAMS, _GRADS[:1]), "2 diagrams but 1 gradient"),
        (lambda: diagram_grad_to_dist_grad(_DIST, _DIAGRAMS, [np.zeros((2, 2)), _GRADS[1]]), r"grads\[0\] has shape"),
        (lambda: diagram_grad_to_dist_grad(_DIST, _DIAGRAMS, [_GRADS[0], np.zeros(2)]), r"grads\[1\] has shape"),
        (lambda: diagram_grad_to_dist_grad(_DIST, _DIAGRAMS, [_GRADS[0], np.full((1, 2), np.nan)]), r"grads\[1\] contains"),
        (lambda: diagram_grad_to_dist_grad(_DIST, _DIAGRAMS, _GRADS, tie_tol=-1.0), "tie_tol"),
        (lambda: diagram_grad_to_dist_grad(_DIST, _DIAGRAMS, _GRADS, tie_tol=np.nan), "tie_tol"),
        (lambda: diagram_grad_to_dist_grad(_DIST[:3, :3], _DIAGRAMS, _GRADS), "refers to vertex"),
        (lambda: diagram_grad_to_dist_grad(_DIST[:3], _DIAGRAMS, _GRADS), "square"),
        (lambda: dist_grad_to_feature_grad(_FEATS, np.zeros((3, 3))), "dist_grad has shape"),
        (lambda: dist_grad_to_feature_grad(_FEATS, np.triu(np.ones((4, 4)), 1)), "not symmetric"),
        (lambda: dist_grad_to_feature_grad(_FEATS, np.full((4, 4), np.inf)), "dist_grad contains"),
        (lambda: dist_grad_to_feature_grad(_FEATS, np.zeros((4, 4)), eps_dist=0.0), "eps_dist must be > 0"),
        (lambda: dist_grad_to_feature_grad(np.full((4, 2), np.nan), np.zeros((4, 4))), "feats contains"),
        (lambda: dist_grad_to_feature_grad(_FEATS[0], np.zeros((4, 4))), r"\(N, C\)"),
        (lambda: edge_lengths(_FEATS, np.array([[0, 4]])), "outside 0..3"),
        (lambda: edge_lengths(_FEATS, np.array([0, 1])), r"\(E, 2\) integer"),
        (lambda: edge_lengths(_FEATS, np.array([[0.0, 1.0]])), r"\(E, 2\) integer"),
        (lambda: edge_lengths_backward(_FEATS, np.array([[0, 1]]), np.zeros(2)), "one value per edge"),
        (lambda: edge_lengths_backward(_FEATS, np.array([[0, 1]]), np.array([np.nan])), "grad_lengths contains"),
        (lambda: edge_lengths_backward(_FEATS, np.array([[0, 1]]), np.ones(1), eps_dist=0.0), "eps_dist"),
    ],
)
def test_bad_routing_inputs_raise_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
