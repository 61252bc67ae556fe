"""The one door to the object data sets: :func:`load_objects` (the package docstring lists the names)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cloud import DEFAULT_POINTS, SETTINGS, SPLITS, TASKS, ObjectSet, RawClouds, build_set
from .lidar_objects import (KITTI_OBJECT_CLASSES, LIDAR_SCENES, SYNTHETIC_OBJECT_CLASSES, read_kitti_objects,
                            read_synthetic_objects)
from .modelnet40 import modelnet40_classes, read_modelnet40
from .scanobjectnn import SCANOBJECTNN_CLASSES, SCANOBJECTNN_VARIANTS, read_scanobjectnn
from .shapenet_part import part_table, read_shapenet_part, shapenet_part_classes
from .shapes import SHAPE_NAMES, SHAPE_PART_CLASSES, SHAPE_PARTS, SHAPES_SIZE, read_shapes
from train.runtime.memory import check_fits

FILE_SETS = ("modelnet40", *SCANOBJECTNN_VARIANTS, "shapenet_part", "semantic_kitti_objects")
GENERATED_SETS = {"shapes": SHAPES_SIZE, "lidar_objects": LIDAR_SCENES}  # name -> default size
OBJECT_SETS = (*FILE_SETS, *GENERATED_SETS)
PART_SETS = ("shapenet_part", "shapes")


def load_objects(name: str, root: str | Path | None = None, split: str = "train", *, points: int | None = None,
                 setting: str = "aligned", task: str = "classification", seed: int = 0,
                 size: int | None = None) -> ObjectSet:
    """``split`` of the object data set ``name``, pre-processed (package docstring).

    ``root``: the download's folder (file sets; none for the generated ones); ``points`` N per
    cloud (default 1,024, 2,048 for ``task="parts"``); ``setting`` "aligned", "rotated" or "rotated_raw";
    ``task`` "classification" or "parts" (``parts`` filled; shapenet_part and shapes only);
    ``seed`` the random streams (and the generated sets' content); ``size`` of a generated set
    (shapes: training clouds a class, default 100; lidar_objects: scenes, default 120).
    """
    _check(name, root, split, points, setting, task, seed, size)
    n = DEFAULT_POINTS[task] if points is None else points
    if name == "shapes":
        _check_shapes_fit(SHAPES_SIZE if size is None else size, n, task)
    source = _source(name, None if root is None else Path(root), split, n, seed,
                     GENERATED_SETS.get(name) if size is None else size)
    with_parts = task == "parts"
    return build_set(source.read(), name=name, split=split, class_names=source.classes, points=n, setting=setting,
                     seed=seed, part_names=source.part_names if with_parts else None,
                     part_classes=source.part_classes if with_parts else None)


def _check_shapes_fit(size: int, n: int, task: str) -> None:
    """MemoryError in one line, before any cloud is made, when the generated shapes' ``trainval``
    split (the largest) cannot be held: float32 points and, for parts, int64 part ids. Measured: the
    train split of size 20 at 20,000 points grew the process's peak by 61.4 MB against 62.4 here."""
    clouds = len(SHAPE_NAMES) * size
    check_fits(clouds * n * (12 + 8 * (task == "parts")), f"the generated shapes ({size} clouds a class of {n} points)",
               "give a smaller --size or fewer --points")


def _check(name: str, root: str | Path | None, split: str, points: int | None, setting: str, task: str, seed: int,
           size: int | None) -> None:
    """Every argument of :func:`load_objects`, checked once, each refusal one line naming the value."""
    for what, value, allowed in (("data set", name, OBJECT_SETS), ("split", split, SPLITS),
                                 ("setting", setting, SETTINGS), ("task", task, TASKS)):
        if value not in allowed:
            raise ValueError(f"object {what} {value!r} is not one of {', '.join(allowed)}")
    if task == "parts" and name not in PART_SETS:
        raise ValueError(f"{name} has no part labels; part segmentation reads {' or '.join(PART_SETS)}")
    if points is not None and (isinstance(points, bool) or not isinstance(points, int) or points < 1):
        raise ValueError(f"points must be a positive integer, got {points!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if name in GENERATED_SETS:
        if root is not None:
            raise ValueError(f"{name} is generated, it reads no --data-root (got {str(root)!r})")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"size of {name} must be a positive integer, got {size!r}")
    else:
        if root is None:
            raise ValueError(f"{name} is read from its download: give its folder (--data-root); docs/objects.md")
        if size is not None:
            raise ValueError(f"size applies to the generated sets ({', '.join(GENERATED_SETS)}), not to {name}")


@dataclass(frozen=True)
class _Source:
    """How to read a split of a data set, and its classes and parts."""

    read: Callable[[], RawClouds]
    classes: tuple[str, ...]
    part_names: tuple[str, ...] | None = None
    part_classes: np.ndarray | None = None


def _source(name: str, root: Path | None, split: str, n: int, seed: int, size: int | None) -> _Source:
    if name == "modelnet40":
        return _Source(lambda: read_modelnet40(root, split), modelnet40_classes(root))
    if name in SCANOBJECTNN_VARIANTS:
        return _Source(lambda: read_scanobjectnn(root, split, name), SCANOBJECTNN_CLASSES)
    if name == "shapenet_part":
        classes, _ = shapenet_part_classes(root)
        return _Source(lambda: read_shapenet_part(root, split), classes, *part_table(classes))
    if name == "shapes":
        return _Source(lambda: read_shapes(split, n, seed, size), SHAPE_NAMES, SHAPE_PARTS, SHAPE_PART_CLASSES)
    if name == "lidar_objects":
        return _Source(lambda: read_synthetic_objects(split, seed, size), SYNTHETIC_OBJECT_CLASSES)
    return _Source(lambda: read_kitti_objects(root, split), KITTI_OBJECT_CLASSES)
