"""The pre-processing of every object cloud (train/data/objects/cloud.py; paper Sec. 5, App. C;
decision 66): N points, centred, the farthest on the unit sphere; the rotated setting's SO(3)
rotation and principal-axes projection; the random streams keyed by the cloud's place."""
from __future__ import annotations

import numpy as np
import pytest

from train.data.objects import load_objects
from train.data.objects.cloud import preprocess, principal_axes, random_rotation
from train.data.validation import CorruptFileError, NonFiniteCoordinateError


def cloud(m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, 3)) * [3.0, 1.0, 0.3] + rng.uniform(-5, 5, 3)


@pytest.mark.parametrize("m", [7, 64, 500])
@pytest.mark.parametrize("setting", ["aligned", "rotated"])
def test_every_cloud_is_centred_with_its_farthest_point_on_the_unit_sphere(m: int, setting: str) -> None:
    for seed in range(5):
        points, _ = preprocess(cloud(m, seed), None, 64, setting, np.random.default_rng(seed), "c")
        assert points.shape == (64, 3) and points.dtype == np.float32
        np.testing.assert_allclose(points.mean(axis=0), 0.0, atol=1e-6)
        assert abs(np.linalg.norm(points, axis=1).max() - 1.0) < 1e-6


def test_rotated_clouds_lie_on_their_principal_axes_with_decreasing_variance() -> None:
    for seed in range(10):
        points, _ = preprocess(cloud(300, seed), None, 256, "rotated", np.random.default_rng(seed), "c")
        cov = np.cov(points.astype(np.float64).T, bias=True)
        np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0.0, atol=1e-6)
        assert cov[0, 0] > cov[1, 1] > cov[2, 2]


def test_rotated_cloud_is_the_aligned_cloud_on_its_principal_axes_up_to_axis_signs() -> None:
    """Same stream, same subset: rotating then projecting must equal projecting the aligned cloud
    (rotation-invariance of P U, paper Eq. 4) except for the sign of each axis."""
    for seed in range(5):
        raw = cloud(200, seed)
        aligned, _ = preprocess(raw, None, 128, "aligned", np.random.default_rng(seed), "c")
        rotated, _ = preprocess(raw, None, 128, "rotated", np.random.default_rng(seed), "c")
        projected = aligned.astype(np.float64) @ principal_axes(aligned.astype(np.float64))
        signs = np.sign((projected * rotated).sum(axis=0))
        np.testing.assert_allclose(rotated, projected * signs, atol=1e-5)


def test_random_rotations_are_proper_and_uniform_on_average() -> None:
    rng = np.random.default_rng(0)
    rotations = np.stack([random_rotation(rng) for _ in range(3000)])
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (3000, 3, 3)),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-12)
    assert np.abs(rotations.mean(axis=0)).max() < 0.05  # E[R] = 0 under the Haar measure of SO(3)


def test_small_clouds_keep_every_point_and_large_ones_a_subset_without_repeats() -> None:
    raw = cloud(10, 0)
    parts = np.arange(10)
    _, kept = preprocess(raw, parts, 25, "aligned", np.random.default_rng(1), "c")
    assert set(kept.tolist()) == set(range(10))
    _, kept = preprocess(cloud(100, 0), np.arange(100), 25, "aligned", np.random.default_rng(1), "c")
    assert len(set(kept.tolist())) == 25


def test_parts_follow_their_points() -> None:
    raw = cloud(50, 3)
    parts = np.arange(50)
    points, kept = preprocess(raw, parts, 20, "aligned", np.random.default_rng(2), "c")
    centred = raw[kept] - raw[kept].mean(axis=0)
    np.testing.assert_allclose(points, centred / np.linalg.norm(centred, axis=1).max(), atol=1e-6)


def test_nan_and_degenerate_clouds_are_refused_naming_the_source() -> None:
    bad = cloud(20, 0)
    bad[3, 2] = np.inf
    with pytest.raises(NonFiniteCoordinateError, match="some.h5 row 4"):
        preprocess(bad, None, 8, "aligned", np.random.default_rng(0), "some.h5 row 4")
    with pytest.raises(CorruptFileError, match="one.txt: all 8 points of the cloud coincide"):
        preprocess(np.ones((5, 3)), None, 8, "aligned", np.random.default_rng(0), "one.txt")


def test_same_arguments_give_the_same_arrays_and_a_cloud_is_the_same_in_train_and_trainval() -> None:
    a = load_objects("shapes", split="train", size=12, points=128, setting="rotated", seed=3)
    b = load_objects("shapes", split="train", size=12, points=128, setting="rotated", seed=3)
    np.testing.assert_array_equal(a.points, b.points)
    full = load_objects("shapes", split="trainval", size=12, points=128, setting="rotated", seed=3)
    val = load_objects("shapes", split="val", size=12, points=128, setting="rotated", seed=3)
    assert len(a) + len(val) == len(full)
    np.testing.assert_array_equal(full.points[:13], a.points[:13])  # the first nine clouds a class are train
    other = load_objects("shapes", split="train", size=12, points=128, setting="rotated", seed=4)
    assert not np.allclose(other.points, a.points)
