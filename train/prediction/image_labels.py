"""Labels for a split's scans from a 2D model's predictions on their camera images (decision 60).

:func:`label_split` runs :func:`train.data.cameras.image_projection.project_scan` over every scan of a split
(:func:`train.prediction.inputs.open_split`'s data set, which must read cameras), reading each
camera's prediction with :func:`train.data.cameras.image_predictions.read_prediction`, and writes the files
of :mod:`train.data.lidar.image_label_files`. A scan whose image, prediction, feature or calibration file
cannot be used stops the run with that file's line, or with ``skip_bad_scans`` is named, counted and
gets no output file; a scan without cameras is written all -1 and counted, its features (with
``--features``) as NaN rows of the run's channel count C, like a point no camera sees, so the camera
teacher's L_topo trains on it (written once a feature map has told C).
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from train.data.base import PointCloudDataset
from train.data.cameras.camera import CalibrationError, Camera
from train.data.lidar.image_label_files import (folder_spec, write_folder_scan, write_folder_spec, write_scan_labels,
                                                write_summary)
from train.data.cameras.image_predictions import ClassMap, FilePrediction, ImagePredictionError, read_prediction
from train.data.cameras.image_projection import DepthTest, project_scan
from train.data.lidar.scan_files import SENSOR_FRAME
from train.data.validation import BadScanError


@dataclass(frozen=True)
class ImageLabelRun:
    """Where the predictions are and how they are carried onto the points."""

    data_root: Path
    predictions: Path
    features: Path | None
    out: Path
    class_map: ClassMap
    camera_rule: str
    min_depth: float
    depth_test: DepthTest | None
    probs: bool
    skip_bad_scans: bool
    folder_split: str | None


def label_split(source: PointCloudDataset, split: str, run: ImageLabelRun,
                provenance: dict[str, Any]) -> dict[str, Any]:
    """Label every scan of ``source``, the data set's split ``split`` (see the module docstring);
    returns the summary it writes as that split's entry of ``image_labels.json`` (``provenance``
    first). Raises the first bad scan's error unless ``run.skip_bad_scans``."""
    k = source.num_classes
    counts = {"scans": len(source), "labelled_scans": 0, "scans_without_cameras": 0, "skipped_scans": [],
              "points": 0, "seen_points": 0, "points_by_cameras": {}, "hidden_point_camera_pairs": 0,
              "unsolved_point_camera_pairs": 0,
              "labels_per_class": [0] * k}
    frame = getattr(getattr(source, "description", None), "frame", SENSOR_FRAME)  # a scan folder's own frame
    names = [source.scan_name(i) for i in range(len(source))]
    if run.folder_split is not None:  # refused before any file is written
        folder_spec(run.out, run.folder_split, names, tuple(source.class_names), frame)
    feature_width: list[int] = []  # the run's feature channel count C, once a feature map is read
    unseen: list[tuple[str, int]] = []  # (scan, points) without cameras whose feature rows wait for C
    written: list[str] = []

    def camera_prediction(camera: Camera) -> FilePrediction:
        pred = read_prediction(camera, run.data_root, run.predictions, run.features, run.class_map)
        if pred.feature_channels is not None:
            feature_width[:] = feature_width or [pred.feature_channels]
            if pred.feature_channels != feature_width[0]:
                raise ImagePredictionError(f"feature file {pred.feature_path} has {pred.feature_channels} "
                                           f"channels; the feature maps before it had {feature_width[0]}")
        return pred

    for i, name in enumerate(names):
        try:
            sample = source.load(i)
            cameras = source.cameras(i)
            xyz = sample["xyz"]
            result = project_scan(xyz, cameras, camera_prediction, k, run.camera_rule, run.min_depth,
                                  run.depth_test)
        except (BadScanError, CalibrationError) as err:
            if not run.skip_bad_scans:
                raise
            print(f"train.image_labels: skipped scan {name}: {err}", file=sys.stderr, flush=True)
            counts["skipped_scans"].append([name, str(err)])
            continue
        features = result.features
        if features is None and run.features is not None:  # no camera: no feature map of its own
            if feature_width:
                features = np.full((len(xyz), feature_width[0]), np.nan, np.float32)
            else:
                unseen.append((name, len(xyz)))
        write_scan_labels(run.out, name, result.labels, result.probabilities if run.probs else None, features)
        if run.folder_split is not None:
            write_folder_scan(run.out, name, xyz, sample["strength"])
            written.append(name)
        counts["labelled_scans"] += 1
        counts["scans_without_cameras"] += int(not cameras)
        counts["points"] += int(len(xyz))
        counts["seen_points"] += int((result.labels >= 0).sum())
        counts["hidden_point_camera_pairs"] += result.hidden
        counts["unsolved_point_camera_pairs"] += result.unsolved
        for seen, number in zip(*np.unique(result.seen_by, return_counts=True)):
            counts["points_by_cameras"][str(seen)] = counts["points_by_cameras"].get(str(seen), 0) + int(number)
        counts["labels_per_class"] = [a + int(b) for a, b in zip(
            counts["labels_per_class"], np.bincount(result.labels[result.labels >= 0], minlength=k))]
    for name, n in unseen if feature_width else ():  # its labels (all -1) again, with the features
        write_scan_labels(run.out, name, np.full(n, -1), None, np.full((n, feature_width[0]), np.nan, np.float32))
    if run.folder_split is not None:
        write_folder_spec(run.out, folder_spec(run.out, run.folder_split, written, tuple(source.class_names), frame))
    summary = {**provenance, "split": split, "classes": list(source.class_names), "class_map": run.class_map.plain(),
               "camera_rule": run.camera_rule, "min_depth": run.min_depth,
               "depth_test": asdict(run.depth_test) if run.depth_test is not None else None,
               "probs": run.probs, "features": str(run.features) if run.features is not None else None,
               "feature_channels": feature_width[0] if feature_width else None, "folder_split": run.folder_split,
               "counts": counts}
    write_summary(run.out, split, summary)
    return summary

