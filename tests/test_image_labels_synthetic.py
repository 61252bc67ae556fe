"""``train.image_labels`` end to end on the simulator's rendered cameras (decisions 58 and 60).

A perfect 2D model (the rendered class images, copied as its predictions) labels the LiDAR points of
synthetic scans through the ``ring`` rig; the labels are compared with the scans' own. Measured on
scenes 0-2 of seed 0 (2026-11-26): 93.5% of points seen, 96.5% of them labelled as the LiDAR label
says; without the depth test 98.6% seen and 94.8% right (2,541 wrong labels against 1,603). What is
left wrong is the cameras' parallax to the LiDAR, pixel footprints at 160 x 96 and surfaces narrower
than a pixel; the bounds below leave a margin under those figures.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from train import image_labels
from train.data import WaymoDataset
from train.data.synthetic import synthesize_dataset


@pytest.fixture(scope="module")
def labelled_by_cameras(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-scene ring-rig set with perfect predictions; the outputs with and without the depth test."""
    base = tmp_path_factory.mktemp("camera_labels")
    root = synthesize_dataset(base / "syn", scenes=3, val_fraction=0.0, test_fraction=0.0, cameras="ring")
    for rendered in root.rglob("*_class.png"):
        rel = rendered.relative_to(root)
        target = base / "pred" / rel.parent / rendered.name.replace("_class.png", ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(rendered, target)
    (base / "map.yaml").write_text("\n".join([f"{i}: {i}" for i in range(22)] + ["255: ignore"]))
    for out, extra in (("with", []), ("without", ["--no-depth-test"])):
        assert image_labels.main(["--dataset", "synthetic", "--data-root", str(root), "--split", "training",
                                  "--predictions", str(base / "pred"), "--class-map", str(base / "map.yaml"),
                                  "--out", str(base / out), *extra]) == 0
    return root, base


def _agreement(root: Path, out: Path) -> tuple[float, float, int]:
    """(fraction of points seen, fraction of seen points whose label is the LiDAR's, wrong labels)."""
    data = WaymoDataset(root, "training")
    total = seen = right = 0
    for i in range(len(data)):
        truth = data.load(i)["segment"]
        labels = np.load(out / f"{data.scan_name(i)}.npy")
        assert labels.shape == truth.shape
        mask = labels >= 0
        total, seen, right = total + truth.size, seen + int(mask.sum()), right + int((labels[mask] == truth[mask]).sum())
    return seen / total, right / seen, seen - right


def test_a_perfect_2d_model_labels_most_lidar_points_as_their_own_labels(labelled_by_cameras) -> None:
    root, base = labelled_by_cameras
    seen, right, _ = _agreement(root, base / "with")
    assert seen > 0.88
    assert right > 0.94


def test_the_depth_test_removes_more_wrong_labels_than_right_ones(labelled_by_cameras) -> None:
    root, base = labelled_by_cameras
    seen_with, right_with, wrong_with = _agreement(root, base / "with")
    seen_without, right_without, wrong_without = _agreement(root, base / "without")
    assert seen_without > seen_with
    assert wrong_with < 0.8 * wrong_without
    assert right_with > right_without
