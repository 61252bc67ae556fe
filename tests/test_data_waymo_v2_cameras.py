"""Waymo v2 cameras converted with the frames (decision 59): camera_image and camera_calibration
parquet files written with the official column names, the chain checked against Waymo's own
x-forward camera model evaluated point by point."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import waymo_v2_scene as scene
from train.data import convert as conv
from train.data.cameras import read_camera_list
from train.data.validation import CorruptFileError, DatasetLayoutError

TIMES = [1_000_000, 1_100_000]
SEGMENT = "3333_000_100"
WIDTH, HEIGHT = 64, 48
# camera number -> (camera -> vehicle in Waymo's camera frame, f_u, f_v, c_u, c_v)
CAMERAS = {
    1: (scene.transform(scene.rot_z(0.05) @ scene.rot_y(0.02), (1.5, 0.1, 2.0)), 80.0, 82.0, 31.5, 24.2),
    4: (scene.transform(scene.rot_z(np.pi / 2), (1.0, 0.9, 1.9)), 60.0, 60.0, 32.0, 23.0),
}


def image_pose(ts: int) -> np.ndarray:
    """The vehicle's pose at an image of frame ``ts``: 0.4 m further and 0.01 rad more yaw than the
    frame's own pose (and so than the pose the converted points are in)."""
    return scene.FRAME_POSE @ scene.transform(scene.rot_z(0.01), (0.4, 0.02, 0.0))


def jpeg(seed: int, size: tuple[int, int] = (WIDTH, HEIGHT)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def write_cameras(split_dir: Path, segment: str, times: list[int],
                  image_size: tuple[int, int] = (WIDTH, HEIGHT)) -> dict:
    """The two camera components of ``segment``; returns {(ts, camera): jpeg bytes}."""
    prefix = "[CameraCalibrationComponent]"
    numbers = sorted(CAMERAS)
    calib = {"key.segment_context_name": pa.array([segment] * len(numbers), pa.string()),
             "key.camera_name": pa.array(numbers, pa.int8())}
    for i, name in enumerate(("f_u", "f_v", "c_u", "c_v")):
        calib[f"{prefix}.intrinsic.{name}"] = pa.array([CAMERAS[n][1 + i] for n in numbers], pa.float64())
    for name, value in (("k1", 0.03), ("k2", -0.3), ("p1", -1e-4), ("p2", 1e-3), ("k3", 0.0)):
        calib[f"{prefix}.intrinsic.{name}"] = pa.array([value] * len(numbers), pa.float64())
    calib[f"{prefix}.extrinsic.transform"] = pa.array([CAMERAS[n][0].reshape(-1).tolist() for n in numbers],
                                                      pa.list_(pa.float64(), 16))
    calib[f"{prefix}.width"] = pa.array([WIDTH] * len(numbers), pa.int32())
    calib[f"{prefix}.height"] = pa.array([HEIGHT] * len(numbers), pa.int32())
    calib[f"{prefix}.rolling_shutter_direction"] = pa.array([2] * len(numbers), pa.int8())
    scene.write(split_dir, "camera_calibration", segment, calib)
    rows = [(ts, n) for ts in times for n in numbers]
    images = {(ts, n): jpeg(ts + n, image_size) for ts, n in rows}
    prefix = "[CameraImageComponent]"
    scene.write(split_dir, "camera_image", segment, {
        "key.segment_context_name": pa.array([segment] * len(rows), pa.string()),
        "key.frame_timestamp_micros": pa.array([ts for ts, _ in rows], pa.int64()),
        "key.camera_name": pa.array([n for _, n in rows], pa.int8()),
        f"{prefix}.image": pa.array([images[r] for r in rows], pa.binary()),
        f"{prefix}.pose.transform": pa.array([image_pose(ts).reshape(-1).tolist() for ts, _ in rows],
                                             pa.list_(pa.float64(), 16)),
        f"{prefix}.pose_timestamp": pa.array([ts * 1e-6 + 0.02 for ts, _ in rows], pa.float64()),
    })
    return images


@pytest.fixture(scope="module")
def converted_with_cameras(tmp_path_factory) -> tuple[Path, dict]:
    src = tmp_path_factory.mktemp("waymo_v2_cameras")
    scene.write_segment(src / "training", SEGMENT, TIMES, set(TIMES))
    images = write_cameras(src / "training", SEGMENT, TIMES)
    dst = tmp_path_factory.mktemp("converted")
    conv.convert_waymo(src, dst, workers=1, show_progress=False)
    return dst, images


def waymo_pixel(world: np.ndarray, number: int, vehicle_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Waymo's pinhole model in its own frame (x forward, y left, z up): u = c_u - f_u y / x,
    v = c_v - f_v z / x, depth x, for world points seen from the vehicle at ``vehicle_pose``."""
    extrinsic, fu, fv, cu, cv = CAMERAS[number]
    vehicle = np.linalg.solve(vehicle_pose, np.hstack([world, np.ones((len(world), 1))]).T)
    x, y, z, _ = np.linalg.solve(extrinsic, vehicle)
    return np.stack([cu - fu * y / x, cv - fv * z / x], axis=1), x


def test_converted_frames_carry_their_camera_images_and_calibrations(converted_with_cameras) -> None:
    dst, images = converted_with_cameras
    rng = np.random.default_rng(3)
    for ts in TIMES:
        frame = dst / "training" / SEGMENT / str(ts)
        cameras = read_camera_list(frame)
        assert [(c.name, c.image, c.width, c.height) for c in cameras] == [
            ("FRONT", f"training/{SEGMENT}/{ts}/cameras/FRONT.jpg", WIDTH, HEIGHT),
            ("SIDE_LEFT", f"training/{SEGMENT}/{ts}/cameras/SIDE_LEFT.jpg", WIDTH, HEIGHT)]
        for camera, number in zip(cameras, sorted(CAMERAS)):
            assert (dst / camera.image).read_bytes() == images[(ts, number)]
            # world points ahead of the camera, in the scan's frame (the vehicle at the frame's pose)
            extrinsic = CAMERAS[number][0]
            in_camera = np.stack([rng.uniform(2, 40, 50), rng.uniform(-10, 10, 50), rng.uniform(-5, 5, 50)], 1)
            world = (image_pose(ts) @ extrinsic @ np.hstack([in_camera, np.ones((50, 1))]).T).T[:, :3]
            scan = np.linalg.solve(np.load(frame / "pose.npy"), np.hstack([world, np.ones((50, 1))]).T).T[:, :3]
            uv, depth = camera.project(scan)
            expect_uv, expect_depth = waymo_pixel(world, number, image_pose(ts))
            np.testing.assert_allclose(depth, expect_depth, atol=1e-9)
            np.testing.assert_allclose(uv, expect_uv, atol=1e-7)
            # the vehicle moved 0.4 m between the frame's pose and the image's: leaving that out
            # of the chain would move the points (by up to pixels at these 60-80 px focal lengths)
            frame_uv, _ = waymo_pixel(world, number, scene.FRAME_POSE)
            assert np.linalg.norm(frame_uv - uv, axis=1).max() > 1.0
    marker = json.loads((dst / "training" / SEGMENT / conv.MARKER).read_text())
    assert marker["camera_images"] == len(TIMES) * len(CAMERAS) and marker["format_version"] == 2


def test_a_segment_without_camera_files_converts_without_cameras(tmp_path: Path) -> None:
    src = tmp_path / "src"
    scene.write_segment(src / "training", SEGMENT, TIMES[:1], set(TIMES[:1]))
    conv.convert_waymo(src, tmp_path / "dst", workers=1, show_progress=False)
    frame = tmp_path / "dst" / "training" / SEGMENT / str(TIMES[0])
    assert read_camera_list(frame) == [] and not (frame / "cameras").exists()
    assert json.loads((frame.parent / conv.MARKER).read_text())["camera_images"] == 0


def test_camera_images_without_their_calibration_are_refused_naming_the_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    scene.write_segment(src / "training", SEGMENT, TIMES[:1], set(TIMES[:1]))
    write_cameras(src / "training", SEGMENT, TIMES[:1])
    (src / "training" / "camera_calibration" / f"{SEGMENT}.parquet").unlink()
    with pytest.raises(DatasetLayoutError, match=f"camera_calibration/{SEGMENT}.parquet' is missing"):
        conv.convert_waymo(src, tmp_path / "dst", workers=1, show_progress=False)


def test_an_image_of_another_size_than_its_calibration_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    scene.write_segment(src / "training", SEGMENT, TIMES[:1], set(TIMES[:1]))
    write_cameras(src / "training", SEGMENT, TIMES[:1], image_size=(WIDTH, HEIGHT + 2))
    with pytest.raises(CorruptFileError, match=r"camera_image/.*camera FRONT's image of frame .* is 64 x 50 .* "
                                               r"calibration says 64 x 48") as info:
        conv.convert_waymo(src, tmp_path / "dst", workers=1, show_progress=False)
    assert "\n" not in str(info.value)
