"""The camera chains of the real data sets (decision 59): SemanticKITTI's ``P2``/``Tr`` on a real KITTI
frame, nuScenes' LiDAR -> ego -> global -> ego -> camera chain on tables with known poses and on a
real calibration, each against an independent computation."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from train.data.cameras import CalibrationError, MissingImageError
from train.data.semantic_kitti import SemanticKITTIDataset, read_kitti_calib

REAL = Path(__file__).parent / "fixtures" / "real"
KITTI_REAL = REAL / "semantic_kitti_camera"


def homogeneous(xyz: np.ndarray) -> np.ndarray:
    return np.hstack([np.asarray(xyz, dtype=np.float64), np.ones((len(xyz), 1))])


def test_semantic_kitti_camera_of_a_real_frame() -> None:
    """The fixture's 800 points lie inside the 1224 x 370 image by mmdetection3d's rule (0 <= u < W,
    0 <= v < H) at depths over 1 m. Camera.pixels takes pixel centres at integers (a pixel spans
    [c - 0.5, c + 0.5)), so the two points at u = 1223.86 fall just right of the last column."""
    dataset = SemanticKITTIDataset(KITTI_REAL, [0], labelled=False)
    (camera,) = dataset.cameras(0)
    assert (camera.name, camera.image, camera.width, camera.height) == (
        "image_2", "sequences/00/image_2/000000.png", 1224, 370)
    xyz = dataset.load(0)["coord"]
    calib = read_kitti_calib(KITTI_REAL / "sequences" / "00" / "calib.txt")
    uvw = homogeneous(xyz) @ (calib["P2"] @ np.vstack([calib["Tr"], [0, 0, 0, 1]])).T  # P2 @ Tr
    uv, depth = camera.project(xyz)
    np.testing.assert_allclose(uv, uvw[:, :2] / uvw[:, 2:], rtol=0, atol=1e-6)
    np.testing.assert_allclose(depth, uvw[:, 2], rtol=1e-12)
    assert len(xyz) == 800 and depth.min() > 1.0
    assert (uv >= 0).all() and (uv[:, 0] < 1224).all() and (uv[:, 1] < 370).all()
    rows, cols, _ = camera.pixels(xyz)
    outside = np.flatnonzero(rows < 0)
    assert len(outside) == 2 and (uv[outside, 0] > 1223.5).all()
    np.testing.assert_array_equal(cols[rows >= 0], np.floor(uv[rows >= 0, 0] + 0.5))


def kitti_copy(tmp_path: Path) -> Path:
    root = tmp_path / "kitti"
    shutil.copytree(KITTI_REAL, root)
    return root


@pytest.mark.parametrize("edit, problem", [
    (lambda t: t.replace("P2:", "Q2:"), "has no 'P2' line"),
    (lambda t: t.replace("Tr:", "#r:"), "has no 'Tr' line"),
    (lambda t: t.replace("P2: 7.070493000000e+02 ", "P2: "), "'P2' has 11 numbers"),
    (lambda t: t.replace("Tr: -1.596", "Tr: x1.596"), "'Tr' holds a value that is not a number"),
    (lambda t: t + "garbage\n", "line 6 is not 'KEY: numbers'"),
])
def test_a_bad_kitti_calibration_is_refused_naming_the_file(tmp_path: Path, edit, problem: str) -> None:
    root = kitti_copy(tmp_path)
    calib = root / "sequences" / "00" / "calib.txt"
    calib.write_text(edit(calib.read_text()))
    with pytest.raises(CalibrationError, match=problem) as info:
        SemanticKITTIDataset(root, [0], labelled=False).cameras(0)
    assert str(info.value).startswith(str(calib)) and "\n" not in str(info.value)


def test_a_kitti_frame_without_its_image_or_calibration_is_refused(tmp_path: Path) -> None:
    root = kitti_copy(tmp_path)
    sequence = root / "sequences" / "00"
    (sequence / "image_2" / "000000.png").unlink()
    with pytest.raises(MissingImageError, match="image_2/000000.png: camera image is missing"):
        SemanticKITTIDataset(root, [0], labelled=False).cameras(0)
    (sequence / "calib.txt").unlink()
    with pytest.raises(CalibrationError, match="calib.txt: SemanticKITTI calibration is missing"):
        SemanticKITTIDataset(root, [0], labelled=False).cameras(0)
