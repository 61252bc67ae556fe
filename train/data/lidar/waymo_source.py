"""What a Waymo ``--data-root`` holds (spec sections C and F): the per-frame layout the loader reads,
a v2 parquet download (converted by :mod:`train.data.lidar.waymo_convert`), or the v1 TFRecord release.

The loader (:mod:`train.data.lidar.waymo`) and the converter (:mod:`train.data.lidar.waymo_convert`) both import
from here, so neither imports the other.
"""
from __future__ import annotations

from pathlib import Path

from ..validation import DatasetLayoutError

LABELLED_SPLITS = ("training", "validation")  # testing has no segmentation labels
WAYMO_LAYOUT = """  <root>/
    training/<segment>/<timestamp>/coord.npy      (n,3) float32
                                  /strength.npy   (n,1) float32, tanh(intensity)
                                  /segment.npy    (n,) int, raw label - 1 (-1 undefined)
                                  /cameras.json   optional: the frame's calibrated images
                                  /cameras/NAME.* optional: their files (train/data/cameras/camera.py)
    validation/<segment>/<timestamp>/...          same files
    testing/<segment>/<timestamp>/...             no segment.npy"""


class WaymoV1Error(DatasetLayoutError):
    """The Waymo root holds the v1 TFRecord release, which is read only after conversion."""


def detect_waymo_source(root: Path) -> str:
    """``"v2"`` (parquet component folders), ``"v1"`` (TFRecords) or ``"other"`` for ``root``."""
    from .waymo_v2 import LIDAR  # pyarrow is imported only when a root is examined

    root = Path(root)
    for split in LABELLED_SPLITS:
        if any((root / split / LIDAR).glob("*.parquet")):
            return "v2"
    for folder in (root, *(root / s for s in LABELLED_SPLITS)):
        if folder.is_dir() and any(folder.glob("*.tfrecord")):
            return "v1"
    return "other"


def v1_error(root: Path) -> WaymoV1Error:
    """The error for a v1 root: the two ways forward (download v2, or convert with the official tools)."""
    return WaymoV1Error(
        f"waymo root {str(root)!r} holds the v1 release (TFRecord files), which this project does not "
        f"decode (it needs TensorFlow). Either download the v2 release's perception components "
        f"lidar, lidar_calibration, lidar_pose, vehicle_pose and lidar_segmentation for the training "
        f"and validation splits and point --data-root at the folder holding training/ and "
        f"validation/ (converted automatically), or convert the TFRecords with the official Waymo "
        f"tools (TensorFlow + waymo-open-dataset) into this per-frame layout:\n{WAYMO_LAYOUT}"
    )


def refuse_raw_download(root: Path) -> None:
    """Say what to do when ``root`` is an official download (v1 TFRecords, v2 parquet), not the layout."""
    kind = detect_waymo_source(root)
    if kind == "v1":
        raise v1_error(root)
    if kind == "v2":
        raise DatasetLayoutError(
            f"waymo root {str(root)!r} is a v2 parquet download, not the per-frame layout: "
            f"`python -m train.run --dataset waymo` converts it automatically; to read it here, convert "
            f"it once with python -m train.data.convert waymo --src {root} --dst DST and pass DST"
        )
