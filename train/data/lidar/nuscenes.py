"""nuScenes lidarseg loader: the raw layout with its official splits, or Pointcept's info files
(spec sections C2 and G).

Files: ``samples/LIDAR_TOP/*.pcd.bin`` (float32 x5: x, y, z, intensity, ring index) and
``lidarseg/<version>/<lidar_token>_lidarseg.bin`` (uint8, one raw label per point). Keyframes of
LIDAR_TOP only. Strength = intensity / 255. Labels: 32 raw ids -> 16 classes
(labels.NUSCENES_LEARNING_MAP). Which keyframes exist comes from one of two indexes
(:mod:`train.data.lidar.nuscenes_index`, read once per process):

- the version's tables ``root/<version>/`` when that folder exists. ``version`` is one of
  :data:`NUSCENES_VERSIONS`. The scenes of a split, first match wins: ``scenes=`` (names, or a text
  file with one name per line, "#" comments); ``root/splits/<list>.txt``; the official list
  shipped in ``nuscenes_splits.json``. ``<list>`` is the official name of the split in this
  version: "train"/"val" are train/val in v1.0-trainval and mini_train/mini_val in v1.0-mini,
  "test" is test in v1.0-test; official names and any name with a list file are accepted as
  they are, and "all" takes every keyframe of the version. "sweeps" takes the LIDAR_TOP sweeps
  between the keyframes of the training scenes (those of "train"; ``is_key_frame`` false), which
  have no lidarseg labels: unlabelled samples (decision 57). A version without ``lidarseg.json``
  (v1.0-test) yields unlabelled samples (``segment`` all -1);
- otherwise Pointcept's ``root/info/nuscenes_infos_<K>sweeps_<split>.pkl`` (split train, val or
  test), whose paths are relative to ``root/raw`` when that folder exists, else to ``root``.
  Its records without ``gt_segment_path`` (the test split) are unlabelled.

Cameras (decision 59, :mod:`train.data.lidar.nuscenes_cameras`): the six images of each LiDAR sweep with
the chain LiDAR -> ego at the sweep's time -> global -> ego at the image's time -> camera, read from
the version's tables alone: in Pointcept's info layout those under ``raw/<version>/`` (the
download the info files were made from; the info files hold camera entries only when made with
``--with_camera``), image paths then starting with ``raw/``; without them, no cameras (refused).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from train.option_names import DEFAULT_NUSCENES_VERSION, NUSCENES_VERSIONS

from ..base import PointCloudDataset, Transform
from ..cameras.camera import Camera
from ..labels import NUSCENES_CLASSES, NUSCENES_LEARNING_MAP, LearningMap
from .nuscenes_cameras import nuscenes_cameras
from .nuscenes_index import NUSCENES_LAYOUT, KeyFrame, info_index, official_splits, sweep_index, table_index
from ..validation import (DatasetLayoutError, check_count, layout_error, make_sample, read_records, require_dir,
                          require_file)

# train.run asks every version for "train" and "val"; in v1.0-mini they stand for its own lists.
_MINI_LISTS: dict[str, str] = {"train": "mini_train", "val": "mini_val"}
_VERSION_HINT = ("train/val: v1.0-trainval, mini_train/mini_val: v1.0-mini, test: v1.0-test; "
                 "--nuscenes-version, or version= in Python")
INFO_SPLITS: tuple[str, ...] = ("train", "val", "test")
SWEEPS = "sweeps"  # the non-keyframe LIDAR_TOP sweeps of the training scenes

_NUSCENES_MAP = LearningMap("nuscenes", NUSCENES_LEARNING_MAP, len(NUSCENES_CLASSES))
_LOG = logging.getLogger(__name__)


def read_nuscenes_scan(points_path: str | Path, label_path: str | Path | None = None,
                       name: str | None = None) -> dict:
    """One LIDAR_TOP sweep as the sample dict; ``label_path=None`` gives ``segment`` all -1."""
    points_path = require_file(Path(points_path), "nuscenes", NUSCENES_LAYOUT)
    points = read_records(points_path, np.float32, 5, "nuScenes point file (float32 x5)")
    n = len(points)
    if label_path is None:
        segment = np.full(n, -1, dtype=np.int64)
    else:
        label_path = require_file(Path(label_path), "nuscenes", NUSCENES_LAYOUT)
        raw = read_records(label_path, np.uint8, 1, "nuScenes lidarseg label file (uint8)")[:, 0]
        check_count(len(raw), n, label_path, points_path, "nuScenes lidarseg label file")
        segment = _NUSCENES_MAP.apply(raw, label_path)
    return make_sample(points[:, :3], nuscenes_strength(points[:, 3:4]), segment, name or points_path.name, points_path)


NUSCENES_INTENSITY_SCALE = 255.0  # nuScenes stores intensity as 0..255


def nuscenes_strength(intensity: np.ndarray) -> np.ndarray:
    """The strength feature of nuScenes points: their intensity (0..255 as stored) / 255."""
    return intensity / np.float32(NUSCENES_INTENSITY_SCALE)


def read_scene_list(scenes: Sequence[str] | str | Path) -> list[str]:
    """Scene names from a sequence, or from a text file (one per line, '#' comments)."""
    if isinstance(scenes, (str, Path)):
        path = Path(scenes)
        if not path.is_file():
            raise FileNotFoundError(f"nuScenes scene list file {str(path)!r} does not exist; "
                                    f"write one scene name (e.g. scene-0001) per line")
        lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
        return [line for line in lines if line]
    return [str(s) for s in scenes]


def _table_keyframes(root: Path, version: str, split: str,
                     scenes: Sequence[str] | str | Path | None) -> tuple[list[KeyFrame], bool]:
    """The keyframes of ``split`` from the version's tables (module docstring: which scenes), or the
    sweeps of the training scenes for ``split="sweeps"``; with whether they are labelled."""
    index = table_index(root, version)
    frames, labelled = index.keyframes, index.labelled
    if split == SWEEPS:
        split, frames, labelled = "train", sweep_index(root, version), False
    list_name = _MINI_LISTS.get(split, split) if version == "v1.0-mini" else split
    list_file = root / "splits" / f"{list_name}.txt"
    if scenes is not None:
        wanted, source = read_scene_list(scenes), "the scenes asked for"
    elif list_file.is_file():
        wanted, source = read_scene_list(list_file), str(list_file)
    elif list_name in official_splits():
        wanted, source = list(official_splits()[list_name]), f"the official {list_name} list"
    elif split == "all":
        return list(index.keyframes), index.labelled
    else:
        raise ValueError(f"nuScenes split {split!r} is not an official split ("
                         f"{', '.join(official_splits())} or 'all') and {str(list_file)!r} does "
                         f"not exist: write the split's scene names there, one per line")
    unknown = [name for name in wanted if name not in index.scenes]
    if unknown:
        hint = (f"none of them is in this version ({_VERSION_HINT})" if len(unknown) == len(wanted)
                else "check the names, or re-extract the metadata archive if scenes are missing")
        raise ValueError(f"nuScenes scenes {unknown[:5]} ({len(unknown)} of {len(wanted)}, from "
                         f"{source}) are not in {str(root / version / 'scene.json')!r}: {hint}")
    chosen = set(wanted)
    return [k for k in frames if k.scene in chosen], labelled


def _info_keyframes(root: Path, split: str,
                    scenes: Sequence[str] | str | Path | None) -> list[KeyFrame]:
    """The keyframes Pointcept's info file of ``split`` lists."""
    if scenes is not None or split not in INFO_SPLITS:
        raise ValueError(f"nuScenes under {str(root)!r} is in Pointcept's info layout, which holds "
                         f"the splits {', '.join(INFO_SPLITS)} only (asked: split={split!r}"
                         f"{', scenes=...' if scenes is not None else ''}); choosing scenes and the "
                         f"sweeps need the version's tables")
    found = sorted((root / "info").glob(f"nuscenes_infos_*sweeps_{split}.pkl"))
    if len(found) != 1:
        raise layout_error(f"nuScenes info folder {str(root / 'info')!r} holds "
                           f"{[p.name for p in found] or 'no'} info file(s) of split {split!r}; "
                           f"it needs exactly one nuscenes_infos_<K>sweeps_{split}.pkl",
                           NUSCENES_LAYOUT)
    return list(info_index(found[0]))


class NuScenesDataset(PointCloudDataset):
    """LIDAR_TOP keyframes of one split (module docstring: layouts and how the split is chosen).

    Sample names are the sample_data tokens; samples are sorted by point-file name (time order).
    """

    class_names = NUSCENES_CLASSES

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None,
                 seed: int = 0, version: str = DEFAULT_NUSCENES_VERSION,
                 scenes: Sequence[str] | str | Path | None = None) -> None:
        super().__init__(transform, seed)
        if version not in NUSCENES_VERSIONS:
            raise ValueError(f"nuScenes version {version!r} is not one of "
                             f"{', '.join(NUSCENES_VERSIONS)}")
        self.root = require_dir(Path(root), "nuscenes", NUSCENES_LAYOUT)
        self.split, self.version = split, version
        if (self.root / version).is_dir():
            keyframes, self.labelled = _table_keyframes(self.root, version, split, scenes)
            files_root = self.root
        elif (self.root / "info").is_dir():
            keyframes = _info_keyframes(self.root, split, scenes)
            self.labelled = any(k.label is not None for k in keyframes)
            files_root = self.root / "raw" if (self.root / "raw").is_dir() else self.root
        else:
            raise layout_error(f"nuScenes root {str(self.root)!r} holds neither the tables of "
                               f"version {version!r} ({version}/) nor Pointcept's info/ folder",
                               NUSCENES_LAYOUT)
        if not self.labelled:
            _LOG.info("nuscenes: split %s of %s is unlabelled (segment -1)", split, self.root)
        self.files_root = files_root
        self.tables = (self.root / version).is_dir()
        self.keyframes: tuple[KeyFrame, ...] = tuple(keyframes)  # paths joined in load()
        if not self.keyframes:
            raise layout_error(f"nuScenes split {split!r} under {str(self.root)!r} has no "
                               f"LIDAR_TOP {'sweeps' if split == SWEEPS else 'keyframes'}", NUSCENES_LAYOUT)

    def __len__(self) -> int:
        return len(self.keyframes)

    def scan_name(self, index: int) -> str:
        """The sample_data token of keyframe ``index``, known before it is read."""
        return self.keyframes[index].token

    def scan_origin(self, index: int) -> tuple[str, str]:
        """(scene name, sample_data token); Pointcept's layout names no scene: the token for both."""
        k = self.keyframes[index]
        return k.scene or k.token, k.token

    def load(self, index: int) -> dict:
        k = self.keyframes[index]
        label = None if k.label is None else self.files_root / k.label
        return read_nuscenes_scan(self.files_root / k.points, label, k.token)

    def cameras(self, index: int) -> list[Camera]:
        """The six cameras of LiDAR sweep ``index`` (module docstring), from the version's tables."""
        tables = self.root if self.tables else self.files_root
        if not (tables / self.version).is_dir():
            raise DatasetLayoutError(f"nuScenes under {str(self.root)!r} is in Pointcept's info layout and "
                                     f"{str(tables / self.version)!r}, whose tables the cameras are read from, "
                                     f"does not exist: no cameras (check --nuscenes-version)")
        cameras = nuscenes_cameras(tables, self.version, self.keyframes[index].token, self.split == SWEEPS)
        prefix = tables.relative_to(self.root)
        return [replace(c, image=(prefix / c.image).as_posix()) for c in cameras]
