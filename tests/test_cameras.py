"""train.data.cameras: the pinhole projection against the homogeneous camera matrix, the pixel-centre
convention at the image's border, the depth rule, refused calibrations and cameras.json (decision 58)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from train.data.cameras import (
    CalibrationError,
    Camera,
    MissingImageError,
    checked_camera,
    image_size,
    read_camera_list,
    write_camera_list,
)
from train.data.validation import CorruptFileError

SOURCE = "calib/cam.json"


def rigid(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3], t[:3, 3] = rotation, translation
    return t


def plain_camera(width: int = 8, height: int = 6, f: float = 10.0, cx: float = 2.0, cy: float = 3.0) -> Camera:
    """A camera at the scan's origin looking along +z (scan frame = camera frame)."""
    return checked_camera("c", "img.png", width, height, [[f, 0, cx], [0, f, cy], [0, 0, 1]], np.eye(4), SOURCE)


def test_project_matches_the_homogeneous_camera_matrix() -> None:
    rng = np.random.default_rng(0)
    k = np.array([[700.0, 1.5, 610.0], [0.0, 690.0, 185.0], [0.0, 0.0, 1.0]])
    rotation = Rotation.random(random_state=1).as_matrix()
    extrinsic = rigid(rotation, rng.normal(size=3))
    camera = checked_camera("c", "img.png", 1224, 370, k, extrinsic, SOURCE)
    xyz = rng.normal(scale=20.0, size=(500, 3))
    p = k @ extrinsic[:3, :]  # P = K [R | t], 3 x 4
    uvw = np.einsum("ij,nj->ni", p, np.hstack([xyz, np.ones((500, 1))]))
    uv, depth = camera.project(xyz)
    front = uvw[:, 2] > 1e-3
    np.testing.assert_allclose(depth, uvw[:, 2], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(uv[front], uvw[front, :2] / uvw[front, 2:], rtol=1e-10, atol=1e-7)
    rows, cols, seen_depth = camera.pixels(xyz)
    expect_cols = np.floor(uvw[:, 0] / uvw[:, 2] + 0.5)
    expect_rows = np.floor(uvw[:, 1] / uvw[:, 2] + 0.5)
    expect_seen = ((uvw[:, 2] > 1.0) & (expect_cols >= 0) & (expect_cols < 1224) & (expect_rows >= 0)
                   & (expect_rows < 370))
    assert 0 < expect_seen.sum() < 500
    np.testing.assert_array_equal(rows >= 0, expect_seen)
    np.testing.assert_array_equal(cols[expect_seen], expect_cols[expect_seen])
    np.testing.assert_array_equal(rows[expect_seen], expect_rows[expect_seen])
    np.testing.assert_allclose(seen_depth[expect_seen], uvw[expect_seen, 2])
    assert np.isnan(seen_depth[~expect_seen]).all() and (cols[~expect_seen] == -1).all()


def points_at(camera: Camera, uv: list[tuple[float, float]], depth: float = 10.0) -> np.ndarray:
    """Points of the plain camera's frame that project exactly to ``uv`` at ``depth``."""
    k = camera.intrinsics
    uv_arr = np.asarray(uv, dtype=np.float64)
    x = (uv_arr[:, 0] - k[0, 2]) * depth / k[0, 0]
    y = (uv_arr[:, 1] - k[1, 2]) * depth / k[1, 1]
    return np.stack([x, y, np.full(len(uv), depth)], axis=1)


def test_pixel_centres_at_integers_decide_the_border() -> None:
    """Pixel (row r, column c) covers [c - 0.5, c + 0.5) x [r - 0.5, r + 0.5): an 8 x 6 image spans
    u in [-0.5, 7.5) and v in [-0.5, 5.5)."""
    camera = plain_camera()
    eps = 1e-6
    uv = [(-0.5, 0.0), (-0.5 - eps, 0.0), (7.5 - eps, 5.5 - eps), (7.5, 2.0), (3.0, 5.5), (0.0, -0.5),
          (0.49, 0.51), (3.0, 2.0)]
    rows, cols, _ = camera.pixels(points_at(camera, uv))
    assert cols.tolist() == [0, -1, 7, -1, -1, 0, 0, 3]
    assert rows.tolist() == [0, -1, 5, -1, -1, 0, 1, 2]
    np.testing.assert_allclose(camera.project(points_at(camera, uv))[0], uv, atol=1e-9)


def test_depth_must_exceed_min_depth() -> None:
    camera = plain_camera()
    centre = [(3.0, 2.0)]
    for depth, min_depth, seen in [(1.0, 1.0, False), (1.0 + 1e-6, 1.0, True), (0.75, 1.0, False),
                                   (0.75, 0.5, True), (50.0, 1.0, True)]:
        rows, _, d = camera.pixels(points_at(camera, centre, depth), min_depth=min_depth)
        assert (rows[0] >= 0) == seen, (depth, min_depth)
        assert (d[0] == pytest.approx(depth)) if seen else np.isnan(d[0])


def test_points_behind_or_in_the_camera_plane_are_not_seen_and_warn_nothing() -> None:
    camera = plain_camera()
    # Behind the camera: (x, y, -z) divides to the same pixel as (-x, -y, z), which is inside.
    behind = -points_at(camera, [(2.0, 3.0), (4.0, 1.0)], depth=5.0)
    plane = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows, cols, depth = camera.pixels(np.vstack([behind, plane]), min_depth=0.0)
    assert rows.tolist() == [-1, -1, -1, -1] and cols.tolist() == [-1, -1, -1, -1]
    assert np.isnan(depth).all()
    rows, _, _ = camera.pixels(-behind, min_depth=0.0)
    assert rows.tolist() == [3, 1]


@pytest.mark.parametrize("min_depth", [-1e-9, -10.0, float("nan")])
def test_a_negative_min_depth_is_refused(min_depth: float) -> None:
    """Taken, it would let the points behind the camera in (they divide onto the image's pixels)."""
    with pytest.raises(ValueError, match="camera 'c': min_depth must be >= 0"):
        plain_camera().pixels(np.zeros((1, 3)), min_depth=min_depth)


def assert_refused(error: type[Exception], *args: object) -> str:
    with pytest.raises(error) as info:
        checked_camera(*args)  # type: ignore[arg-type]
    message = str(info.value)
    assert SOURCE in message and "\n" not in message, message
    return message


GOOD_K = [[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("matrix", [1.01 * np.eye(3), np.diag([1.0, 1.0, -1.0]),
                                    Rotation.from_euler("z", 30, degrees=True).as_matrix() @ np.diag([1, 1.0002, 1])])
def test_a_scaled_or_reflected_rotation_is_refused(matrix: np.ndarray) -> None:
    message = assert_refused(CalibrationError, "c", "i.png", 640, 480, GOOD_K, rigid(matrix, np.zeros(3)), SOURCE)
    assert "not a rotation" in message


@pytest.mark.parametrize("extrinsic", [np.full((4, 4), np.nan), np.eye(4) * [1, 1, 1, 2], np.eye(3),
                                       rigid(np.eye(3), [np.inf, 0, 0])])
def test_a_non_finite_or_non_rigid_extrinsic_is_refused(extrinsic: np.ndarray) -> None:
    assert_refused(CalibrationError, "c", "i.png", 640, 480, GOOD_K, extrinsic, SOURCE)


@pytest.mark.parametrize("k", [[[0.0, 0, 320], [0, 500, 240], [0, 0, 1]], [[500, 0, 320], [0, -500, 240], [0, 0, 1]],
                               [[500, 0, 320], [1, 500, 240], [0, 0, 1]], [[500, 0, 320], [0, 500, 240], [0, 0, 2]],
                               [[500, 0, 320], [0, 500, 240]], [[np.nan, 0, 320], [0, 500, 240], [0, 0, 1]]])
def test_an_intrinsic_matrix_that_is_no_pinhole_matrix_is_refused(k: list) -> None:
    assert_refused(CalibrationError, "c", "i.png", 640, 480, k, np.eye(4), SOURCE)


@pytest.mark.parametrize("size", [(0, 480), (640, -1), (640.5, 480), (True, 480)])
def test_an_image_size_that_is_not_two_positive_integers_is_refused(size: tuple) -> None:
    assert_refused(CalibrationError, "c", "i.png", size[0], size[1], GOOD_K, np.eye(4), SOURCE)


def test_a_three_by_four_extrinsic_and_a_rotation_within_tolerance_are_taken() -> None:
    rotation = Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix()
    camera = checked_camera("c", "i.png", 640, 480, GOOD_K, rigid(rotation * (1 + 2e-5), [1, 2, 3])[:3], SOURCE)
    assert camera.scan_to_camera.shape == (4, 4) and not camera.scan_to_camera.flags.writeable
    assert camera.width == 640 and isinstance(camera.width, int)


def test_camera_list_round_trip(tmp_path: Path) -> None:
    rotation = Rotation.random(random_state=3).as_matrix()
    cameras = [checked_camera(name, f"train/seg/1/cameras/{name}.png", 64, 48, GOOD_K, rigid(rotation, [0.1, -2, 3]),
                              SOURCE) for name in ("FRONT", "SIDE_LEFT")]
    path = write_camera_list(tmp_path, cameras)
    back = read_camera_list(tmp_path)
    assert path == tmp_path / "cameras.json"
    assert [(c.name, c.image, c.width, c.height) for c in back] == [(c.name, c.image, 64, 48) for c in cameras]
    for a, b in zip(cameras, back):
        np.testing.assert_array_equal(a.intrinsics, b.intrinsics)
        np.testing.assert_array_equal(a.scan_to_camera, b.scan_to_camera)
    assert read_camera_list(tmp_path / "no_such_frame") == []


@pytest.mark.parametrize("text", ["{not json", json.dumps({"cams": []}), json.dumps({"cameras": [{"name": "x"}]}),
                                  json.dumps({"cameras": 3})])
def test_a_corrupt_camera_list_is_refused_naming_the_file(tmp_path: Path, text: str) -> None:
    (tmp_path / "cameras.json").write_text(text)
    with pytest.raises(CorruptFileError, match="cameras.json: not a camera list") as info:
        read_camera_list(tmp_path)
    assert "\n" not in str(info.value)


def test_a_camera_list_with_a_bad_calibration_names_the_file(tmp_path: Path) -> None:
    entry = {"name": "F", "image": "a.png", "width": 4, "height": 4, "intrinsics": GOOD_K,
             "scan_to_camera": (2 * np.eye(4)).tolist()}
    (tmp_path / "cameras.json").write_text(json.dumps({"cameras": [entry]}))
    with pytest.raises(CalibrationError, match=f"{tmp_path / 'cameras.json'}: camera 'F' extrinsics"):
        read_camera_list(tmp_path)


def test_image_size_reads_the_header_and_refuses_missing_or_foreign_files(tmp_path: Path) -> None:
    Image.new("RGB", (37, 11)).save(tmp_path / "a.png")
    Image.new("L", (5, 9)).save(tmp_path / "b.jpg")
    assert image_size(tmp_path / "a.png") == (37, 11) and image_size(tmp_path / "b.jpg") == (5, 9)
    with pytest.raises(MissingImageError, match="c.png: camera image is missing"):
        image_size(tmp_path / "c.png")
    (tmp_path / "d.png").write_bytes(b"not an image")
    with pytest.raises(CorruptFileError, match="d.png: not a readable image"):
        image_size(tmp_path / "d.png")
