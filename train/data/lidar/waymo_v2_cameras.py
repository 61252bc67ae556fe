"""The five cameras of a Waymo v2 frame: ``camera_image`` and ``camera_calibration`` (decisions 59, 63, 64).

Read with pyarrow like the LiDAR components (:class:`train.data.lidar.waymo_v2.ComponentFile`):

* ``camera_calibration/<segment>.parquet``, one row per camera (``key.camera_name``: FRONT 1,
  FRONT_LEFT 2, FRONT_RIGHT 3, SIDE_LEFT 4, SIDE_RIGHT 5): ``intrinsic.{f_u, f_v, c_u, c_v}`` and
  the lens's ``intrinsic.{k1, k2, p1, p2, k3}``, ``extrinsic.transform`` (4 x 4, camera -> vehicle),
  ``width``, ``height`` and ``rolling_shutter_direction``;
* ``camera_image/<segment>.parquet``, one row per frame and camera: ``image`` (the JPEG bytes),
  ``pose.transform``, the vehicle's pose (vehicle -> world) at the image's ``pose_timestamp``, the
  vehicle's ``velocity.linear_velocity.{x, y, z}`` (world frame, m/s) and
  ``velocity.angular_velocity.{x, y, z}`` (vehicle frame, rad/s, as Waymo's camera model reads
  them) there, and ``rolling_shutter_params.{shutter, camera_trigger_time, camera_readout_done_time}``.

Waymo's camera frame has x forward along the optical axis, y left and z up; the OpenCV frame of
:mod:`train.data.cameras.camera` is ``(x, y, z)_cv = (-y, -z, x)_waymo``. A converted frame's points are
in the vehicle frame of the frame's pose (``pose.npy``, world <- vehicle), so

    scan_to_camera = waymo_to_opencv @ inv(camera_to_vehicle) @ inv(image_pose) @ frame_pose

carries them through the world into the vehicle at the image's own time, as nuScenes' chain does.
The lens distortion (``intrinsic.{k1, k2, p1, p2, k3}``, OpenCV's definitions and order, as Waymo's
own camera model applies them in its frame: ``(u_n, v_n) = (-y / x, -z / x)`` is OpenCV's normalised
``(x, y)``) goes on each :class:`~train.data.cameras.camera.Camera` and into ``cameras.json`` (decision
63). A calibration file without those five columns (the v2 schema has them) gives cameras without
distortion, said once per file in a warning; one with some of them only is refused.
The rolling shutter (decision 64): a line's time is the middle of its exposure, from
``trigger + shutter / 2`` (coordinate 0 along the readout) to ``readout_done - shutter / 2``
(coordinate width or height), taken relative to ``pose_timestamp``; the camera's velocities in its
OpenCV frame are ``w_cam = C^T w`` and ``v_cam = C^T (R^T v + w x c)`` (rotated into OpenCV's axes),
with ``C``, ``c`` the extrinsic's rotation and translation and ``R`` the image pose's rotation (the
lever arm of the camera on the turning vehicle). A calibration file without
``rolling_shutter_direction``, or an image file without the velocity and readout columns, gives
cameras with one pose per image, said once per file in a warning; an image file with some of those
columns only is refused; ``GLOBAL_SHUTTER`` (5) is one pose by its own word; an unknown direction is
refused. What the model still leaves out: the time the LiDAR sweep itself spans beyond what the
per-pixel poses of the conversion already undo (decision 59 gives the sizes).
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..cameras.camera import DISTORTION_TERMS, Camera, checked_camera, write_camera_list
from ..cameras.rolling_shutter import DIRECTIONS
from .waymo_v2 import CAMERA_CALIBRATION, CAMERA_IMAGE, KEY_TIME, ComponentFile, column, component_path

KEY_CAMERA = "key.camera_name"
CAMERA_NAMES = {1: "FRONT", 2: "FRONT_LEFT", 3: "FRONT_RIGHT", 4: "SIDE_LEFT", 5: "SIDE_RIGHT"}
WAYMO_TO_OPENCV = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
_INTRINSIC_FIELDS = ("f_u", "f_v", "c_u", "c_v")
GLOBAL_SHUTTER = 5  # rolling_shutter_direction of a camera read with one pose (and of a file without the column)
# rolling_shutter_direction -> decision 64's direction; GLOBAL_SHUTTER -> None (one pose)
READOUT_DIRECTIONS = {1: DIRECTIONS[2], 2: DIRECTIONS[0], 3: DIRECTIONS[3], 4: DIRECTIONS[1], GLOBAL_SHUTTER: None}
_MOTION_FIELDS = ("pose_timestamp",) + tuple(f"velocity.{kind}_velocity.{axis}" for kind in ("linear", "angular")
                                             for axis in "xyz") + tuple(
    f"rolling_shutter_params.{name}" for name in ("shutter", "camera_trigger_time", "camera_readout_done_time"))


@dataclass(frozen=True)
class CameraCalibration:
    """One camera of a segment: pinhole K, camera (Waymo frame) -> vehicle, image size, the lens
    distortion ``(k1, k2, p1, p2, k3)`` (None: the file has none), the readout direction (one of
    decision 64's; None: a global shutter, or a file without the column)."""

    intrinsics: np.ndarray
    camera_to_vehicle: np.ndarray
    width: int
    height: int
    distortion: np.ndarray | None
    readout_direction: str | None = None


def read_camera_calibrations(split_dir: Path, segment: str) -> dict[int, CameraCalibration]:
    """The calibration of every camera of ``segment``, by camera name number (module docstring for
    a file without the distortion columns)."""
    fields = [KEY_CAMERA, "extrinsic.transform", "width", "height"] + [f"intrinsic.{n}" for n in _INTRINSIC_FIELDS]
    f = ComponentFile(split_dir, CAMERA_CALIBRATION, segment, fields)
    lens = [f"intrinsic.{n}" for n in DISTORTION_TERMS]
    distorted = any(column(CAMERA_CALIBRATION, n) in f.pf.schema_arrow.names for n in lens)
    rolling = column(CAMERA_CALIBRATION, "rolling_shutter_direction") in f.pf.schema_arrow.names
    if distorted or rolling:  # all five then: widening the file with them refuses a partial set, naming the missing
        f = f.widened((lens if distorted else []) + (["rolling_shutter_direction"] if rolling else []))
    if not distorted:
        warnings.warn(f"{f.path}: no lens distortion columns ({', '.join(column(CAMERA_CALIBRATION, n) for n in lens)}"
                      f"); its cameras are projected without distortion (decision 63)", stacklevel=2)
    if not rolling:
        warnings.warn(f"{f.path}: no column {column(CAMERA_CALIBRATION, 'rolling_shutter_direction')}; its cameras "
                      "are projected with one pose per image (decision 64)", stacklevel=2)
    calibrations = {}
    for row in f.rows():
        extrinsic = f.values(row, "extrinsic.transform", np.float64, 16)
        if extrinsic is None:
            raise f.error(f"column {column(CAMERA_CALIBRATION, 'extrinsic.transform')!r} is null")
        fu, fv, cu, cv = (f.scalar(row, f"intrinsic.{n}") for n in _INTRINSIC_FIELDS)
        width, height = (f.scalar(row, n) for n in ("width", "height"))
        distortion = np.array([f.scalar(row, n) for n in lens]) if distorted else None
        direction = f.scalar(row, "rolling_shutter_direction") if rolling else GLOBAL_SHUTTER
        if direction not in READOUT_DIRECTIONS:
            raise f.error(f"camera {row[KEY_CAMERA].as_py()} has rolling_shutter_direction {direction:g}, not one of "
                          f"{sorted(READOUT_DIRECTIONS)} (top to bottom, left to right, bottom to top, right to left, "
                          "global shutter)")
        calibrations[row[KEY_CAMERA].as_py()] = CameraCalibration(
            np.array([[fu, 0.0, cu], [0.0, fv, cv], [0.0, 0.0, 1.0]]), extrinsic.reshape(4, 4), int(width),
            int(height), distortion, READOUT_DIRECTIONS[direction])
    return calibrations


def camera_rolling_shutter(calibration: CameraCalibration, image_pose: np.ndarray, motion: dict[str, float]
                           ) -> dict[str, object] | None:
    """Decision 64's rolling shutter of one image (module docstring), as ``cameras.json`` holds it, from
    the image row's ``motion`` (the columns of ``_MOTION_FIELDS`` by name); None for a global shutter."""
    if calibration.readout_direction is None:
        return None
    half = 0.5 * motion["rolling_shutter_params.shutter"]
    start = motion["rolling_shutter_params.camera_trigger_time"] + half - motion["pose_timestamp"]
    end = motion["rolling_shutter_params.camera_readout_done_time"] - half - motion["pose_timestamp"]
    linear, angular = (np.array([motion[f"velocity.{kind}_velocity.{axis}"] for axis in "xyz"])
                       for kind in ("linear", "angular"))
    rotation, lever = calibration.camera_to_vehicle[:3, :3], calibration.camera_to_vehicle[:3, 3]
    to_camera = WAYMO_TO_OPENCV[:3, :3] @ rotation.T
    return {"direction": calibration.readout_direction, "readout": [start, end],
            "linear_velocity": (to_camera @ (image_pose[:3, :3].T @ linear + np.cross(angular, lever))).tolist(),
            "angular_velocity": (to_camera @ angular).tolist()}


def camera_scan_to_camera(calibration: CameraCalibration, image_pose: np.ndarray, frame_pose: np.ndarray) -> np.ndarray:
    """Vehicle frame at the frame's pose -> OpenCV camera frame at the image's pose (module docstring)."""
    return WAYMO_TO_OPENCV @ np.linalg.inv(image_pose @ calibration.camera_to_vehicle) @ frame_pose


def convert_frame_cameras(split_dir: Path, segment: str, frame_poses: dict[int, np.ndarray],
                          frame_dir: Callable[[int], Path], image_root: str) -> int:
    """Write each frame's images ``frame_dir(ts)/cameras/NAME.jpg`` (the JPEG bytes as stored) and its
    ``cameras.json``, image paths ``<image_root>/<ts>/cameras/NAME.jpg``, for the frames of
    ``frame_poses`` (timestamp -> the frame's vehicle pose); returns the number of images written.
    A segment without a ``camera_image`` file writes nothing (0); with one, it needs its calibration."""
    split_dir = Path(split_dir)
    if not component_path(split_dir, CAMERA_IMAGE, segment).is_file():
        return 0
    calibrations = read_camera_calibrations(split_dir, segment)
    fields = [KEY_TIME, KEY_CAMERA, "image", "pose.transform"]
    f = ComponentFile(split_dir, CAMERA_IMAGE, segment, fields)
    names = set(f.pf.schema_arrow.names)
    moving = any(column(CAMERA_IMAGE, n) in names for n in _MOTION_FIELDS[1:])
    if moving:  # all of them then (the file is refused naming a missing one)
        f = f.widened(list(_MOTION_FIELDS))
    elif any(c.readout_direction is not None for c in calibrations.values()):
        warnings.warn(f"{f.path}: no velocity and rolling_shutter_params columns; its images are projected with "
                      "one pose each (decision 64)", stacklevel=2)
    cameras: dict[int, list[Camera]] = {}
    for row in f.rows(keep=lambda t, _: t in frame_poses):
        ts, number = row[KEY_TIME].as_py(), row[KEY_CAMERA].as_py()
        if number not in calibrations or number not in CAMERA_NAMES:
            raise f.error(f"camera {number} has no calibration in the {CAMERA_CALIBRATION!r} component (it "
                          f"lists {sorted(calibrations)}; cameras are {CAMERA_NAMES})", row)
        calibration, name = calibrations[number], CAMERA_NAMES[number]
        pose = f.values(row, "pose.transform", np.float64, 16)
        data = row[column(CAMERA_IMAGE, "image")]
        if pose is None or not data.is_valid:
            raise f.error(f"camera {name}'s image or pose of frame {KEY_TIME}={ts} is null", row)
        jpeg = data.as_py()
        size = _jpeg_size(jpeg)
        if size != (calibration.width, calibration.height):
            raise f.error(f"camera {name}'s image of frame {KEY_TIME}={ts} is {size[0]} x {size[1]} (or no "
                          f"JPEG), its calibration says {calibration.width} x {calibration.height}", row)
        folder = frame_dir(ts) / "cameras"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.jpg").write_bytes(jpeg)
        shutter = camera_rolling_shutter(calibration, pose.reshape(4, 4), {
            n: f.scalar(row, n) for n in _MOTION_FIELDS}) if moving else None
        cameras.setdefault(ts, []).append(checked_camera(
            name, f"{image_root}/{ts}/cameras/{name}.jpg", calibration.width, calibration.height,
            calibration.intrinsics, camera_scan_to_camera(calibration, pose.reshape(4, 4), frame_poses[ts]),
            f"{component_path(split_dir, CAMERA_CALIBRATION, segment)} (camera {name}) with {f.path} (frame "
            f"{KEY_TIME}={ts})", calibration.distortion, shutter))
    for ts, frame_cameras in cameras.items():
        write_camera_list(frame_dir(ts), sorted(frame_cameras, key=lambda c: c.name))
    return sum(len(c) for c in cameras.values())


def _jpeg_size(data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return (int(image.width), int(image.height)) if image.format == "JPEG" else (0, 0)
    except (OSError, ValueError):
        return (0, 0)
