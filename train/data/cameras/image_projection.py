"""2D predictions carried onto a scan's points through its calibrated cameras (decision 60).

Per camera (:class:`train.data.cameras.camera.Camera`, decision 58) a point is **seen** when its depth is
above ``min_depth`` and it falls inside the image (:meth:`Camera.pixels`), and is not **hidden** by
the depth test: the scan's own seen points make a z-buffer of the image in blocks of
``block x block`` pixels (LiDAR is sparse: two points of one surface seldom share a pixel), holding
each block's smallest depth ``z_min``; a point of depth ``z`` in a block is hidden when
``z > z_min (1 + relative) + absolute``. The LiDAR sees past an object that the camera, mounted
elsewhere, sees in front of it; without the test such points take the nearer object's class.

A point seen by several cameras (:data:`CAMERA_RULES`) takes the ``average`` of their
probabilities weighted by 1 / depth (ids count as one-hot probabilities, so two cameras that
disagree on an id leave the nearer one's), or the prediction of its ``nearest`` camera (the
smallest depth), or that of the ``first`` camera in the data set's order; features are fused
alike. A pixel whose class the class map ignores (for a probability map: whose most probable 2D
class it ignores) does not count as seeing the point (another camera may label it). The z-buffer block is by default (``block`` None) the mean spacing of the camera's
seen points in pixels (:func:`auto_block`), so one rule serves a dense and a sparse LiDAR.

:func:`project_scan` is the one door: the points, their cameras and, per camera, the class
probabilities and optional feature vectors at given pixels (:class:`CameraPrediction`, read from
files by :mod:`train.data.cameras.image_predictions`) in; per point a train id, probabilities and features
out (:class:`ProjectedLabels`). The arithmetic is numpy only; no file is read here.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .camera import DEFAULT_MIN_DEPTH, Camera

CAMERA_RULES: tuple[str, ...] = ("average", "nearest", "first")
DEFAULT_CAMERA_RULE = "average"


@dataclass(frozen=True)
class DepthTest:
    """The depth test's z-buffer block (pixels) and tolerance (see the module docstring)."""

    block: int | None = None  # None: the mean spacing of the camera's seen points (auto_block)
    relative: float = 0.1
    absolute: float = 1.0


DEFAULT_DEPTH_TEST = DepthTest()


class CameraPrediction(Protocol):
    """A camera's 2D prediction, read at pixels (``rows``, ``cols``: int arrays of one length m)."""

    def probabilities(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(m, K) float32 class probabilities over the data set's train ids; all-zero rows where the
        pixel's class is ignored."""

    @property
    def feature_channels(self) -> int | None:
        """C of the camera's feature map, or None without one."""

    def features(self, uv: np.ndarray) -> np.ndarray | None:
        """(m, C) float32 features at the continuous pixel coordinates ``uv`` (m, 2), or None."""


@dataclass(frozen=True)
class ProjectedLabels:
    """One scan's projected prediction: ``labels`` (n,) int64 train ids, -1 where no camera labels
    the point; ``probabilities`` (n, K) float32, NaN rows there; ``features`` (n, C) float32 with NaN
    rows, or None; ``seen_by`` (n,) int64: how many cameras label the point; ``hidden`` (int): the
    (point, camera) pairs the depth test removed; ``unsolved`` (int): the (point, camera) pairs whose
    exposure time a rolling shutter's iteration did not find (not seen, decision 64)."""

    labels: np.ndarray
    probabilities: np.ndarray
    features: np.ndarray | None
    seen_by: np.ndarray
    hidden: int
    unsolved: int


def hidden_points(rows: np.ndarray, cols: np.ndarray, depth: np.ndarray, width: int,
                  test: DepthTest) -> np.ndarray:
    """(m,) bool: which of m seen points (pixel ``rows``, ``cols``, ``depth``) lie behind a nearer
    point of their z-buffer block by more than the tolerance of ``test``."""
    size = test.block or auto_block(rows, cols)
    blocks_per_row = -(-width // size)
    block = (rows // size) * blocks_per_row + cols // size
    _, slot = np.unique(block, return_inverse=True)
    nearest = np.full(slot.max() + 1 if slot.size else 0, np.inf)
    np.minimum.at(nearest, slot, depth)
    return depth > nearest[slot] * (1.0 + test.relative) + test.absolute


def auto_block(rows: np.ndarray, cols: np.ndarray) -> int:
    """The z-buffer block of a camera whose seen points lie at ``rows``, ``cols``: their mean
    spacing, the square root of the pixels of their bounding box per point, rounded up."""
    if rows.size == 0:
        return 1
    area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    return max(1, int(np.ceil(np.sqrt(area / rows.size))))


def visible_pixels(camera: Camera, xyz: np.ndarray, min_depth: float, test: DepthTest | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``(index, rows, cols, depth, uv, hidden, unsolved)``: the indices of the points of ``xyz`` that
    ``camera`` sees (:meth:`Camera.pixels`) and the depth test (None: none) keeps, their pixels,
    depths and (m, 2) continuous pixel coordinates, how many points the test hid and how many the
    camera's rolling shutter left unsolved (NaN depth from :meth:`Camera.project`)."""
    all_uv, all_depth = camera.project(xyz)
    rows, cols, depth = camera.seen_pixels(all_uv, all_depth, min_depth)
    index = np.flatnonzero(rows >= 0)
    rows, cols, depth = rows[index], cols[index], depth[index]
    keep = ~hidden_points(rows, cols, depth, camera.width, test) if test is not None else np.ones(index.size, bool)
    return (index[keep], rows[keep], cols[keep], depth[keep], all_uv[index[keep]], int((~keep).sum()),
            int(np.isnan(all_depth).sum()))


def project_scan(xyz: np.ndarray, cameras: Sequence[Camera], prediction: Callable[[Camera], CameraPrediction],
                 num_classes: int, rule: str = DEFAULT_CAMERA_RULE, min_depth: float = DEFAULT_MIN_DEPTH,
                 depth_test: DepthTest | None = DEFAULT_DEPTH_TEST) -> ProjectedLabels:
    """Every point of ``xyz`` (n, 3, the scan's frame as loaded) labelled from the predictions of
    the ``cameras`` that see it (``prediction(camera)``, asked of every camera: a bad file is found
    though the camera sees no point), fused by ``rule`` (:data:`CAMERA_RULES`). Features come out
    when the cameras have feature maps (all of one width C, which the caller checks)."""
    if rule not in CAMERA_RULES:
        raise ValueError(f"camera rule {rule!r} is not one of {CAMERA_RULES}")
    xyz = np.asarray(xyz, dtype=np.float64)
    n = len(xyz)
    total = np.zeros((n, num_classes), np.float64)  # the chosen (or summed, weighted) probabilities
    weight = np.zeros(n, np.float64)  # their weight: 1 for one camera's, the sum of 1 / depth for the average
    best_depth = np.full(n, np.inf)
    seen_by = np.zeros(n, np.int64)
    predictions = [prediction(camera) for camera in cameras]
    width = predictions[0].feature_channels if predictions else None
    feature_total = np.zeros((n, width), np.float64) if width is not None else None
    hidden = unsolved = 0
    for camera, pred in zip(cameras, predictions):
        index, rows, cols, depth, uv, hid, lost = visible_pixels(camera, xyz, min_depth, depth_test)
        hidden += hid
        unsolved += lost
        probs = pred.probabilities(rows, cols)
        feats = pred.features(uv)
        labelled = probs.sum(axis=1) > 0  # an ignored class does not see the point
        index, probs, depth = index[labelled], probs[labelled], depth[labelled]
        feats = feats[labelled] if feats is not None else None
        if rule == "average":
            w = 1.0 / depth
            total[index] += w[:, None] * probs
            weight[index] += w
            if feature_total is not None:
                feature_total[index] += w[:, None] * feats
        else:
            take = depth < best_depth[index] if rule == "nearest" else seen_by[index] == 0
            chosen = index[take]
            total[chosen], weight[chosen], best_depth[chosen] = probs[take], 1.0, depth[take]
            if feature_total is not None:
                feature_total[chosen] = feats[take]
        seen_by[index] += 1
    labelled = seen_by > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        probabilities = (total / total.sum(axis=1, keepdims=True)).astype(np.float32)  # mapping may drop mass
        features = (feature_total / weight[:, None]).astype(np.float32) if feature_total is not None else None
    labels = np.where(labelled, np.argmax(np.nan_to_num(probabilities, nan=-1.0), axis=1), -1)
    return ProjectedLabels(labels.astype(np.int64), probabilities, features, seen_by, hidden, unsolved)
