"""reference.tps_cloud / reference.tps: topology-preserving (farthest-point) sampling, paper Algorithm 5, decision 14.

Proves: indices are unique, in range and of length min(m, N); the first index is
default_rng(seed).integers(N); N <= m returns arange(N); selections are nested in m, so the
covering radius is non-increasing in m; the covering radius is within 2x of the optimal k-center
radius found by brute force; argmax ties go to the lowest index; duplicated points keep indices
unique; bad inputs raise ValueError; the batch form samples cloud b with seed + b.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.tps import tps, tps_cloud


def covering_radius(X: np.ndarray, idx: np.ndarray) -> float:
    """max_x min_{y in X[idx]} ||x - y||, the Hausdorff distance of Appendix A.2."""
    d = np.linalg.norm(X[:, None, :] - X[None, idx, :], axis=-1)
    return float(d.min(axis=1).max())


def _cloud(seed: int, n: int, c: int, duplicates: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, c))
    if duplicates and n > 2:
        X[rng.integers(n, size=n // 2)] = X[0]
    return X


clouds = st.builds(
    _cloud, st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 6), st.booleans()
)


@given(X=clouds, m=st.integers(1, 50), seed=st.integers(0, 2**31))
def test_tps_indices_unique_in_range_with_seeded_first_index(X: np.ndarray, m: int, seed: int) -> None:
    N = len(X)
    idx = tps_cloud(X, m, seed=seed)
    assert idx.dtype == np.int64
    assert len(idx) == min(m, N)
    assert len(np.unique(idx)) == len(idx)
    assert idx.min() >= 0 and idx.max() < N
    if N <= m:
        np.testing.assert_array_equal(idx, np.arange(N))
    else:
        assert idx[0] == np.random.default_rng(seed).integers(N)


@given(X=clouds, seed=st.integers(0, 2**31))
def test_tps_selections_are_nested_so_covering_radius_is_non_increasing(X: np.ndarray, seed: int) -> None:
    N = len(X)
    radii = []
    for m in range(1, N):
        idx = tps_cloud(X, m, seed=seed)
        nxt = tps_cloud(X, m + 1, seed=seed)
        if m + 1 < N:  # N <= m returns arange(N), not a greedy order
            np.testing.assert_array_equal(nxt[:m], idx)
        radii.append(covering_radius(X, idx))
    radii.append(covering_radius(X, tps_cloud(X, N, seed=seed)))
    assert all(a >= b for a, b in zip(radii, radii[1:]))
    assert radii[-1] == 0.0


@settings(max_examples=max(settings.default.max_examples // 5, 10))
@given(
    X=st.builds(_cloud, st.integers(0, 2**32 - 1), st.integers(2, 10), st.integers(1, 4), st.just(False)),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**31),
)
def test_tps_covering_radius_within_twice_the_optimal_k_center(X: np.ndarray, k: int, seed: int) -> None:
    N = len(X)
    if k >= N:
        return
    optimum = min(covering_radius(X, np.array(c)) for c in itertools.combinations(range(N), k))
    assert covering_radius(X, tps_cloud(X, k, seed=seed)) <= 2.0 * optimum * (1 + 1e-12)


def _seed_with_first(n: int, first: int) -> int:
    return next(s for s in range(10_000) if np.random.default_rng(s).integers(n) == first)


def test_tps_argmax_ties_go_to_the_lowest_index() -> None:
    # Start at the centre 0: the four others are all at distance 1 from it and stay at distance 1
    # from the selected set (they are >= sqrt(2) apart), so every step is a tie: 1, then 2, then 3.
    X = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    seed = _seed_with_first(5, 0)
    idx = tps_cloud(X, 4, seed=seed)
    np.testing.assert_array_equal(idx, [0, 1, 2, 3])


def test_tps_all_duplicates_take_lowest_unselected_indices() -> None:
    X = np.ones((6, 3))
    seed = _seed_with_first(6, 2)
    np.testing.assert_array_equal(tps_cloud(X, 4, seed=seed), [2, 0, 1, 3])


@pytest.mark.parametrize(
    "X, m, match",
    [
        (np.zeros((4, 2)), 0, "m must be an integer >= 1"),
        (np.zeros((4, 2)), -3, "m must be an integer >= 1"),
        (np.zeros((4, 2)), 1.5, "m must be an integer >= 1"),
        (np.zeros((0, 2)), 1, "no points"),
        (np.zeros(4), 2, "2-D"),
        (np.array([[0.0, np.nan], [1.0, 1.0]]), 1, "NaN/Inf"),
        (np.array([[0.0, np.inf], [1.0, 1.0]]), 1, "NaN/Inf"),
    ],
)
def test_tps_bad_input_raises_value_error(X: np.ndarray, m, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tps_cloud(X, m)


@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=4), m=st.integers(1, 8), seed=st.integers(0, 2**31))
def test_tps_of_a_batch_samples_cloud_b_like_tps_cloud_with_seed_plus_b(sizes: list, m: int, seed: int) -> None:
    X = np.random.default_rng(seed).normal(size=(sum(sizes), 3))
    ends = np.cumsum(sizes)
    got = tps(X, ends, m, seed=seed)
    assert len(got) == len(sizes)
    for b, (lo, hi) in enumerate(zip(ends - np.array(sizes), ends)):
        np.testing.assert_array_equal(got[b], tps_cloud(X[lo:hi], m, seed=seed + b))


@pytest.mark.parametrize("offsets, match", [([3], "end at the number of rows 4"), ([2, 2, 4], "strictly increasing")])
def test_tps_of_a_batch_rejects_offsets_that_do_not_match_the_rows(offsets: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tps(np.zeros((4, 2)), offsets, 2)
