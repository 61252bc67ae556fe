"""Writes small Waymo v2 parquet segments (official column names and arrow types) of a known scene.

The scene, in the vehicle frame of each frame's timestamp: a ground plane z = -2 (raw class 18,
road) and a wall x = WALL_X + frame index (raw class 14, building). Every range image pixel's ray is
intersected with both planes: return 1 holds the nearer hit, return 2 the farther one when the ray
meets both. The expected points are kept beside the files, in the converted layout's order
(return 1 of lidars TOP then FRONT, then return 2), so tests compare against analytic positions.
Directions follow the data set's statements (spec F2-F3): column c of a W-wide image looks at
vehicle-frame azimuth pi (1 - (2c + 1) / W); rows run from the highest beam down; the top lidar's
pixels carry the vehicle pose at their capture time (3-2-1 Euler angles).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

GROUND_Z = -2.0
WALL_X = 8.0
ROAD, BUILDING = 18, 14  # raw Waymo ids; the converted labels are raw - 1
UNDEFINED_COLUMN = 0  # top-lidar pixels of this column are labelled 0 "undefined"
TOP, FRONT = 1, 2


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def transform(rot: np.ndarray, t) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rot, t
    return m


def pose_matrix(roll, pitch, yaw, x, y, z) -> np.ndarray:
    return transform(rot_z(yaw) @ rot_y(pitch) @ rot_x(roll), (x, y, z))


# lidar -> (H, W, extrinsic, uniform (min, max) or per-beam ascending inclinations)
LIDARS = {
    TOP: (6, 16, transform(rot_z(0.25), (1.0, 0.2, 1.8)), (-0.4, 0.1)),
    FRONT: (4, 8, transform(rot_z(0.5) @ rot_y(0.1), (3.5, 0.0, 0.7)), np.array([-0.5, -0.3, -0.1, 0.2])),
}
FRAME_POSE = pose_matrix(0.01, -0.02, 0.308, 100.4, 50.08, 2.0)


def pixel_pose_params(height: int, width: int) -> np.ndarray:
    """(H, W, 6) roll, pitch, yaw, x, y, z of the vehicle at each top-lidar pixel's capture."""
    cols = np.arange(width, dtype=np.float64)
    params = np.zeros((height, width, 6))
    params[..., 0], params[..., 1] = 0.01, -0.02
    params[..., 2] = 0.3 + 0.001 * cols
    params[..., 3], params[..., 4], params[..., 5] = 100.0 + 0.05 * cols, 50.0 + 0.01 * cols, 2.0
    return params.astype(np.float32)


def row_inclinations(incl, height: int) -> np.ndarray:
    if isinstance(incl, tuple):
        lo, hi = incl
        return hi - (np.arange(height) + 0.5) / height * (hi - lo)  # row 0 = highest beam
    return incl[::-1]


def cast_lidar(laser: int, wall_x: float, pose_params: np.ndarray | None):
    """Range image (H, W, 4) of returns 1 and 2, labels (H, W, 2) of both, expected points."""
    height, width, ext, incl = LIDARS[laser]
    rows_incl = row_inclinations(incl, height)
    yaw_ext = np.arctan2(ext[1, 0], ext[0, 0])
    images = [np.zeros((height, width, 4), np.float32) for _ in range(2)]
    labels = [np.zeros((height, width, 2), np.int32) for _ in range(2)]
    expected: list[list[tuple]] = [[], []]
    for r in range(height):
        for c in range(width):
            az_sensor = np.pi * (1 - (2 * c + 1) / width) - yaw_ext
            d_sensor = np.array([np.cos(rows_incl[r]) * np.cos(az_sensor),
                                 np.cos(rows_incl[r]) * np.sin(az_sensor), np.sin(rows_incl[r])])
            sensor_to_frame = ext
            if pose_params is not None:
                p = pose_params[r, c].astype(np.float64)
                sensor_to_frame = np.linalg.inv(FRAME_POSE) @ pose_matrix(*p) @ ext
            origin = sensor_to_frame[:3, 3]
            direction = sensor_to_frame[:3, :3] @ d_sensor
            hits = []
            if direction[2] < 0:
                hits.append(((GROUND_Z - origin[2]) / direction[2], ROAD))
            if direction[0] > 0 and origin[0] < wall_x:
                hits.append(((wall_x - origin[0]) / direction[0], BUILDING))
            hits = sorted(h for h in hits if 0 < h[0] < 75)
            for ret, (rng, cls) in enumerate(hits[:2]):
                rng32 = np.float32(rng)
                intensity = np.float32(0.1 + 0.01 * (r * width + c) + ret)
                images[ret][r, c] = (rng32, intensity, 0.0, 0.0)
                semantic = 0 if c == UNDEFINED_COLUMN else cls
                labels[ret][r, c] = (7 + ret, semantic)
                point = origin + float(rng32) * direction
                expected[ret].append((r, c, point, np.tanh(intensity), semantic - 1 if laser == TOP else -1, cls))
    return images, labels, expected


def _list(values, typ):
    return pa.array(values, type=typ)


def _image_columns(prefix: str, field: str, images: list, value_type) -> dict:
    return {
        f"{prefix}.{field}.values": _list([None if im is None else im.reshape(-1).tolist() for im in images],
                                          pa.list_(value_type)),
        f"{prefix}.{field}.shape": _list([None if im is None else list(im.shape) for im in images],
                                         pa.list_(pa.int32(), 3)),
    }


def _keys(segment: str, times: list, lasers: list | None) -> dict:
    cols = {"key.segment_context_name": _list([segment] * len(times), pa.string()),
            "key.frame_timestamp_micros": _list(times, pa.int64())}
    if lasers is not None:
        cols["key.laser_name"] = _list(lasers, pa.int8())
    return cols


def write(split_dir: Path, component: str, segment: str, columns: dict) -> Path:
    path = Path(split_dir) / component / f"{segment}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def write_segment(split_dir: Path, segment: str, times: list[int], labelled: set[int]) -> dict:
    """Write the five components of one segment; returns {timestamp: expected frame arrays}."""
    split_dir = Path(split_dir)
    lidar_rows, seg_rows, pose_rows, expected = [], [], [], {}
    for index, ts in enumerate(times):
        params = pixel_pose_params(*LIDARS[TOP][:2])
        per_return = [[], []]
        for laser in (TOP, FRONT):
            images, labels, exp = cast_lidar(laser, WALL_X + index, params if laser == TOP else None)
            lidar_rows.append((ts, laser, images))
            if laser == TOP:
                pose_rows.append((ts, params))
                if ts in labelled:
                    seg_rows.append((ts, labels))
            for ret in range(2):
                per_return[ret].extend(exp[ret])
        rows = per_return[0] + per_return[1]
        expected[ts] = {
            "coord": np.array([e[2] for e in rows]), "strength": np.array([e[3] for e in rows]),
            "segment": np.array([e[4] for e in rows]), "surface": np.array([e[5] for e in rows]),
            "wall_x": WALL_X + index,
        }
    lidar = _keys(segment, [r[0] for r in lidar_rows], [r[1] for r in lidar_rows])
    for ret, field in enumerate(("range_image_return1", "range_image_return2")):
        lidar.update(_image_columns("[LiDARComponent]", field, [r[2][ret] for r in lidar_rows], pa.float32()))
    write(split_dir, "lidar", segment, lidar)
    seg = _keys(segment, [r[0] for r in seg_rows], [TOP] * len(seg_rows))
    for ret, field in enumerate(("range_image_return1", "range_image_return2")):
        seg.update(_image_columns("[LiDARSegmentationLabelComponent]", field, [r[1][ret] for r in seg_rows],
                                  pa.int32()))
    write(split_dir, "lidar_segmentation", segment, seg)
    pose = _keys(segment, [r[0] for r in pose_rows], [TOP] * len(pose_rows))
    pose.update(_image_columns("[LiDARPoseComponent]", "range_image_return1", [r[1] for r in pose_rows],
                               pa.float32()))
    write(split_dir, "lidar_pose", segment, pose)
    vehicle = _keys(segment, times, None)
    vehicle["[VehiclePoseComponent].world_from_vehicle.transform"] = _list(
        [FRAME_POSE.reshape(-1).tolist()] * len(times), pa.list_(pa.float64(), 16))
    write(split_dir, "vehicle_pose", segment, vehicle)
    calib = {"key.segment_context_name": _list([segment] * 2, pa.string()),
             "key.laser_name": _list([TOP, FRONT], pa.int8())}
    prefix = "[LiDARCalibrationComponent]"
    calib[f"{prefix}.extrinsic.transform"] = _list([LIDARS[k][2].reshape(-1).tolist() for k in (TOP, FRONT)],
                                                   pa.list_(pa.float64(), 16))
    incls = [LIDARS[k][3] for k in (TOP, FRONT)]
    calib[f"{prefix}.beam_inclination.min"] = _list([float(np.min(i)) for i in incls], pa.float64())
    calib[f"{prefix}.beam_inclination.max"] = _list([float(np.max(i)) for i in incls], pa.float64())
    calib[f"{prefix}.beam_inclination.values"] = _list(
        [None if isinstance(i, tuple) else i.tolist() for i in incls], pa.list_(pa.float64()))
    write(split_dir, "lidar_calibration", segment, calib)
    return expected
