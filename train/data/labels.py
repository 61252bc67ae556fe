"""Class lists and raw-id -> train-id learning maps of the three LiDAR datasets (spec section C).

Every loader maps raw label ids to contiguous train ids ``0..K-1`` with ``IGNORE_INDEX`` (-1) for
ignored and unknown ids through one :class:`LearningMap`. Ids that are in no table at all are
"unknown": they are mapped to ignore and counted in a warning (never silently).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

IGNORE_INDEX = -1

WAYMO_CLASSES: tuple[str, ...] = (
    "car", "truck", "bus", "other_vehicle", "motorcyclist", "bicyclist", "pedestrian", "sign",
    "traffic_light", "pole", "construction_cone", "bicycle", "motorcycle", "building",
    "vegetation", "tree_trunk", "curb", "road", "lane_marker", "other_ground", "walkable",
    "sidewalk",
)

NUSCENES_CLASSES: tuple[str, ...] = (
    "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
    "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain",
    "manmade", "vegetation",
)

SEMANTIC_KITTI_CLASSES: tuple[str, ...] = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
    "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence",
    "vegetation", "trunk", "terrain", "pole", "traffic-sign",
)

# nuScenes lidarseg: 32 raw ids (0..31) -> 16 train ids (spec section C table).
NUSCENES_LEARNING_MAP: dict[int, int] = {
    9: 0, 14: 1, 15: 2, 16: 2, 17: 3, 18: 4, 21: 5, 2: 6, 3: 6, 4: 6, 6: 6, 12: 7, 22: 8,
    23: 9, 24: 10, 25: 11, 26: 12, 27: 13, 28: 14, 30: 15,
    **{raw: IGNORE_INDEX for raw in (0, 1, 5, 7, 8, 10, 11, 13, 19, 20, 29, 31)},
}

# SemanticKITTI: raw semantic ids (low 16 bits of the .label words) -> 19 train ids.
SEMANTIC_KITTI_LEARNING_MAP: dict[int, int] = {
    10: 0, 252: 0, 11: 1, 15: 2, 18: 3, 258: 3, 13: 4, 16: 4, 20: 4, 256: 4, 257: 4, 259: 4,
    30: 5, 254: 5, 31: 6, 253: 6, 32: 7, 255: 7, 40: 8, 60: 8, 44: 9, 48: 10, 49: 11, 50: 12,
    51: 13, 70: 14, 71: 15, 72: 16, 80: 17, 81: 18,
    **{raw: IGNORE_INDEX for raw in (0, 1, 52, 99)},
}

# Waymo preprocessed segment.npy already holds raw label - 1 (raw 0 "undefined" -> -1), so on the
# stored values the map is the identity over -1..21; anything else is unknown.
WAYMO_LEARNING_MAP: dict[int, int] = {v: v for v in range(IGNORE_INDEX, len(WAYMO_CLASSES))}

_LOG = logging.getLogger(__name__)


class LearningMap:
    """Lookup table raw id -> train id; ids absent from the table become ignore with a warning.

    ``apply`` returns int64 train ids and logs one warning per call that met unknown ids, naming
    the file, the number of points and the unknown ids, so a wrong label file never passes quietly.
    """

    def __init__(self, dataset: str, table: Mapping[int, int], num_classes: int) -> None:
        if not table:
            raise ValueError(f"{dataset} learning map is empty: give at least one raw id")
        bad = {k: v for k, v in table.items() if not IGNORE_INDEX <= v < num_classes}
        if bad:
            raise ValueError(
                f"{dataset} learning map has train ids outside [-1, {num_classes - 1}]: {bad}; "
                f"fix the table"
            )
        self.dataset = dataset
        self.num_classes = num_classes
        self._base = min(table)  # lookup index = raw id - smallest raw id of the table
        size = max(table) - self._base + 1
        self._known = np.zeros(size, dtype=bool)
        self._lut = np.full(size, IGNORE_INDEX, dtype=np.int64)
        for raw, train in table.items():
            self._known[raw - self._base] = True
            self._lut[raw - self._base] = train

    def apply(self, raw: np.ndarray, source: str | Path) -> np.ndarray:
        """Map raw ids (any integer dtype) read from ``source`` to int64 train ids."""
        out, known = self.lookup(raw, source)
        n_unknown = int(known.size - known.sum())
        if n_unknown:
            ids = np.unique(np.asarray(raw)[~known])
            shown = ", ".join(str(i) for i in ids[:10]) + (" ..." if ids.size > 10 else "")
            _LOG.warning(
                "%s: %d point(s) carry raw label ids not in the %s learning map (%s); they are "
                "mapped to ignore (%d)", source, n_unknown, self.dataset, shown, IGNORE_INDEX,
            )
        return out

    def lookup(self, raw: np.ndarray, source: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """The int64 train ids of raw ids read from ``source`` (ignore where the table does not know
        the id) and the mask of the ids it knows; :meth:`apply` warns about the others, a scan
        folder (``train.data.lidar.folder``) refuses them."""
        raw = np.asarray(raw)
        if not np.issubdtype(raw.dtype, np.integer):
            raise TypeError(f"{source}: labels must be integers, got dtype {raw.dtype}")
        raw64 = raw.astype(np.int64, copy=False)
        index = raw64 - self._base
        inside = (index >= 0) & (index < self._lut.size)
        known = np.zeros(raw64.shape, dtype=bool)
        known[inside] = self._known[index[inside]]
        out = np.full(raw64.shape, IGNORE_INDEX, dtype=np.int64)
        out[known] = self._lut[index[known]]
        return out, known


def class_names(dataset: str) -> Sequence[str]:
    """The train-id class names of ``dataset`` ("waymo"/"synthetic", "nuscenes", "semantic_kitti")."""
    table = {
        "waymo": WAYMO_CLASSES, "synthetic": WAYMO_CLASSES, "nuscenes": NUSCENES_CLASSES,
        "semantic_kitti": SEMANTIC_KITTI_CLASSES,
    }
    if dataset not in table:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(table)}")
    return table[dataset]
