"""nuScenes lidarseg loader from the raw layout (spec section C, "nuScenes lidarseg").

Layout: ``root/samples/LIDAR_TOP/*.pcd.bin`` (float32 x5: x, y, z, intensity, ring index),
``root/lidarseg/<version>/<lidar_token>_lidarseg.bin`` (uint8, one raw label per point) and the
version's tables ``root/<version>/sample_data.json`` and ``lidarseg.json`` (+ ``sample.json`` and
``scene.json`` when scenes are selected). Keyframes of LIDAR_TOP only. Strength = intensity / 255.
Labels: 32 raw ids -> 16 classes (labels.NUSCENES_LEARNING_MAP).

Split selection. The official train/val scene lists ship with the nuScenes devkit, which is not
available offline here, so a split is a list of scene names chosen by the user:

- ``scenes=`` a list of scene names ("scene-0001", ...) or the path of a text file with one name per
  line ("#" starts a comment) wins over everything else;
- otherwise ``split`` ("train", "val", "test", "mini_train", ...) reads ``root/splits/<split>.txt``
  when it exists, for instance the devkit's lists saved there;
- otherwise ``split="all"`` takes every keyframe of the version (e.g. all of v1.0-mini), and so does
  ``split="test"`` (v1.0-test holds exactly the test split); any other split without its list file
  is an error that says so.

The version defaults to ``v1.0-test`` for ``split="test"`` and ``v1.0-trainval`` otherwise. A
version without ``lidarseg.json`` (v1.0-test) yields unlabelled samples (``segment`` all -1).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import PointCloudDataset, Transform
from .labels import NUSCENES_CLASSES, NUSCENES_LEARNING_MAP, LearningMap
from .validation import (
    CorruptFileError,
    check_count,
    layout_error,
    make_sample,
    read_records,
    require_dir,
    require_file,
)

NUSCENES_LAYOUT = """  <root>/
    samples/LIDAR_TOP/<name>.pcd.bin                float32 x5 (x, y, z, intensity, ring)
    lidarseg/<version>/<lidar_token>_lidarseg.bin   uint8, one raw label per point
    <version>/sample_data.json, lidarseg.json       (lidarseg.json absent for v1.0-test)
    <version>/sample.json, scene.json               (needed to select scenes)
    splits/<split>.txt                              scene names of a split, one per line"""

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
    strength = points[:, 3:4] / np.float32(255.0)
    return make_sample(points[:, :3], strength, segment, name or points_path.name, points_path)


def _read_table(path: Path, keys: Sequence[str]) -> list[dict]:
    """A nuScenes JSON table (list of records), checking every record has ``keys``."""
    path = require_file(path, "nuscenes", NUSCENES_LAYOUT)
    try:
        rows = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"nuScenes table {str(path)!r} is not valid JSON ({err}); "
                               f"re-extract the metadata archive") from err
    if not isinstance(rows, list):
        raise CorruptFileError(f"nuScenes table {str(path)!r} must be a JSON list of records")
    for i, row in enumerate(rows):
        lacking = [k for k in keys if not isinstance(row, dict) or k not in row]
        if lacking:
            raise CorruptFileError(f"nuScenes table {str(path)!r}: record {i} lacks {lacking}; "
                                   f"re-extract the metadata archive of this version")
    return rows


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


class NuScenesDataset(PointCloudDataset):
    """LIDAR_TOP keyframes of one split (module docstring: how the split is chosen).

    Sample names are the sample_data tokens; samples are sorted by point-file name (time order).
    """

    class_names = NUSCENES_CLASSES

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None,
                 seed: int = 0, version: str | None = None,
                 scenes: Sequence[str] | str | Path | None = None) -> None:
        super().__init__(transform, seed)
        self.root = require_dir(Path(root), "nuscenes", NUSCENES_LAYOUT)
        version = version or ("v1.0-test" if split == "test" else "v1.0-trainval")
        list_file = self.root / "splits" / f"{split}.txt"
        if scenes is None and list_file.is_file():
            scenes = list_file
        elif scenes is None and split not in ("all", "test"):
            raise layout_error(
                f"nuScenes split {split!r} needs the scene list {str(list_file)!r} (the official "
                f"lists ship with the nuscenes-devkit, unavailable offline: save the split's scene "
                f"names there, one per line, or pass split='all' for every keyframe of {version})",
                NUSCENES_LAYOUT)
        self.split, self.version = split, version
        table_dir = require_dir(self.root / version, "nuscenes", NUSCENES_LAYOUT,
                                f"metadata folder of version {version!r}")
        sample_data = _read_table(table_dir / "sample_data.json",
                                  ("token", "sample_token", "filename", "is_key_frame"))
        keyframes = [r for r in sample_data
                     if r["is_key_frame"] and str(r["filename"]).startswith("samples/LIDAR_TOP/")]
        if scenes is not None:
            wanted = read_scene_list(scenes)
            scene_rows = _read_table(table_dir / "scene.json", ("token", "name"))
            by_name = {r["name"]: r["token"] for r in scene_rows}
            unknown = [s for s in wanted if s not in by_name]
            if unknown:
                raise ValueError(f"nuScenes scenes {unknown[:5]} are not in "
                                 f"{str(table_dir / 'scene.json')!r}; check the names and the "
                                 f"version ({version})")
            tokens = {by_name[s] for s in wanted}
            sample_scene = {r["token"]: r["scene_token"]
                            for r in _read_table(table_dir / "sample.json", ("token", "scene_token"))}
            keyframes = [r for r in keyframes if sample_scene.get(r["sample_token"]) in tokens]
        lidarseg_path = table_dir / "lidarseg.json"
        self.labelled = lidarseg_path.is_file()
        labels: dict[str, str] = {}
        if self.labelled:
            labels = {r["sample_data_token"]: r["filename"]
                      for r in _read_table(lidarseg_path, ("sample_data_token", "filename"))}
        else:
            _LOG.info("nuscenes: %s has no lidarseg.json; samples are unlabelled (segment -1)",
                      table_dir)
        self.samples: list[tuple[Path, Path | None, str]] = []
        for r in sorted(keyframes, key=lambda r: r["filename"]):
            label = None
            if self.labelled:
                if r["token"] not in labels:
                    raise layout_error(f"nuScenes keyframe {r['token']} ({r['filename']}) has no "
                                       f"entry in {str(lidarseg_path)!r}", NUSCENES_LAYOUT)
                label = self.root / labels[r["token"]]
            self.samples.append((self.root / r["filename"], label, r["token"]))
        if not self.samples:
            raise layout_error(f"nuScenes version {version!r} under {str(self.root)!r} has no "
                               f"LIDAR_TOP keyframes for the selected scenes", NUSCENES_LAYOUT)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> dict:
        points, label, name = self.samples[index]
        return read_nuscenes_scan(points, label, name)
