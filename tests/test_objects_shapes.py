"""The procedural ``shapes`` set (train/data/objects/shapes.py) and the surface sampler under it
(surfaces.py): points on the surfaces, spread by area; every class and part present; determinism
per (seed, index); classes learnable but not trivially separable."""
from __future__ import annotations

import numpy as np
import pytest

from train.data.objects import load_objects
from train.data.objects.shapes import SHAPE_CLASSES, SHAPE_NAMES, SHAPE_PART_CLASSES, SHAPE_PARTS, make_shape
from train.data.objects.surfaces import Box, Ellipsoid, Frustum, Placed, TorusArc, rotation_about, sample_surfaces


def test_points_lie_on_the_surface_of_each_primitive() -> None:
    rng = np.random.default_rng(0)
    box = Box((1.0, 2.0, 0.5)).sample(2000, rng)
    np.testing.assert_allclose(np.abs(box / [0.5, 1.0, 0.25]).max(axis=1), 1.0)
    cone = Frustum(0.6, 0.2, 1.5, bottom=True).sample(2000, rng)
    radius = np.hypot(cone[:, 0], cone[:, 1])
    side = cone[:, 2] > 1e-12
    np.testing.assert_allclose(radius[side], 0.6 + (0.2 - 0.6) * cone[side, 2] / 1.5, atol=1e-12)
    assert (radius[~side] <= 0.6).all() and (~side).sum() > 100
    ell = Ellipsoid((1.0, 0.5, 0.2)).sample(2000, rng)
    np.testing.assert_allclose(((ell / [1.0, 0.5, 0.2]) ** 2).sum(axis=1), 1.0)
    torus = TorusArc(1.0, 0.3, 0.0, np.pi).sample(2000, rng)
    ring = np.hypot(torus[:, 0], torus[:, 1])
    np.testing.assert_allclose(np.hypot(ring - 1.0, torus[:, 2]), 0.3)
    assert (torus[:, 1] >= -0.3 - 1e-12).all()  # the arc from 0 to pi: y >= -tube


def test_points_are_spread_uniformly_by_area() -> None:
    """Shares a sampler that is not area-uniform gets wrong: a box's faces, a cone's lower half, a
    flat ellipsoid's central disc (a direction on the sphere scaled without rejection: 13%), a fat
    torus's outer half (uniform angles: 50%)."""
    rng, n = np.random.default_rng(1), 40_000
    box = Box((1.0, 2.0, 4.0)).sample(n, rng)
    on_xy = np.isclose(np.abs(box[:, 2]), 2.0).mean()
    assert abs(on_xy - 2.0 / (2.0 + 4.0 + 8.0)) < 0.01
    cone = Frustum(1.0, 0.0, 1.0).sample(n, rng)
    assert abs((cone[:, 2] < 0.5).mean() - 0.75) < 0.01  # the lower half holds 3/4 of a cone's side
    flat = Ellipsoid((1.0, 1.0, 0.001)).sample(n, rng)
    assert abs((np.hypot(flat[:, 0], flat[:, 1]) < 0.5).mean() - 0.25) < 0.01
    fat = TorusArc(1.0, 0.9, 0.0, 2 * np.pi).sample(n, rng)
    outer = np.hypot(fat[:, 0], fat[:, 1]) > 1.0
    assert abs(outer.mean() - (0.5 + 0.9 / np.pi)) < 0.01


def test_placed_primitives_share_points_by_area_and_keep_their_parts() -> None:
    placed = [Placed(Box((1.0, 1.0, 1.0)), 4), Placed(Box((2.0, 2.0, 2.0)), 7, (5.0, 0.0, 0.0), rotation_about(2, 0.3))]
    points, parts = sample_surfaces(placed, 20_000, np.random.default_rng(2))
    assert set(parts.tolist()) == {4, 7} and abs((parts == 7).mean() - 0.8) < 0.01
    assert (points[parts == 7, 0] > 3.0).all() and (np.abs(points[parts == 4]) <= 0.5 + 1e-12).all()


def test_shapes_have_at_least_ten_classes_and_parts_numbered_globally() -> None:
    assert len(SHAPE_NAMES) >= 10
    assert len(SHAPE_PARTS) == len(SHAPE_PART_CLASSES) == sum(len(p) for _, p in SHAPE_CLASSES.values())
    assert SHAPE_PARTS[0] == "chair/seat" and SHAPE_PARTS[4] == "stool/seat" and SHAPE_PART_CLASSES[4] == 1


def test_every_class_is_present_in_every_split_with_all_its_parts() -> None:
    for split in ("train", "val", "test"):
        s = load_objects("shapes", split=split, size=20, points=512, task="parts")
        assert set(s.labels.tolist()) == set(range(len(SHAPE_NAMES)))
        assert (s.part_classes[s.parts] == s.labels[:, None]).all()  # a cloud's parts are of its class
        if split != "val":  # val holds two clouds a class here: optional parts (a chair's arms) may be absent
            assert set(np.unique(s.parts).tolist()) == set(range(len(SHAPE_PARTS)))


def test_a_cloud_depends_only_on_seed_and_index() -> None:
    a, pa = make_shape(3, 256, np.random.default_rng([5, 0, 40, 1]))
    b, pb = make_shape(3, 256, np.random.default_rng([5, 0, 40, 1]))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pa, pb)
    small = load_objects("shapes", split="trainval", size=4, points=256, seed=5)
    large = load_objects("shapes", split="trainval", size=8, points=256, seed=5)
    np.testing.assert_array_equal(small.points, large.points[:len(small)])


def _d2_histograms(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Osada et al.'s D2 shape distribution: a histogram of distances between random point pairs."""
    pairs = rng.integers(0, points.shape[1], (len(points), 2, 1000))
    a = np.take_along_axis(points, pairs[:, 0, :, None], 1)
    b = np.take_along_axis(points, pairs[:, 1, :, None], 1)
    d = np.linalg.norm(a - b, axis=2)
    return np.stack([np.histogram(x, bins=16, range=(0.0, 2.0))[0] for x in d]) / 1000


@pytest.mark.parametrize("setting", ["aligned", "rotated"])
def test_classes_are_learnable_but_not_trivially_separable(setting: str) -> None:
    """A nearest neighbour on D2 distributions (rotation-invariant) is far above chance (1/13) but
    not perfect: random proportions, turns and noise make the classes overlap."""
    train = load_objects("shapes", split="train", size=20, points=512, setting=setting)
    test = load_objects("shapes", split="test", size=20, points=512, setting=setting)
    rng = np.random.default_rng(0)
    f_train, f_test = _d2_histograms(train.points, rng), _d2_histograms(test.points, rng)
    nearest = ((f_test[:, None] - f_train[None]) ** 2).sum(axis=2).argmin(axis=1)
    accuracy = (train.labels[nearest] == test.labels).mean()
    assert 0.5 < accuracy < 0.97, accuracy
