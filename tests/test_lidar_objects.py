"""Objects cut from LiDAR scans (train/data/objects/lidar_objects.py, decision 66): the synthetic
simulator's instance ids mark the points of one placed object, the cut objects are exactly those
points, and SemanticKITTI's instance ids (upper 16 bits of a .label word) are read."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from train.data.labels import WAYMO_CLASSES
from train.data.objects import load_objects
from train.data.objects.lidar_objects import (KITTI_OBJECT_CLASSES, MIN_OBJECT_POINTS, SYNTHETIC_OBJECT_CLASSES,
                                              cut_objects)
from train.data.synthetic import SensorConfig, generate_scene, simulate_frames
from train.data.synthetic.dataset import scene_split, split_sizes
from train.data.validation import DatasetLayoutError, LabelCountError


def _world(scan: dict) -> np.ndarray:
    coord = scan["coord"].astype(np.float64)
    return coord @ scan["pose"][:3, :3].T + scan["pose"][:3, 3]


def _footprints(scene: object) -> tuple[np.ndarray, np.ndarray]:
    """Per primitive (boxes, frustums, ellipsoids): centre xy and a radius, and the z range (bounds
    written from the primitive tables, not from the ray caster)."""
    b, f, e = scene.boxes, scene.frustums, scene.ellipsoids
    centre = np.concatenate([b[:, :2], f[:, :2], e[:, :2]])
    radius = np.concatenate([np.hypot(b[:, 3], b[:, 4]), np.maximum(f[:, 4], f[:, 5]), np.maximum(e[:, 3], e[:, 4])])
    z = np.concatenate([np.stack([b[:, 2] - b[:, 5], b[:, 2] + b[:, 5]], 1), np.stack([f[:, 2], f[:, 2] + f[:, 3]], 1),
                        np.stack([e[:, 2] - e[:, 5], e[:, 2] + e[:, 5]], 1)])
    return np.hstack([centre, radius[:, None]]), z


@pytest.mark.parametrize("index", [0, 1, 2])
def test_simulated_points_of_an_instance_lie_on_that_instances_primitives(index: int) -> None:
    scene = generate_scene(np.random.default_rng([7, index]))
    scan = simulate_frames(index, 7, SensorConfig(beams=24, azimuth_steps=400))[0]
    world = _world(scan)
    footprint, z = _footprints(scene)
    instance = scan["instance"]
    assert len(np.unique(instance[instance > 0])) > 10
    for inst in np.unique(instance[instance > 0]):
        points = world[instance == inst]
        prims = np.flatnonzero(scene.instance == inst)
        assert len(np.unique(scan["segment"][instance == inst])) == 1  # one class an instance
        inside = np.zeros(len(points), dtype=bool)
        for p in prims:
            near = np.hypot(*(points[:, :2] - footprint[p, :2]).T) <= footprint[p, 2] + 0.1
            inside |= near & (points[:, 2] >= z[p, 0] - 0.1) & (points[:, 2] <= z[p, 1] + 0.1)
        assert inside.all(), f"instance {inst}: {int((~inside).sum())} points off its primitives"
    ground = instance == 0
    assert ground.any() and set(np.unique(scan["segment"][ground])) >= {WAYMO_CLASSES.index("road")}


def test_one_object_with_two_classes_gives_two_instances_and_a_rider_joins_its_bicycle() -> None:
    scene = generate_scene(np.random.default_rng([3, 0]))
    labels = np.concatenate([scene.boxes[:, 7], scene.frustums[:, 6], scene.ellipsoids[:, 7]]).astype(int)
    for inst in np.unique(scene.instance[scene.instance > 0]):
        assert len(np.unique(labels[scene.instance == inst])) == 1
    stuff = labels[scene.instance == 0]
    assert set(stuff.tolist()) <= {WAYMO_CLASSES.index(c) for c in ("building", "curb", "sidewalk", "vegetation")}


def test_cut_objects_are_exactly_the_instances_of_kept_classes_with_enough_points() -> None:
    coord = np.arange(3 * 400, dtype=np.float32).reshape(400, 3)
    instance = np.repeat([0, 5, 9, 9, 2], [50, 120, 100, 30, 100])
    segment = np.repeat([17, 0, 6, 0, 13], [50, 120, 100, 30, 100])  # road, car, pedestrian, car, building
    objects = cut_objects(coord, segment, instance, [0, 6])
    assert [(len(p), c) for p, c in objects] == [(120, 0), (100, 1)]  # 9's 30 car points and the building dropped
    np.testing.assert_array_equal(objects[1][0], coord[170:270])


def test_lidar_objects_are_the_cut_instances_of_the_scenes_of_each_split() -> None:
    size, seed = 6, 2
    n_val, n_test = split_sizes(size, 0.2, 0.2)
    classes = [WAYMO_CLASSES.index(c) for c in SYNTHETIC_OBJECT_CLASSES]
    for split, wanted in (("train", {"training"}), ("val", {"validation"}), ("test", {"testing"})):
        expected = []
        for i in range(size):
            if scene_split(i, size, n_val, n_test) in wanted:
                scan = simulate_frames(i, seed, SensorConfig())[0]
                expected += cut_objects(scan["coord"], scan["segment"], scan["instance"], classes)
        got = load_objects("lidar_objects", split=split, size=size, seed=seed, points=MIN_OBJECT_POINTS)
        assert len(got) == len(expected) > 0
        np.testing.assert_array_equal(got.labels, [c for _, c in expected])
        assert got.class_names == SYNTHETIC_OBJECT_CLASSES
        for (points, _), cloud in zip(expected, got.points):
            if len(points) == MIN_OBJECT_POINTS:  # kept whole: the normalised object
                centred = points - points.mean(axis=0)
                np.testing.assert_allclose(cloud, centred / np.linalg.norm(centred, axis=1).max(), atol=1e-5)


def _kitti_scan(folder: Path, name: str, rng: np.random.Generator, objects: list[tuple[int, int, int]]) -> None:
    """A scan of road points (raw id 40, no instance) plus (instance, raw class id, points) objects."""
    words, points = [np.full(200, 40, dtype=np.uint32)], [rng.uniform(-20, 20, (200, 4))]
    for inst, raw, count in objects:
        words.append(np.full(count, (inst << 16) | raw, dtype=np.uint32))
        points.append(rng.normal(inst, 0.5, (count, 4)))
    (folder / "velodyne").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(exist_ok=True)
    np.concatenate(points).astype(np.float32).tofile(folder / "velodyne" / f"{name}.bin")
    np.concatenate(words).tofile(folder / "labels" / f"{name}.label")


def test_semantic_kitti_objects_are_read_from_the_upper_16_bits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    seq = tmp_path / "sequences"
    # 08 is the test split: a car (raw 10), a moving person (raw 254 -> person), a bicycle too small
    _kitti_scan(seq / "08", "000000", rng, [(3, 10, 150), (4, 254, 120), (5, 11, 99)])
    _kitti_scan(seq / "08", "000001", rng, [(3, 10, 160)])
    _kitti_scan(seq / "10", "000000", rng, [(1, 18, 300)])  # a truck in the val sequence
    test = load_objects("semantic_kitti_objects", tmp_path, "test", points=64)
    names = [test.class_names[label] for label in test.labels]
    assert names == ["car", "person", "car"] and test.class_names == KITTI_OBJECT_CLASSES
    val = load_objects("semantic_kitti_objects", tmp_path, "val", points=64)
    assert [val.class_names[label] for label in val.labels] == ["truck"]
    with pytest.raises(DatasetLayoutError, match="no sequence of the 'train' split"):
        load_objects("semantic_kitti_objects", tmp_path, "train", points=64)


def test_semantic_kitti_label_file_of_another_length_is_refused_naming_it(tmp_path: Path) -> None:
    _kitti_scan(tmp_path / "sequences" / "08", "000000", np.random.default_rng(1), [(3, 10, 150)])
    label = tmp_path / "sequences" / "08" / "labels" / "000000.label"
    label.write_bytes(label.read_bytes()[:-8])
    with pytest.raises(LabelCountError, match=r"000000\.label' has 348 entries but the point file .*000000\.bin' has 350"):
        load_objects("semantic_kitti_objects", tmp_path, "test", points=64)
