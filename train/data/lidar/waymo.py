"""Waymo Open Dataset loader, preprocessed per-frame layout (spec section C, "Waymo").

Layout: ``root/{training,validation,testing}/<segment>/<timestamp>/`` with ``coord.npy`` (n,3
float32, vehicle frame), ``strength.npy`` (n,1, tanh(intensity), returned as stored),
``segment.npy`` (int, raw label - 1 so "undefined" is -1; absent in testing), ``pose.npy`` and
``mask.npy``. Segmentation needs only the first three: ``pose.npy`` and ``mask.npy`` are not read.
A frame with images also holds ``cameras.json`` (:mod:`train.data.cameras.camera`, decision 58), which
:meth:`WaymoDataset.cameras` reads.
22 classes (labels.WAYMO_CLASSES). Values of segment.npy outside [-1, 21] are unknown ids: they
become ignore with a warning. The synthetic simulator writes this same layout, and
``train.data.lidar.waymo_convert`` writes it from the official v2 parquet release (spec F); what else a root
can hold is told apart in :mod:`train.data.lidar.waymo_source`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..base import PointCloudDataset, Transform
from ..cameras.camera import Camera, read_camera_list
from ..labels import WAYMO_CLASSES, WAYMO_LEARNING_MAP, LearningMap
from ..validation import (
    CorruptFileError,
    check_count,
    load_npy,
    layout_error,
    make_sample,
    require_dir,
    require_file,
)
from .waymo_source import WAYMO_LAYOUT, refuse_raw_download

WAYMO_SPLITS = ("training", "validation", "testing", "unlabelled")
UNLABELLED_SPLITS = ("testing", "unlabelled")  # read without segment.npy unless labelled=True
_WAYMO_MAP = LearningMap("waymo", WAYMO_LEARNING_MAP, len(WAYMO_CLASSES))


def read_waymo_frame(frame_dir: Path, labelled: bool = True, name: str | None = None) -> dict:
    """Read one preprocessed frame folder into the sample dict (segment all -1 if unlabelled)."""
    frame_dir = Path(frame_dir)
    coord_path = require_file(frame_dir / "coord.npy", "waymo", WAYMO_LAYOUT)
    strength_path = require_file(frame_dir / "strength.npy", "waymo", WAYMO_LAYOUT)
    coord = load_npy(coord_path, "waymo coordinate file")
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise CorruptFileError(
            f"waymo coordinate file {str(coord_path)!r} has shape {coord.shape}, expected (n, 3); "
            f"regenerate the frame"
        )
    n = coord.shape[0]
    strength = load_npy(strength_path, "waymo strength file")
    check_count(strength.shape[0] if strength.ndim else -1, n, strength_path, coord_path,
                "waymo strength file")
    if labelled:
        seg_path = require_file(frame_dir / "segment.npy", "waymo", WAYMO_LAYOUT)
        raw = load_npy(seg_path, "waymo label file").reshape(-1)
        check_count(raw.shape[0], n, seg_path, coord_path, "waymo label file")
        segment = _WAYMO_MAP.apply(raw, seg_path)
    else:
        segment = np.full(n, -1, dtype=np.int64)
    return make_sample(coord, strength, segment, name or frame_dir.name, coord_path)


class WaymoDataset(PointCloudDataset):
    """Frames of one split of the preprocessed Waymo layout, sorted by (segment, timestamp).

    ``name`` of a sample is ``"<split>/<segment>/<timestamp>"``. Waymo's testing split has no
    labels, nor has ``unlabelled`` (the synthetic set's unlabelled scenes, or the frames of Waymo's
    training segments that carry no segmentation labels, :mod:`train.data.lidar.waymo_convert`): their samples
    carry ``segment`` all -1. ``labelled`` (default: every split but those two) says whether
    ``segment.npy`` is read; the synthetic set's held-out testing split is labelled.
    """

    class_names = WAYMO_CLASSES

    def __init__(
        self, root: str | Path, split: str = "training", transform: Transform | None = None,
        seed: int = 0, labelled: bool | None = None,
    ) -> None:
        super().__init__(transform, seed)
        if split not in WAYMO_SPLITS:
            raise ValueError(f"waymo split {split!r} is not one of {WAYMO_SPLITS}")
        self.root = require_dir(Path(root), "waymo", WAYMO_LAYOUT)
        split_dir = self.root / split
        self.split = split
        self.labelled = split not in UNLABELLED_SPLITS if labelled is None else labelled
        self.frames = sorted(p for p in split_dir.glob("*/*") if p.is_dir())
        if not self.frames:
            refuse_raw_download(self.root)
            require_dir(split_dir, "waymo", WAYMO_LAYOUT, "split folder")
            raise layout_error(
                f"waymo split folder {str(split_dir)!r} holds no <segment>/<timestamp>/ frame "
                f"folders", WAYMO_LAYOUT,
            )

    def __len__(self) -> int:
        return len(self.frames)

    def scan_name(self, index: int) -> str:
        """``"<split>/<segment>/<timestamp>"`` of frame ``index``, known before it is read."""
        frame = self.frames[index]
        return f"{self.split}/{frame.parent.name}/{frame.name}"

    def scan_origin(self, index: int) -> tuple[str, str]:
        """(``<segment>``, ``<segment>/<timestamp>``): the same frame in two split folders matches."""
        frame = self.frames[index]
        return frame.parent.name, f"{frame.parent.name}/{frame.name}"

    def unused_labels(self) -> str | None:
        if self.labelled:
            return None
        found = sum((frame / "segment.npy").is_file() for frame in self.frames)
        return f"{found} of its {len(self.frames)} frames hold a segment.npy" if found else None

    def cameras(self, index: int) -> list[Camera]:
        """The cameras of frame ``index`` from its ``cameras.json`` (none without one): the synthetic
        set's rendered rig, or Waymo v2's cameras as :mod:`train.data.lidar.waymo_convert` writes them."""
        return read_camera_list(self.frames[index])

    def load(self, index: int) -> dict:
        return read_waymo_frame(self.frames[index], self.labelled, self.scan_name(index))
