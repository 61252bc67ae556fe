"""train.data.cameras.camera: the pinhole projection against the homogeneous camera matrix, the pixel-centre
convention at the image's border, the depth rule, refused calibrations and cameras.json (decision 58);
the lens distortion against OpenCV's formulas inverted numerically, its fold radius (decision 63)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.optimize import brentq, fsolve
from scipy.spatial.transform import Rotation

from train.data.cameras.camera import (
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


def test_camera_list_round_trip_with_and_without_distortion(tmp_path: Path) -> None:
    rotation = Rotation.random(random_state=3).as_matrix()
    lenses = {"FRONT": [0.031, -0.29, 7e-4, -6e-4, 0.012], "SIDE_LEFT": None}
    cameras = [checked_camera(name, f"train/seg/1/cameras/{name}.png", 64, 48, GOOD_K, rigid(rotation, [0.1, -2, 3]),
                              SOURCE, lens) for name, lens in lenses.items()]
    path = write_camera_list(tmp_path, cameras)
    back = read_camera_list(tmp_path)
    assert path == tmp_path / "cameras.json"
    assert [(c.name, c.image, c.width, c.height) for c in back] == [(c.name, c.image, 64, 48) for c in cameras]
    for a, b in zip(cameras, back):
        np.testing.assert_array_equal(a.intrinsics, b.intrinsics)
        np.testing.assert_array_equal(a.scan_to_camera, b.scan_to_camera)
    assert back[0].distortion.tolist() == lenses["FRONT"] and back[1].distortion is None
    # an undistorted camera is written as before decision 63: no distortion key
    assert [sorted(e) for e in json.loads(path.read_text())["cameras"]] == [
        ["distortion", "height", "image", "intrinsics", "name", "scan_to_camera", "width"],
        ["height", "image", "intrinsics", "name", "scan_to_camera", "width"]]
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


def test_a_camera_list_with_bad_distortion_names_the_file(tmp_path: Path) -> None:
    entry = {"name": "F", "image": "a.png", "width": 4, "height": 4, "intrinsics": GOOD_K,
             "scan_to_camera": np.eye(4).tolist(), "distortion": [0.1, 0.2]}
    (tmp_path / "cameras.json").write_text(json.dumps({"cameras": [entry]}))
    with pytest.raises(CalibrationError, match=f"{tmp_path / 'cameras.json'}: camera 'F' distortion must be 5 finite"):
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


# Lens distortion (decision 63). WAYMO_LENS: the coefficients of Waymo's camera_model_test.cc calibration.
WAYMO_LENS = [0.032316008498, -0.321412482553, 0.000793258395371, -0.000625749354133, 0.0]


def opencv_distort(x: np.ndarray, y: np.ndarray, lens: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's radial-tangential model on normalised coordinates, written out from its documentation."""
    k1, k2, p1, p2, k3 = lens
    r2 = x**2 + y**2
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x**2),
            y * radial + p1 * (r2 + 2 * y**2) + 2 * p2 * x * y)


def distorted_camera(lens: list[float] | None, k: np.ndarray = np.array(GOOD_K), extrinsic: np.ndarray = np.eye(4),
                     size: tuple[int, int] = (640, 480)) -> Camera:
    return checked_camera("d", "img.png", size[0], size[1], k, extrinsic, SOURCE, lens)


def test_distorted_pixels_undistort_numerically_to_the_points_directions() -> None:
    """Each projected pixel, taken back through K^-1 and OpenCV's model inverted with scipy's fsolve
    from the pixel's own direction, gives the point's pinhole direction (X/Z, Y/Z)."""
    rng = np.random.default_rng(5)
    lens = [0.08, -0.21, 1.5e-3, -2e-3, 0.04]
    k = np.array([[910.0, 0.8, 655.0], [0.0, 905.0, 362.0], [0.0, 0.0, 1.0]])
    extrinsic = rigid(Rotation.random(random_state=6).as_matrix(), rng.normal(size=3))
    camera = distorted_camera(lens, k, extrinsic, (1280, 720))
    in_camera = np.column_stack([rng.uniform(-0.7, 0.7, (200, 2)) * 8.0, np.full(200, 8.0)])
    xyz = (np.linalg.inv(extrinsic) @ np.column_stack([in_camera, np.ones(200)]).T).T[:, :3]
    uv, depth = camera.project(xyz)
    np.testing.assert_allclose(depth, 8.0, atol=1e-9)
    x_d, y_d, _ = np.linalg.solve(k, np.column_stack([uv, np.ones(200)]).T)
    undistorted = np.array([fsolve(lambda p, a=a, b=b: np.array(opencv_distort(p[0], p[1], lens)) - [a, b], [a, b],
                                   xtol=1e-12) for a, b in zip(x_d, y_d)])
    np.testing.assert_allclose(undistorted, in_camera[:, :2] / 8.0, atol=1e-10)
    pinhole = distorted_camera(None, k, extrinsic, (1280, 720)).project(xyz)[0]
    assert np.abs(uv - pinhole).max() > 20.0  # the lens moves the corners by tens of pixels


def test_distortion_on_the_axes_in_closed_form() -> None:
    """On the x axis (y = 0): x_d = x (1 + k1 x^2 + k2 x^4 + k3 x^6) + 3 p2 x^2, y_d = p1 x^2; on the
    y axis: x_d = p2 y^2, y_d = y (1 + k1 y^2 + k2 y^4 + k3 y^6) + 3 p1 y^2."""
    k1, k2, p1, p2, k3 = lens = [0.1, -0.05, 0.001, 0.002, 0.01]
    f, cx, cy = 500.0, 320.0, 240.0
    camera = distorted_camera(lens)
    t = 0.4
    uv, _ = camera.project(np.array([[t * 5.0, 0.0, 5.0], [0.0, -t * 5.0, 5.0]]))
    along = t * (1 + k1 * t**2 + k2 * t**4 + k3 * t**6)
    np.testing.assert_allclose(uv[0], [cx + f * (along + 3 * p2 * t**2), cy + f * p1 * t**2], rtol=0, atol=1e-9)
    np.testing.assert_allclose(uv[1], [cx + f * p2 * t**2, cy + f * (-along + 3 * p1 * t**2)], rtol=0, atol=1e-9)


def test_zero_distortion_is_the_pinhole_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    k = np.array([[700.0, 1.5, 610.0], [0.0, 690.0, 185.0], [0.0, 0.0, 1.0]])
    extrinsic = rigid(Rotation.random(random_state=8).as_matrix(), rng.normal(size=3))
    xyz = rng.normal(scale=20.0, size=(500, 3))
    plain, zero = (distorted_camera(lens, k, extrinsic, (1224, 370)) for lens in (None, [0.0] * 5))
    front = plain.project(xyz)[1] > 0
    assert np.array_equal(plain.project(xyz)[0][front], zero.project(xyz)[0][front])
    for a, b in zip(plain.pixels(xyz), zero.pixels(xyz)):
        assert np.array_equal(a, b, equal_nan=True)
    assert plain.distortion is None and plain.fold_radius2 == zero.fold_radius2 == np.inf


def radial_slope(r: float, lens: list[float]) -> float:
    """d/dr of r (1 + k1 r^2 + k2 r^4 + k3 r^6), by central differences."""
    k1, k2, _, _, k3 = lens
    g = lambda s: s * (1 + k1 * s**2 + k2 * s**4 + k3 * s**6)  # noqa: E731
    return (g(r + 1e-6) - g(r - 1e-6)) / 2e-6


@pytest.mark.parametrize("lens", [WAYMO_LENS, [0.1, -0.05, 0.0, 0.0, -0.02], [-0.3, 0.02, 0.0, 0.0, 0.0]])
def test_the_fold_radius_is_where_the_radial_map_stops_increasing(lens: list[float]) -> None:
    """The first radius where the slope turns negative, bracketed on a grid and refined by brentq (the
    last lens's slope turns positive again at r = 2.78: the fold is the first root, r = 1.14)."""
    fold = np.sqrt(distorted_camera(lens).fold_radius2)
    grid = np.linspace(0.0, 20.0, 20001)
    first = np.flatnonzero(np.array([radial_slope(r, lens) for r in grid]) < 0)[0]
    expect = brentq(radial_slope, grid[first - 1], grid[first], args=(lens,), xtol=1e-13)
    assert fold == pytest.approx(expect, rel=1e-7)
    assert all(radial_slope(r, lens) > 0 for r in np.linspace(0.0, fold * (1 - 1e-4), 200))


def test_a_pincushion_lens_never_folds() -> None:
    assert distorted_camera([0.05, 0.01, 0.0, 0.0, 0.001]).fold_radius2 == np.inf


def test_a_point_beyond_the_fold_is_not_seen_though_the_formula_puts_it_in_the_image() -> None:
    """Waymo's test lens on a 1920 x 1280 image, f 2000 px: a point 51 degrees off the axis (r = 1.25,
    beyond the fold at r = 0.905) lands 664 px right of the centre by the formula, inside the image."""
    k = np.array([[2000.0, 0.0, 959.5], [0.0, 2000.0, 639.5], [0.0, 0.0, 1.0]])
    camera = distorted_camera(WAYMO_LENS, k, size=(1920, 1280))
    folded, inside = np.array([[1.25 * 10.0, 0.0, 10.0]]), np.array([[0.85 * 10.0, 0.0, 10.0]])
    x_d, y_d = opencv_distort(np.array([1.25]), np.array([0.0]), WAYMO_LENS)
    assert 0 <= 959.5 + 2000.0 * x_d[0] < 1920 and 0 <= 639.5 + 2000.0 * y_d[0] < 1280
    rows, cols, depth = camera.pixels(folded)
    assert rows.tolist() == cols.tolist() == [-1] and np.isnan(depth).all()
    assert np.isnan(camera.project(folded)[0]).all()
    # within the fold the same direction's pixel is the formula's (off this image: the lens reaches
    # farther than the sensor)
    x_d, y_d = opencv_distort(np.array([0.85]), np.array([0.0]), WAYMO_LENS)
    np.testing.assert_allclose(camera.project(inside)[0], [[959.5 + 2000.0 * x_d[0], 639.5 + 2000.0 * y_d[0]]])


@pytest.mark.parametrize("lens", [[0.1, 0.0, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0, 0.0, 0.0], [[0.1] * 5],
                                  [np.nan, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, np.inf], "k1 k2 p1 p2 k3",
                                  {"k1": 0.1}, [0.1, "x", 0.0, 0.0, 0.0]])
def test_distortion_that_is_not_five_finite_numbers_is_refused(lens: object) -> None:
    message = assert_refused(CalibrationError, "c", "i.png", 640, 480, GOOD_K, np.eye(4), SOURCE, lens)
    assert "camera 'c' distortion must be 5 finite numbers (k1, k2, p1, p2, k3)" in message
