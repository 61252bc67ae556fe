"""train.data.cameras.rolling_shutter through train.data.cameras.camera (decision 64): a camera at rest is the global
shutter bit for bit; a point placed on a pixel's ray as the moving camera sees it at that pixel's
exposure time projects onto that pixel, for each readout direction and with a lens; a point that
keeps pace with the readout is unsolved, not seen and counted; cameras.json keeps the readout and
refuses bad values in one line naming the file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import fsolve
from scipy.spatial.transform import Rotation

from test_cameras import GOOD_K, WAYMO_LENS, opencv_distort, rigid
from train.data.cameras.camera import CalibrationError, Camera, checked_camera, read_camera_list, write_camera_list
from train.data.cameras.image_projection import visible_pixels
from train.data.cameras.rolling_shutter import DIRECTIONS

SOURCE = "calib/cameras.json"
WIDTH, HEIGHT = 640, 480
EXTRINSIC = rigid(Rotation.from_euler("xyz", [0.3, -0.2, 0.1]).as_matrix(), [0.4, -1.5, 2.0])
READOUT = [-0.021, 0.029]  # seconds from the image pose: the first and the last line's exposure middles
MOTION = {"linear_velocity": [6.0, -1.5, 25.0], "angular_velocity": [0.05, -0.4, 0.1]}  # m/s, rad/s


def shutter(direction: str, linear: list[float] = MOTION["linear_velocity"],
            angular: list[float] = MOTION["angular_velocity"], readout: list[float] = READOUT) -> dict:
    return {"direction": direction, "readout": readout, "linear_velocity": linear, "angular_velocity": angular}


def camera(rolling: dict | None, lens: list[float] | None = WAYMO_LENS) -> Camera:
    return checked_camera("c", "img.png", WIDTH, HEIGHT, GOOD_K, EXTRINSIC, SOURCE, lens, rolling)


def cloud(n: int = 20000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform([-40.0, -40.0, -5.0], [40.0, 40.0, 40.0], (n, 3))


@pytest.mark.parametrize("lens", [WAYMO_LENS, None])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_a_camera_at_rest_is_the_global_shutter_bit_for_bit(direction: str, lens: list[float] | None) -> None:
    xyz = cloud()
    still, global_shutter = camera(shutter(direction, [0.0] * 3, [0.0] * 3), lens), camera(None, lens)
    (uv, depth), (uv0, depth0) = still.project(xyz), global_shutter.project(xyz)
    assert depth.tobytes() == depth0.tobytes()
    front = depth0 > 0  # behind the camera the global shutter's uv is undefined, the rolling one's NaN
    assert uv[front].tobytes() == uv0[front].tobytes()
    assert np.isnan(uv[~front]).all()
    for a, b in zip(still.pixels(xyz), global_shutter.pixels(xyz)):
        assert a.tobytes() == b.tobytes()
    assert (still.pixels(xyz)[0] >= 0).sum() > 1000


def pixel_time(direction: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Decision 64's exposure time of continuous pixel (u, v), written out per direction."""
    start, end = READOUT
    share = {"left_to_right": u / WIDTH, "right_to_left": (WIDTH - u) / WIDTH,
             "top_to_bottom": v / HEIGHT, "bottom_to_top": (HEIGHT - v) / HEIGHT}[direction]
    return start + (end - start) * share


def undistort(u: float, v: float, lens: list[float] | None) -> tuple[float, float]:
    """The normalised direction (x, y) of pixel (u, v): K^-1, then OpenCV's model inverted by fsolve."""
    xd, yd = np.linalg.solve(np.array(GOOD_K), [u, v, 1.0])[:2]
    if lens is None:
        return xd, yd
    x, y = fsolve(lambda p: np.array(opencv_distort(p[0], p[1], lens)) - [xd, yd], [xd, yd], xtol=1e-12)
    return x, y


def skew(w: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])


@pytest.mark.parametrize("lens", [WAYMO_LENS, None])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_a_point_on_a_pixels_ray_at_its_exposure_time_projects_to_that_pixel(direction: str,
                                                                               lens: list[float] | None) -> None:
    """The camera moves at 26 m/s and turns at 0.4 rad/s. At the exposure time t of a pixel, the camera
    has moved by t v and turned by t w (first order, in its frame at the image pose): a point at depth
    d on the pixel's ray then is q = (I - t [w]x)^-1 (d x, d y, d) + t v at the image pose. Its
    projection is that pixel to 1e-6 px and its depth d; the one-pose projection is pixels away."""
    rng = np.random.default_rng(1)
    moving, still = camera(shutter(direction), lens), camera(None, lens)
    v, w = np.array(MOTION["linear_velocity"]), np.array(MOTION["angular_velocity"])
    uv = rng.uniform([0.0, 0.0], [WIDTH - 1.0, HEIGHT - 1.0], (40, 2))
    depth = rng.uniform(3.0, 60.0, 40)
    times = pixel_time(direction, uv[:, 0], uv[:, 1])
    q = np.array([np.linalg.solve(np.eye(3) - t * skew(w), d * np.array([*undistort(u_, v_, lens), 1.0])) + t * v
                  for (u_, v_), d, t in zip(uv, depth, times)])
    xyz = (np.linalg.solve(EXTRINSIC, np.hstack([q, np.ones((40, 1))]).T).T)[:, :3]
    got_uv, got_depth = moving.project(xyz)
    np.testing.assert_allclose(got_uv, uv, atol=1e-6)
    np.testing.assert_allclose(got_depth, depth, atol=1e-6)  # the 1e-4 line tolerance: 25 m/s x 8e-9 s
    assert np.linalg.norm(still.project(xyz)[0] - uv, axis=1).max() > 5.0


def test_a_point_that_keeps_pace_with_the_readout_is_unsolved_and_counted() -> None:
    """Readout 2^-13 s per column; the camera moves left at 128 m/s, so a point at depth 8 m crosses
    f 128 / 8 = 2^13 columns per second to the right, as fast as the readout: its residual never
    changes (Newton's slope is 0), no column ever sees it. Points at other depths are solved."""
    f = 512.0
    pace = checked_camera("p", "img.png", 512, 256, [[f, 0, 256], [0, f, 128], [0, 0, 1]], np.eye(4), SOURCE, None,
                          shutter("left_to_right", [-128.0, 0.0, 0.0], [0.0] * 3, [0.0, 0.0625]))
    xyz = np.array([[0.5, 0.1, 8.0], [-1.0, 0.0, 8.0], [0.5, 0.1, 20.0], [1.0, -0.3, 40.0]])
    uv, depth = pace.project(xyz)
    assert np.isnan(depth[:2]).all() and np.isnan(uv[:2]).all()
    assert np.isfinite(uv[2:]).all() and (depth[2:] > 0).all()
    rows, cols, seen_depth = pace.pixels(xyz)
    assert (rows[:2] == -1).all() and (cols[:2] == -1).all() and np.isnan(seen_depth[:2]).all()
    index, *_, hidden, unsolved = visible_pixels(pace, xyz, 1.0, None)
    assert unsolved == 2 and hidden == 0 and set(index) <= {2, 3}


def test_camera_list_keeps_the_rolling_shutter_and_reads_files_without_it(tmp_path: Path) -> None:
    cameras = [camera(shutter("right_to_left")), camera(None)]
    path = write_camera_list(tmp_path, cameras)
    entries = json.loads(path.read_text())["cameras"]
    assert entries[0]["rolling_shutter"] == shutter("right_to_left") and "rolling_shutter" not in entries[1]
    back = read_camera_list(tmp_path)
    assert back[1].rolling_shutter is None
    xyz = cloud(2000)
    for a, b in zip(cameras, back):
        np.testing.assert_array_equal(a.project(xyz)[0], b.project(xyz)[0])


@pytest.mark.parametrize("bad, problem", [
    ({**shutter("sideways")}, "direction one of left_to_right"),
    ({**shutter("left_to_right", readout=[0.01, 0.0])}, "a readout that ends no earlier than it starts"),
    ({**shutter("left_to_right", linear=[1.0, float("nan"), 0.0])}, "linear_velocity 3 finite numbers"),
    ({**shutter("left_to_right", angular=[1.0, 0.0])}, "angular_velocity 3 finite numbers"),
    ({**shutter("top_to_bottom", readout=["a", 0.0])}, "readout 2 finite numbers"),
    ({"direction": "left_to_right", "readout": [0.0, 0.01]}, "a mapping of direction, readout"),
])
def test_a_bad_rolling_shutter_is_refused_in_one_line_naming_the_file(tmp_path: Path, bad: dict, problem: str) -> None:
    entry = {"name": "F", "image": "a.png", "width": 4, "height": 4, "intrinsics": GOOD_K,
             "scan_to_camera": np.eye(4).tolist(), "rolling_shutter": bad}
    (tmp_path / "cameras.json").write_text(json.dumps({"cameras": [entry]}))
    with pytest.raises(CalibrationError, match=f"{tmp_path / 'cameras.json'}: camera 'F' rolling shutter needs "
                                               f"{problem}") as info:
        read_camera_list(tmp_path)
    assert "\n" not in str(info.value)
