"""Seeded point-cloud transforms and the PTv3 default pipelines (spec section D,
``docs/ptv3-and-datasets.md``).

Every transform is ``t(sample, rng) -> sample``: it reads the sample dict of a loader, draws its
randomness only from ``rng`` (a ``numpy.random.Generator``), and returns a new dict (the input
arrays are not modified). Point-wise keys stay aligned: the geometric transforms change ``coord``
only and never reorder points; :class:`GridSample` selects the same rows from every per-point key.

Pipeline of spec D (training): random z-rotation (p 0.5, full circle) -> Waymo clamp box ->
random scale [0.9, 1.1] -> random flip of x and of y (p 0.5 each) -> jitter (sigma 0.005, clip
0.02) -> grid sampling 0.05 m (one random real point per voxel) -> features [xyz, strength]; a
scan of one voxel is refused there (decision 54).
Evaluation: clamp box (Waymo) -> deterministic grid sampling -> features; with test-time
augmentation, one :class:`FixedView` of :func:`tta_views` before grid sampling (spec D).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from train.models.serialization import MAX_DEPTH

from .base import Transform
from .cameras.camera_teacher import CAMERA_KEYS
from .validation import TooFewPointsError

# the per-point keys grid sampling thins; the camera teacher's rows (decision 61) keep the kept point's row
POINT_KEYS = ("coord", "strength", "segment", *CAMERA_KEYS)
WAYMO_CLAMP_BOX = ((-75.2, -75.2, -4.0), (75.2, 75.2, 2.0))
CLAMPED_DATASETS = ("waymo", "synthetic")  # the data sets whose points spec D clamps into WAYMO_CLAMP_BOX
SERIALIZED_SPAN = (1 << MAX_DEPTH) - 1  # voxels per axis a scan may span (grid_coord + 1 in 16 bits, spec A1)
_LOG = logging.getLogger(__name__)


def _with_coord(sample: dict, coord: np.ndarray) -> dict:
    return {**sample, "coord": np.ascontiguousarray(coord, dtype=np.float32)}


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class RandomRotateZ:
    """With probability ``p`` rotate about the z axis through the origin (the sensor for LiDAR
    frames, so the clamp box stays centred on it) by an angle uniform in [-max_angle, max_angle]."""

    def __init__(self, p: float = 0.5, max_angle: float = np.pi) -> None:
        self.p, self.max_angle = p, max_angle

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if rng.random() >= self.p:
            return dict(sample)
        angle = rng.uniform(-self.max_angle, self.max_angle)
        c, s = np.cos(angle), np.sin(angle)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return _with_coord(sample, sample["coord"].astype(np.float64) @ rot.T)

    def __repr__(self) -> str:
        return f"RandomRotateZ(p={self.p}, max_angle={self.max_angle:.4f})"


class ClampBox:
    """Clamp every coordinate into the box [low, high] (points are kept, not dropped)."""

    def __init__(self, low: Sequence[float], high: Sequence[float]) -> None:
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        if self.low.shape != (3,) or self.high.shape != (3,) or (self.low >= self.high).any():
            raise ValueError(f"ClampBox needs 3-vectors with low < high, got {low} and {high}")

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        return _with_coord(sample, np.clip(sample["coord"], self.low, self.high))

    def __repr__(self) -> str:
        return f"ClampBox(low={self.low.tolist()}, high={self.high.tolist()})"


class RandomScale:
    """Scale all coordinates by one factor uniform in [low, high]."""

    def __init__(self, low: float = 0.9, high: float = 1.1) -> None:
        if not 0 < low <= high:
            raise ValueError(f"RandomScale needs 0 < low <= high, got {low}, {high}")
        self.low, self.high = low, high

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        return _with_coord(sample, sample["coord"].astype(np.float64) * rng.uniform(self.low, self.high))

    def __repr__(self) -> str:
        return f"RandomScale({self.low}, {self.high})"


class RandomFlip:
    """Negate x with probability ``p``, then (independently) y with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        sign = np.where(rng.random(2) < self.p, -1.0, 1.0)
        return _with_coord(sample, sample["coord"] * np.array([sign[0], sign[1], 1.0], np.float32))

    def __repr__(self) -> str:
        return f"RandomFlip(p={self.p})"


class RandomJitter:
    """Add independent N(0, sigma^2) noise to every coordinate, clipped to [-clip, clip]."""

    def __init__(self, sigma: float = 0.005, clip: float = 0.02) -> None:
        if sigma < 0 or clip <= 0:
            raise ValueError(f"RandomJitter needs sigma >= 0 and clip > 0, got {sigma}, {clip}")
        self.sigma, self.clip = sigma, clip

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        noise = np.clip(self.sigma * rng.standard_normal(sample["coord"].shape), -self.clip, self.clip)
        return _with_coord(sample, sample["coord"] + noise)

    def __repr__(self) -> str:
        return f"RandomJitter(sigma={self.sigma}, clip={self.clip})"


def voxelize(coord: np.ndarray, grid_size: float, name: str | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel of every point: ``floor(coord / grid_size)`` as int64 and a scalar key per voxel.

    Returns ``(coord, grid, key)`` with ``grid`` shifted so its minimum is 0 per axis (the
    ``grid_coord`` of spec A1) and ``key`` (n,) int64 equal for two points iff they share a voxel.
    ``coord`` is the input, unless the points span more than :data:`SERIALIZED_SPAN` voxels on an
    axis: then the points outside a window of that many voxels, centred on the voxel of the points'
    median, are moved onto its nearest face (decision 54; a warning names the scan ``name``), so
    ``grid`` fits the serialization's 16 bits per axis (``MAX_DEPTH``) and the key 48 bits.
    """
    grid = np.floor(coord.astype(np.float64) / grid_size).astype(np.int64)
    low = grid.min(axis=0) if len(grid) else np.zeros(3, np.int64)
    extent = grid.max(axis=0) - low + 1 if len(grid) else np.ones(3, np.int64)
    if (extent > SERIALIZED_SPAN).any():
        coord = _into_serialized_span(coord, grid, extent, grid_size, name)
        grid = np.floor(coord.astype(np.float64) / grid_size).astype(np.int64)
        low, extent = grid.min(axis=0), grid.max(axis=0) - grid.min(axis=0) + 1
    grid -= low
    key = (grid[:, 0] * extent[1] + grid[:, 1]) * extent[2] + grid[:, 2]
    return coord, grid, key


def _into_serialized_span(coord: np.ndarray, grid: np.ndarray, extent: np.ndarray, grid_size: float,
                          name: str | None) -> np.ndarray:
    """``coord`` with the points outside the window of :func:`voxelize` moved onto its nearest face,
    half a voxel inside, so ``floor`` puts them in its edge voxels; axes that fit keep every point."""
    wide = extent > SERIALIZED_SPAN
    low = np.where(wide, np.floor(np.median(grid, axis=0)).astype(np.int64) - SERIALIZED_SPAN // 2, grid.min(axis=0))
    high = low + SERIALIZED_SPAN - 1
    outside = (grid < low) | (grid > high)
    moved = np.where(outside, np.clip(coord, (low + 0.5) * grid_size, (high + 0.5) * grid_size), coord)
    _LOG.warning("scan %r spans %s voxels of %s m, more than the %d per axis the serialization holds: %d point(s) "
                 "outside the window around its median moved onto the window's edge (decision 54)",
                 name, extent.tolist(), grid_size, SERIALIZED_SPAN, int(outside.any(axis=1).sum()))
    return moved.astype(coord.dtype)


class GridSample:
    """Keep one real point per ``grid_size`` voxel; record how to reach every original point.

    ``mode="train"``: a uniformly random point of each voxel (spec D and spec E item 9: a real point,
    not the centroid). ``mode="eval"``: the first point of each voxel in input order (deterministic).
    Adds ``grid_coord`` (m,3) int64 (``floor(coord/grid) - min``), ``inverse`` (n,) int64 mapping
    every input point to the row of the kept point of its voxel, and ``origin_segment`` (n,), the
    labels at full resolution. Kept rows are ordered by voxel key. A scan of no points is a
    :class:`~train.data.validation.TooFewPointsError` (decision 54).
    """

    def __init__(self, grid_size: float = 0.05, mode: str = "train",
                 point_keys: Sequence[str] = POINT_KEYS) -> None:
        if grid_size <= 0:
            raise ValueError(f"GridSample grid_size must be > 0, got {grid_size}")
        if mode not in ("train", "eval"):
            raise ValueError(f"GridSample mode must be 'train' or 'eval', got {mode!r}")
        self.grid_size, self.mode, self.point_keys = grid_size, mode, tuple(point_keys)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if "inverse" in sample:
            raise ValueError(f"sample {sample.get('name')!r} is already grid-sampled; apply "
                             f"GridSample once")
        coord = sample["coord"]
        if len(coord) == 0:  # prediction labels such a scan without grid sampling (decision 54)
            raise TooFewPointsError(f"scan {sample.get('name')!r} holds no points: nothing to train or evaluate "
                                    "on; remove it from the split")
        coord, grid, key = voxelize(coord, self.grid_size, sample.get("name"))
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        if self.mode == "train":
            perm = rng.permutation(len(key))
            # np.unique's return_index is the first occurrence, so after a random permutation it is
            # a uniformly random member of each voxel; voxels stay in key order.
            _, first_in_perm = np.unique(key[perm], return_index=True)
            keep = perm[first_in_perm]
        else:
            keep = first
        out = {**sample, "coord": coord}
        for k in self.point_keys:
            if k in out:
                out[k] = out[k][keep]
        out["grid_coord"] = grid[keep]
        out["inverse"] = inverse.reshape(-1).astype(np.int64)
        out["origin_segment"] = sample["segment"]
        return out

    def __repr__(self) -> str:
        return f"GridSample(grid_size={self.grid_size}, mode={self.mode!r})"


class TwoPoints:
    """Training's refusal of a grid-sampled scan of one point (one voxel): a
    :class:`~train.data.validation.TooFewPointsError`, a bad scan (decision 54). It has nothing to
    train on, and the topological term needs an edge in every cloud."""

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if len(sample["grid_coord"]) < 2:
            raise TooFewPointsError(f"scan {sample.get('name')!r} holds one voxel of the grid: nothing to train on "
                                    "(the topological term needs two points); remove it from the split")
        return dict(sample)

    def __repr__(self) -> str:
        return "TwoPoints()"


class AssembleFeatures:
    """``feat`` = concatenation of the listed per-point keys, float32 (spec D: [xyz, strength])."""

    def __init__(self, keys: Sequence[str] = ("coord", "strength")) -> None:
        self.keys = tuple(keys)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        parts = [np.asarray(sample[k], np.float32).reshape(len(sample["coord"]), -1) for k in self.keys]
        return {**sample, "feat": np.concatenate(parts, axis=1)}

    def __repr__(self) -> str:
        return f"AssembleFeatures({list(self.keys)})"


def evaluation_box(dataset: str) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
    """The box (low, high corners, metres) ``dataset``'s pipelines clamp every point into before grid
    sampling (spec D: Waymo's, which the synthetic set shares), or None for a data set not clamped."""
    return WAYMO_CLAMP_BOX if dataset in CLAMPED_DATASETS else None


def build_transforms(dataset: str, train: bool, grid_size: float = 0.05) -> Compose:
    """The PTv3 default pipeline of spec D for ``dataset`` (waymo, synthetic, nuscenes,
    semantic_kitti, folder: a scan folder is not clamped); ``train=False`` gives the deterministic
    evaluation pipeline."""
    if dataset not in ("waymo", "synthetic", "nuscenes", "semantic_kitti", "folder"):
        raise ValueError(f"build_transforms: unknown dataset {dataset!r}; choose waymo, synthetic, "
                         f"nuscenes, semantic_kitti or folder")
    box = evaluation_box(dataset)
    clamp = [] if box is None else [ClampBox(*box)]
    if not train:
        return Compose([*clamp, GridSample(grid_size, "eval"), AssembleFeatures()])
    return Compose([
        RandomRotateZ(p=0.5, max_angle=np.pi), *clamp, RandomScale(0.9, 1.1), RandomFlip(0.5),
        RandomJitter(0.005, 0.02), GridSample(grid_size, "train"), TwoPoints(), AssembleFeatures(),
    ])


class FixedView:
    """Deterministic test-time view: rotate about z by ``angle`` radians, then optionally mirror x.

    Inserted into the evaluation pipeline before grid sampling, so every view keeps all points of
    the scan in the same order and its ``inverse`` map still indexes the same original points.
    """

    def __init__(self, angle: float = 0.0, flip_x: bool = False) -> None:
        self.angle, self.flip_x = float(angle), bool(flip_x)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        c, s = math.cos(self.angle), math.sin(self.angle)
        xyz = np.asarray(sample["coord"], dtype=np.float64)
        rot = xyz @ np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
        if self.flip_x:
            rot[:, 0] = -rot[:, 0]
        return {**sample, "coord": rot.astype(np.float32)}

    def __repr__(self) -> str:
        return f"FixedView(angle={self.angle:.4f}, flip_x={self.flip_x})"


def tta_views(count: int = 4) -> list[FixedView]:
    """Identity plus rotations by multiples of 2 pi / count, and the mirrored identity."""
    return [FixedView(2 * math.pi * k / count) for k in range(count)] + [FixedView(0.0, flip_x=True)]
