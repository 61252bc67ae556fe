"""The six cameras of a nuScenes LiDAR sweep, from the version's JSON tables (decision 59).

A LiDAR sweep and a camera image are not taken at the same instant (the cameras fire as the LiDAR's
beam passes their field of view; a sweep lasts 50 ms and the vehicle moves), so the extrinsic of an
image goes through the world:

    scan_to_camera = inv(cam2ego) @ inv(ego2global(t_image)) @ ego2global(t_lidar) @ lidar2ego

where ``lidar2ego`` and ``cam2ego`` are the ``calibrated_sensor`` records of the two sample_data rows
(``translation``; ``rotation`` a unit quaternion w, x, y, z) and ``ego2global(t)`` the ``ego_pose`` of
each row, taken at the row's own timestamp. ``K`` is the camera's ``camera_intrinsic``; the image
size is the row's ``width`` x ``height``. nuScenes publishes no distortion coefficients (its devkit
projects with K alone), and one timestamp stands for an image's whole exposure.

Which images: a keyframe's cameras are the six camera keyframes of its sample (``samples/CAM_*``,
same ``sample_token``). A sweep between keyframes has no sample of its own: for each camera channel
it takes the image (keyframe or sweep, ``samples/`` or ``sweeps/CAM_*``) of the same scene nearest
to it in time, so its images lie within half a camera period (about 42 ms at 12 Hz) of it.

Only four tables are read: ``sample_data.json`` (in pieces, only the rows of the LiDAR and the
cameras: :func:`train.data.lidar.nuscenes_index.sample_data_rows`), ``calibrated_sensor.json``,
``ego_pose.json`` (in pieces, only the poses those rows name; it holds one pose per sample_data
row) and ``sample.json``/``scene.json`` for the sweeps' scenes. The index is built once per process
and cached like the keyframe index.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cameras.camera import CalibrationError, Camera, checked_camera
from .nuscenes_index import (
    LIDAR_KEYFRAME_PREFIX,
    LIDAR_SWEEP_PREFIX,
    NUSCENES_LAYOUT,
    SceneOf,
    cached,
    corrupt_table,
    read_table,
    sample_data_rows,
)
from ..validation import layout_error

CAMERA_CHANNELS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
CAMERA_KEYFRAME_PREFIX = "samples/CAM_"
CAMERA_SWEEP_PREFIX = "sweeps/CAM_"
QUATERNION_TOLERANCE = 1e-3  # | |q| - 1 | a calibration or pose quaternion may show before it is refused
_READING_KEYS = ("token", "sample_token", "filename", "timestamp", "calibrated_sensor_token", "ego_pose_token")
_RECORD = re.compile(rb"\{[^{}]*\}")
_TOKEN = re.compile(rb'"token"\s*:\s*"([^"]*)"')
_CHUNK_BYTES = 1 << 24


@dataclass(frozen=True)
class Reading:
    """One sample_data row: its file, time (microseconds), calibrated sensor and ego pose, image size."""

    filename: str
    timestamp: int
    sensor: str
    pose: str
    width: int
    height: int

    @property
    def channel(self) -> str:
        return self.filename.split("/")[1]


@dataclass(frozen=True)
class CameraIndex:
    """What the cameras of a version's LiDAR rows need (module docstring)."""

    folder: Path
    lidar: dict[str, Reading]  # LiDAR sample_data token -> its reading
    lidar_sample: dict[str, str]  # LiDAR sample_data token -> sample token
    keyframe_cameras: dict[str, list[Reading]]  # sample token -> its camera keyframes
    sweep_cameras: dict[tuple[str, str], tuple[np.ndarray, list[Reading]]]  # (scene, channel) -> by time
    lidar_scene: dict[str, str]  # LiDAR sweep token -> scene name (sweeps only)
    sensors: dict[str, tuple[np.ndarray, np.ndarray | None]]  # calibrated_sensor -> (sensor2ego, K)
    poses: dict[str, np.ndarray]  # ego_pose token -> ego2global


def quaternion_matrix(q: list[float], source: str, what: str) -> np.ndarray:
    """The rotation matrix of a unit quaternion (w, x, y, z), refused naming ``source`` unless its
    norm is within :data:`QUATERNION_TOLERANCE` of 1."""
    w, x, y, z = np.asarray(q, dtype=np.float64).reshape(4)
    norm = float(np.sqrt(w * w + x * x + y * y + z * z))
    if not abs(norm - 1.0) <= QUATERNION_TOLERANCE:
        raise CalibrationError(f"{source}: {what} rotation {list(q)} is not a unit quaternion (norm {norm:.6f})")
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def rigid_transform(record: dict, source: str, what: str) -> np.ndarray:
    """4 x 4 from a record's ``rotation`` (w, x, y, z) and ``translation`` (x, y, z)."""
    try:
        rotation = quaternion_matrix(record["rotation"], source, what)
        translation = np.asarray(record["translation"], dtype=np.float64).reshape(3)
    except (TypeError, ValueError) as err:
        if isinstance(err, CalibrationError):
            raise
        raise corrupt_table(Path(source), f"has a {what} whose rotation/translation are not 4 and 3 "
                                          f"numbers ({err})") from err
    transform = np.eye(4)
    transform[:3, :3], transform[:3, 3] = rotation, translation
    return transform


def _reading(row: dict, path: Path) -> Reading:
    try:
        return Reading(str(row["filename"]), int(row["timestamp"]), str(row["calibrated_sensor_token"]),
                       str(row["ego_pose_token"]), int(row.get("width") or 0), int(row.get("height") or 0))
    except (KeyError, TypeError, ValueError) as err:
        raise corrupt_table(path, f"has a sample_data record without {list(_READING_KEYS)} ({err}): "
                                  f"{str(row)[:120]}") from err


def read_poses(path: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    """The ``ego_pose`` records of ``wanted`` tokens as ego -> global 4 x 4, read in pieces (the
    table's records are flat JSON objects, so each lies between a '{' and the next '}')."""
    if not path.is_file():
        raise layout_error(f"nuscenes file {str(path)!r} is missing", NUSCENES_LAYOUT)
    poses: dict[str, np.ndarray] = {}
    rest = b""
    with path.open("rb") as fh:
        while True:
            more = fh.read(_CHUNK_BYTES)
            text = rest + more
            end = 0
            for match in _RECORD.finditer(text):
                end = match.end()
                token = _TOKEN.search(match.group())
                if token is not None and token.group(1).decode(errors="replace") in wanted:
                    try:
                        record = json.loads(match.group())
                    except ValueError as err:
                        raise corrupt_table(path, f"holds a record that is not JSON ({err})") from err
                    poses[record["token"]] = rigid_transform(record, str(path), f"ego pose {record['token']}")
            rest = text[end:]
            if not more:
                break
    missing = wanted - poses.keys()
    if missing:
        raise corrupt_table(path, f"lacks {len(missing)} ego pose(s) that sample_data.json names, e.g. "
                                  f"{sorted(missing)[0]!r}")
    return poses


def camera_index(root: Path, version: str, sweeps: bool) -> CameraIndex:
    """The camera index of ``root/version`` for its keyframes, or (``sweeps``) its LiDAR sweeps (cached)."""
    folder = root / version
    names = ("sample_data", "calibrated_sensor", "ego_pose") + (("sample", "scene") if sweeps else ())
    files = [folder / f"{name}.json" for name in names]
    return cached("sweep cameras" if sweeps else "cameras", files, lambda: _build(folder, sweeps))


def _build(folder: Path, sweeps: bool) -> CameraIndex:
    sample_data = folder / "sample_data.json"
    lidar_prefix = LIDAR_SWEEP_PREFIX if sweeps else LIDAR_KEYFRAME_PREFIX
    lidar_rows = [r for r in sample_data_rows(sample_data, lidar_prefix) if str(r["filename"]).startswith(lidar_prefix)]
    camera_rows = [r for r in sample_data_rows(sample_data, CAMERA_KEYFRAME_PREFIX)
                   if r["is_key_frame"] and str(r["filename"]).startswith(CAMERA_KEYFRAME_PREFIX)]
    if sweeps:
        camera_rows += [r for r in sample_data_rows(sample_data, CAMERA_SWEEP_PREFIX)
                        if str(r["filename"]).startswith(CAMERA_SWEEP_PREFIX)]
    lidar = {r["token"]: _reading(r, sample_data) for r in lidar_rows}
    cameras = [(r, _reading(r, sample_data)) for r in camera_rows]
    keyframe_cameras: dict[str, list[Reading]] = {}
    sweep_cameras: dict[tuple[str, str], tuple[np.ndarray, list[Reading]]] = {}
    lidar_scene: dict[str, str] = {}
    if sweeps:
        scene_of = SceneOf(folder)
        lidar_scene = {r["token"]: scene_of(r, "sweep") for r in lidar_rows}
        grouped: dict[tuple[str, str], list[Reading]] = {}
        for row, reading in cameras:
            grouped.setdefault((scene_of(row, "camera image"), reading.channel), []).append(reading)
        for key, readings in grouped.items():
            readings.sort(key=lambda r: r.timestamp)
            sweep_cameras[key] = (np.array([r.timestamp for r in readings], dtype=np.int64), readings)
    else:
        for row, reading in cameras:
            keyframe_cameras.setdefault(row["sample_token"], []).append(reading)
    calibrated = folder / "calibrated_sensor.json"
    sensors = {r["token"]: (rigid_transform(r, str(calibrated), f"calibrated sensor {r['token']}"),
                            None if not r.get("camera_intrinsic") else np.asarray(r["camera_intrinsic"], dtype=float))
               for r in read_table(calibrated, ("token", "rotation", "translation"))}
    wanted = {r.pose for r in lidar.values()} | {r.pose for _, r in cameras}
    poses = read_poses(folder / "ego_pose.json", wanted)
    return CameraIndex(folder, lidar, {r["token"]: r["sample_token"] for r in lidar_rows}, keyframe_cameras,
                       sweep_cameras, lidar_scene, sensors, poses)


def _nearest(index: CameraIndex, scene: str, when: int) -> list[Reading]:
    """Per camera channel, the image of ``scene`` nearest in time to ``when`` (the sweeps' rule)."""
    found = []
    for channel in CAMERA_CHANNELS:
        if (scene, channel) not in index.sweep_cameras:
            continue
        times, readings = index.sweep_cameras[(scene, channel)]
        at = int(np.searchsorted(times, when))
        pick = min((i for i in (at - 1, at) if 0 <= i < len(times)), key=lambda i: abs(int(times[i]) - when))
        found.append(readings[pick])
    return found


def nuscenes_cameras(root: Path, version: str, token: str, sweeps: bool) -> list[Camera]:
    """The cameras of LiDAR sample_data ``token`` of ``root/version`` (module docstring), in the order
    of :data:`CAMERA_CHANNELS`."""
    index = camera_index(root, version, sweeps)
    if token not in index.lidar:
        raise layout_error(f"nuScenes LiDAR sample_data {token!r} is not in "
                           f"{str(index.folder / 'sample_data.json')!r}", NUSCENES_LAYOUT)
    lidar = index.lidar[token]
    if sweeps:
        images = _nearest(index, index.lidar_scene[token], lidar.timestamp)
    else:
        order = {c: i for i, c in enumerate(CAMERA_CHANNELS)}
        images = sorted(index.keyframe_cameras.get(index.lidar_sample[token], []),
                        key=lambda r: order.get(r.channel, len(order)))
    calibrated = str(index.folder / "calibrated_sensor.json")
    lidar_to_global = index.poses[lidar.pose] @ _sensor(index, lidar, calibrated)[0]
    cameras = []
    for image in images:
        cam_to_ego, k = _sensor(index, image, calibrated)
        if k is None:
            raise CalibrationError(f"{calibrated}: calibrated sensor {image.sensor} of camera image "
                                   f"{image.filename} has no camera_intrinsic")
        scan_to_camera = np.linalg.inv(index.poses[image.pose] @ cam_to_ego) @ lidar_to_global
        cameras.append(checked_camera(image.channel, image.filename, image.width, image.height, k, scan_to_camera,
                                      f"{calibrated} (sensor {image.sensor}) with the sample_data row of "
                                      f"{image.filename}"))
    return cameras


def _sensor(index: CameraIndex, reading: Reading, source: str) -> tuple[np.ndarray, np.ndarray | None]:
    if reading.sensor not in index.sensors:
        raise layout_error(f"nuScenes sample_data of {reading.filename} names calibrated sensor "
                           f"{reading.sensor!r}, which {source!r} does not hold", NUSCENES_LAYOUT)
    return index.sensors[reading.sensor]
