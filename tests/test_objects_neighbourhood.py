"""The object backbones' neighbourhood operators against brute-force numpy (decision 67).

Farthest-point sampling must give ``reference.farthest_point_sample``'s indices exactly, on random
clouds and on integer grids full of exactly tied distances and duplicated points; k nearest
neighbours and the ball query are checked against a numpy search written here by brute force;
``interpolate`` against PointNet++'s inverse-distance formula.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import reference
from reference.tps import tps_cloud
from train.models.objects.neighbourhood import (ball_query, check_category, check_clouds, edge_features,
                                                farthest_point_sample, gather_points, interpolate, knn)


def _clouds(kind: str, rng: np.random.Generator, b: int = 3, n: int = 57) -> np.ndarray:
    if kind == "random":
        return rng.normal(size=(b, n, 3))
    if kind == "grid":  # many exactly equal distances
        return rng.integers(-2, 3, size=(b, n, 3)).astype(np.float64)
    cloud = rng.normal(size=(b, n // 3, 3))  # "duplicates": every point three times
    return np.concatenate([cloud, cloud, cloud, rng.normal(size=(b, n - 3 * (n // 3), 3))], axis=1)


@pytest.mark.parametrize("kind", ["random", "grid", "duplicates"])
@pytest.mark.parametrize("m", [1, 9, 40])
def test_farthest_point_sample_matches_reference(kind: str, m: int) -> None:
    rng = np.random.default_rng(7)
    for _ in range(4):
        clouds = _clouds(kind, rng)
        got = farthest_point_sample(torch.from_numpy(clouds), m)
        want = reference.farthest_point_sample(clouds, m)
        assert got.dtype == torch.int64 and got.shape == (3, m)
        np.testing.assert_array_equal(got.numpy(), want)
        assert all(len(set(row)) == m for row in want.tolist())  # duplicates never repeat an index


def test_farthest_point_sample_float32_matches_reference_on_the_rounded_cloud() -> None:
    clouds = np.random.default_rng(3).normal(size=(2, 200, 3)).astype(np.float32)
    np.testing.assert_array_equal(farthest_point_sample(torch.from_numpy(clouds), 64).numpy(),
                                  reference.farthest_point_sample(clouds.astype(np.float64), 64))


def test_reference_farthest_point_sample_is_tps_loop_started_at_index_zero() -> None:
    # tps_cloud(seed=s) starts at default_rng(s).integers(N); a seed whose start is 0 gives the
    # same greedy sequence as the farthest-point sampler
    cloud = np.random.default_rng(5).normal(size=(30, 3))
    seed = next(s for s in range(1000) if np.random.default_rng(s).integers(30) == 0)
    np.testing.assert_array_equal(reference.farthest_point_sample(cloud[None], 12)[0], tps_cloud(cloud, 12, seed))


def test_farthest_point_sample_greedy_property_by_hand() -> None:
    # points on a line: 0 first, then the far end, then the middle
    line = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [4, 0, 0]]])
    assert farthest_point_sample(line, 3).tolist() == [[0, 3, 2]]


@pytest.mark.parametrize("m", [0, 58, 2.5, True])
def test_farthest_point_sample_refuses_a_bad_size(m: object) -> None:
    with pytest.raises(ValueError, match="farthest-point sample size m"):
        farthest_point_sample(torch.zeros(1, 57, 3), m)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="farthest-point sample size m"):
        reference.farthest_point_sample(np.zeros((1, 57, 3)), m)  # type: ignore[arg-type]


def _brute_distances(query: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.array([[[np.sum((q - p) ** 2) for p in cloud] for q in qs] for qs, cloud in zip(query, points)])


def test_knn_matches_brute_force() -> None:
    rng = np.random.default_rng(11)
    points, query = rng.normal(size=(2, 40, 5)), rng.normal(size=(2, 13, 5))
    got = knn(torch.from_numpy(query), torch.from_numpy(points), 7).numpy()
    d = _brute_distances(query, points)
    np.testing.assert_array_equal(got, np.argsort(d, axis=-1, kind="stable")[..., :7])


def test_knn_on_ties_returns_the_k_smallest_distances() -> None:
    points = np.random.default_rng(2).integers(-1, 2, size=(2, 30, 3)).astype(np.float64)
    got = knn(torch.from_numpy(points), torch.from_numpy(points), 6).numpy()
    d = _brute_distances(points, points)
    np.testing.assert_allclose(np.take_along_axis(d, got, -1), np.sort(d, axis=-1)[..., :6])
    assert all(len(set(row)) == 6 for row in got.reshape(-1, 6).tolist())


def test_knn_refuses_more_neighbours_than_points() -> None:
    with pytest.raises(ValueError, match=r"integer k in \[1, N = 10\]"):
        knn(torch.zeros(1, 3, 3), torch.zeros(1, 10, 3), 11)


def _brute_ball_query(query: np.ndarray, points: np.ndarray, radius: float, nsample: int) -> np.ndarray:
    out = np.empty(query.shape[:2] + (nsample,), dtype=np.int64)
    d = _brute_distances(query, points)
    for b in range(query.shape[0]):
        for i in range(query.shape[1]):
            inside = [j for j in range(points.shape[1]) if d[b, i, j] < radius ** 2][:nsample]
            inside = inside or [int(np.argmin(d[b, i]))]
            out[b, i] = inside + [inside[0]] * (nsample - len(inside))
    return out


@pytest.mark.parametrize("nsample", [1, 5, 64])
def test_ball_query_matches_brute_force(nsample: int) -> None:
    rng = np.random.default_rng(13)
    points = rng.uniform(-1, 1, size=(2, 50, 3))
    query = np.concatenate([points[:, :6], rng.uniform(-1, 1, size=(2, 4, 3)), np.full((2, 1, 3), 9.0)], axis=1)
    got = ball_query(torch.from_numpy(query), torch.from_numpy(points), 0.45, nsample).numpy()
    np.testing.assert_array_equal(got, _brute_ball_query(query, points, 0.45, nsample))


def test_ball_query_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="radius must be > 0"):
        ball_query(torch.zeros(1, 2, 3), torch.zeros(1, 5, 3), 0.0, 4)
    with pytest.raises(ValueError, match="nsample >= 1"):
        ball_query(torch.zeros(1, 2, 3), torch.zeros(1, 5, 3), 0.5, 0)


def test_gather_and_edge_features_pick_the_indexed_rows() -> None:
    x = torch.arange(2 * 5 * 2, dtype=torch.float64).view(2, 5, 2)
    idx = torch.tensor([[[4, 0]], [[1, 1]]])
    assert gather_points(x, idx).tolist() == [[[[8.0, 9.0], [0.0, 1.0]]], [[[12.0, 13.0], [12.0, 13.0]]]]
    centre = x[:, :1]
    e = edge_features(x, centre, idx)
    assert torch.equal(e[..., :2], gather_points(x, idx) - centre.unsqueeze(2)) and torch.equal(e[0, 0, 1, 2:], x[0, 0])


def test_interpolate_is_inverse_distance_weighting_of_the_three_nearest() -> None:
    rng = np.random.default_rng(17)
    xyz, known, feats = rng.normal(size=(2, 9, 3)), rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 6, 4))
    got = interpolate(*(torch.from_numpy(a) for a in (xyz, known, feats))).numpy()
    d = _brute_distances(xyz, known)
    want = np.empty((2, 9, 4))
    for b in range(2):
        for i in range(9):
            near = np.argsort(d[b, i])[:3]
            w = 1.0 / (d[b, i, near] + 1e-8)
            want[b, i] = (w[:, None] * feats[b, near]).sum(0) / w.sum()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    # one known point (a global level): its features everywhere
    one = interpolate(torch.from_numpy(xyz), torch.zeros(2, 1, 3, dtype=torch.float64), torch.from_numpy(feats[:, :1]))
    np.testing.assert_allclose(one.numpy(), np.broadcast_to(feats[:, :1], (2, 9, 4)))


@pytest.mark.parametrize("shape, dtype", [((4, 3), torch.float32), ((1, 4, 2), torch.float32),
                                          ((1, 4, 3), torch.int64), ((0, 4, 3), torch.float32)])
def test_check_clouds_names_the_bad_batch(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match="points must"):
        check_clouds(torch.zeros(shape, dtype=dtype))


def test_check_category_names_the_expected_shape() -> None:
    with pytest.raises(ValueError, match=r"\(B, K\) = \(2, 16\) one-hot"):
        check_category(torch.zeros(2, 15), torch.zeros(2, 8, 3), 16)
