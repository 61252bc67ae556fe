"""Objects cut from LiDAR scans: one cloud per instance of a scan, with its class (decision 66).

:func:`cut_objects` groups a scan's points by (instance id, class) and keeps the groups of a kept
class with at least :data:`MIN_OBJECT_POINTS` points, in the order of their instance ids. The random
stream of an object (the pre-processing's) is keyed by its scan and its place in it, so an object
is the same in ``trainval`` as in ``train``. Two sources:

- ``lidar_objects``: scenes of the synthetic simulator (:mod:`train.data.synthetic`), simulated
  on the fly with the demo's sensor; scene i is the LiDAR set's scene i (same seed, same scan),
  whose instance ids the simulator records. ``size`` scenes (:data:`LIDAR_SCENES`, the demo's
  count) are split as the LiDAR set splits them (:func:`train.data.synthetic.dataset.split_sizes`,
  20% validation and 20% test scenes): its training, validation and testing scenes give ``train``,
  ``val`` and ``test``, so no scene gives objects to two splits. Classes: the 13 Waymo classes that
  are objects the simulated sensor sees whole (:data:`SYNTHETIC_OBJECT_CLASSES`: traffic lights
  are left out, their housings, high over the road, never gave 100 points in the 120 demo scenes).
- ``semantic_kitti_objects``: a SemanticKITTI download (:mod:`train.data.lidar.semantic_kitti`; instance
  id in the upper 16 bits of a ``.label`` word, the semantic id in the lower 16), its eight thing
  classes (car ... motorcyclist). ``test`` is sequence 08 (the labelled validation sequence every
  paper reports on), ``trainval`` the other labelled sequences and, held out of them as whole
  sequences so that one tracked object is never in two splits, ``val`` is sequence 10. Sequences
  of a split absent on disk are skipped with a warning (as
  :class:`train.data.lidar.semantic_kitti.SemanticKITTIDataset` does); none present is an error.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..labels import SEMANTIC_KITTI_CLASSES, WAYMO_CLASSES
from ..lidar.semantic_kitti import SEMANTIC_KITTI_LAYOUT, SEMANTIC_KITTI_SPLITS, read_semantic_kitti_scan
from ..synthetic.dataset import scene_split, simulate_frames, split_sizes
from ..synthetic.sensor import SensorConfig
from ..validation import layout_error, read_records, require_dir, require_file
from .cloud import RawClouds

MIN_OBJECT_POINTS = 100
LIDAR_SCENES = 120  # the synthetic LiDAR demo's scene count (train.data.synthetic.ensure_synthetic_dataset)
SYNTHETIC_OBJECT_CLASSES = ("car", "truck", "bus", "other_vehicle", "motorcyclist", "bicyclist", "pedestrian",
                            "sign", "pole", "construction_cone", "bicycle", "motorcycle", "tree_trunk")
KITTI_OBJECT_CLASSES = SEMANTIC_KITTI_CLASSES[:8]  # car, bicycle, ..., motorcyclist: the classes with instances
KITTI_OBJECT_SPLITS = {"train": (0, 1, 2, 3, 4, 5, 6, 7, 9), "val": (10,), "trainval": SEMANTIC_KITTI_SPLITS["train"],
                       "test": SEMANTIC_KITTI_SPLITS["val"]}
_LOG = logging.getLogger(__name__)
_SYNTHETIC_SPLITS = {"train": ("training",), "val": ("validation",), "trainval": ("training", "validation"),
                     "test": ("testing",)}


def cut_objects(coord: np.ndarray, segment: np.ndarray, instance: np.ndarray,
                classes: Sequence[int]) -> list[tuple[np.ndarray, int]]:
    """The objects of one scan: (points (m, 3), index into ``classes``) for each (instance, class)
    group of instance id > 0 whose class is in ``classes`` and m >= :data:`MIN_OBJECT_POINTS`."""
    kept = {c: k for k, c in enumerate(classes)}
    objects = []
    for inst in np.unique(instance[instance > 0]):
        members = instance == inst
        for c in np.unique(segment[members]):
            mask = members & (segment == c)
            if int(c) in kept and mask.sum() >= MIN_OBJECT_POINTS:
                objects.append((coord[mask], kept[int(c)]))
    return objects


def _raw(objects: list[tuple[np.ndarray, int]], keys: list[tuple[int, int]], sources: list[str]) -> RawClouds:
    return RawClouds(np.array([c for _, c in objects], dtype=np.int64), np.array(keys, dtype=np.int64).reshape(-1, 2),
                     sources, lambda i: (objects[i][0], None))


def read_synthetic_objects(split: str, seed: int, size: int) -> RawClouds:
    """``split`` of the objects of ``size`` synthetic scenes (module docstring)."""
    n_val, n_test = split_sizes(size, 0.2, 0.2)
    wanted = _SYNTHETIC_SPLITS[split]
    classes = [WAYMO_CLASSES.index(name) for name in SYNTHETIC_OBJECT_CLASSES]
    objects, keys, sources = [], [], []
    for i in range(size):
        if scene_split(i, size, n_val, n_test) not in wanted:
            continue
        scan = simulate_frames(i, seed, SensorConfig())[0]
        cut = cut_objects(scan["coord"], scan["segment"], scan["instance"], classes)
        objects += cut
        keys += [(i, k) for k in range(len(cut))]
        sources += [f"synthetic scene {i} (seed {seed}) object {k}" for k in range(len(cut))]
    return _raw(objects, keys, sources)


def read_kitti_objects(root: Path, split: str) -> RawClouds:
    """``split`` of the objects of the SemanticKITTI download at ``root`` (module docstring)."""
    root = require_dir(root, "semantic_kitti_objects", SEMANTIC_KITTI_LAYOUT)
    classes = list(range(len(KITTI_OBJECT_CLASSES)))
    objects, keys, sources, missing = [], [], [], []
    for seq in KITTI_OBJECT_SPLITS[split]:
        velodyne = root / "sequences" / f"{seq:02d}" / "velodyne"
        if not velodyne.is_dir():
            missing.append(f"{seq:02d}")
            continue
        for number, bin_path in enumerate(sorted(velodyne.glob("*.bin"))):
            label_path = require_file(velodyne.parent / "labels" / f"{bin_path.stem}.label", "semantic_kitti",
                                      SEMANTIC_KITTI_LAYOUT)
            scan = read_semantic_kitti_scan(bin_path, label_path)  # checks the label count
            words = read_records(label_path, np.uint32, 1, "SemanticKITTI label file (uint32)")[:, 0]
            cut = cut_objects(scan["coord"], scan["segment"], (words >> 16).astype(np.int64), classes)
            objects += cut
            keys += [(seq * 1_000_000 + number, k) for k in range(len(cut))]
            sources += [f"{bin_path} object {k}" for k in range(len(cut))]
    if len(missing) == len(KITTI_OBJECT_SPLITS[split]):
        raise layout_error(f"semantic_kitti_objects: no sequence of the {split!r} split "
                           f"({', '.join(missing)}) under {str(root / 'sequences')!r}", SEMANTIC_KITTI_LAYOUT)
    if missing:
        _LOG.warning("semantic_kitti_objects: sequences %s of the %r split are not under %s; skipped",
                     ", ".join(missing), split, root / "sequences")
    return _raw(objects, keys, sources)
