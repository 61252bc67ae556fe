"""Waymo Open Dataset v2 (parquet components) read with pyarrow, no TensorFlow (spec F).

One segment of one split is five parquet files, one per component folder (spec F1):
``lidar`` (range images, both returns, every lidar), ``lidar_calibration`` (extrinsic and beam
inclinations per lidar), ``lidar_pose`` (the per-pixel vehicle pose of the top lidar),
``vehicle_pose`` (the frame's vehicle pose) and ``lidar_segmentation`` (semantic labels of the top
lidar, labelled frames only). :func:`read_segment_frames` turns the labelled frames of a segment
into vehicle-frame points with the conventions of the preprocessed layout (spec C1): every lidar,
return 1 of all lidars then return 2, pixels with range > 0, strength ``tanh(intensity)``, label
``semantic class - 1`` on the top lidar and -1 on the others. The geometry (spec F2-F4) is computed
in float64 from the stored values. Every read error names the file and, where one is at fault,
the column.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..validation import CorruptFileError, DatasetLayoutError

KEY_TIME = "key.frame_timestamp_micros"
KEY_LASER = "key.laser_name"
TOP_LASER = 1  # LaserName: TOP 1, FRONT 2, SIDE_LEFT 3, SIDE_RIGHT 4, REAR 5
RETURNS = ("range_image_return1", "range_image_return2")

# component folder -> the column prefix of its fields
LIDAR = "lidar"
CALIBRATION = "lidar_calibration"
PIXEL_POSE = "lidar_pose"
VEHICLE_POSE = "vehicle_pose"
SEGMENTATION = "lidar_segmentation"
CAMERA_IMAGE = "camera_image"  # read by train.data.lidar.waymo_v2_cameras
CAMERA_CALIBRATION = "camera_calibration"
PREFIX = {
    LIDAR: "[LiDARComponent]",
    CALIBRATION: "[LiDARCalibrationComponent]",
    PIXEL_POSE: "[LiDARPoseComponent]",
    VEHICLE_POSE: "[VehiclePoseComponent]",
    SEGMENTATION: "[LiDARSegmentationLabelComponent]",
    CAMERA_IMAGE: "[CameraImageComponent]",
    CAMERA_CALIBRATION: "[CameraCalibrationComponent]",
}
# channels of the range-image-shaped fields: (H, W, C)
LIDAR_CHANNELS = 4  # range, intensity, elongation, in a no-label zone
POSE_CHANNELS = 6  # roll, pitch, yaw, x, y, z of world_from_vehicle
LABEL_CHANNELS = 2  # instance id, semantic class
_BATCH_ROWS = 8  # rows decoded at a time: bounds memory on files holding one large row group
_READ_BUFFER = 8 << 20  # bytes of a column chunk read at a time


def column(component: str, field: str) -> str:
    """The official column name of ``field`` of ``component``, e.g. ``[LiDARComponent].x``."""
    return f"{PREFIX[component]}.{field}"


def component_path(split_dir: Path, component: str, segment: str) -> Path:
    """``<split>/<component>/<segment>.parquet``, the v2 download's layout."""
    return Path(split_dir) / component / f"{segment}.parquet"


@dataclass(frozen=True)
class LidarCalibration:
    """One lidar's calibration: ``extrinsic`` (4,4) lidar -> vehicle, beam inclinations in radians
    as ``(min, max)`` (uniform) or ``per_beam`` (H,) ascending, as stored."""

    extrinsic: np.ndarray
    inclination_min: float
    inclination_max: float
    per_beam: np.ndarray | None


@dataclass(frozen=True)
class Frame:
    """One converted frame: points in the vehicle frame at ``timestamp``."""

    timestamp: int
    coord: np.ndarray  # (n, 3) float32
    strength: np.ndarray  # (n, 1) float32, tanh(intensity)
    segment: np.ndarray  # (n,) int32, semantic class - 1 (-1 undefined / unlabelled lidar)
    pose: np.ndarray  # (4, 4) float64, world_from_vehicle


# --- geometry (spec F2-F4) ---------------------------------------------------------------------

def row_inclinations(calib: LidarCalibration, height: int) -> np.ndarray:
    """Inclination of each range image row, row 0 first (row 0 is the highest beam, spec F2)."""
    if calib.per_beam is not None:
        ascending = calib.per_beam
    else:
        ascending = calib.inclination_min + (np.arange(height) + 0.5) / height * (
            calib.inclination_max - calib.inclination_min)
    return ascending[::-1]


def column_azimuths(extrinsic: np.ndarray, width: int) -> np.ndarray:
    """Azimuth in the lidar frame of each range image column (spec F2): column 0 looks backwards
    (vehicle-frame azimuth just below +pi), azimuth decreases left to right, and the extrinsic's
    yaw is subtracted so that every lidar's columns share the vehicle-frame azimuths."""
    yaw = np.arctan2(extrinsic[1, 0], extrinsic[0, 0])
    return np.pi * (1.0 - (2.0 * np.arange(width) + 1.0) / width) - yaw


def euler_rotation(roll: np.ndarray, pitch: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation ``Rz(yaw) Ry(pitch) Rx(roll)`` (3-2-1 Euler angles, spec F3)."""
    cr, sr = np.cos(roll), np.sin(roll)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    rot = np.empty(np.shape(roll) + (3, 3))
    rot[..., 0, 0] = cy * cp
    rot[..., 0, 1] = cy * sp * sr - sy * cr
    rot[..., 0, 2] = cy * sp * cr + sy * sr
    rot[..., 1, 0] = sy * cp
    rot[..., 1, 1] = sy * sp * sr + cy * cr
    rot[..., 1, 2] = sy * sp * cr - cy * sr
    rot[..., 2, 0] = -sp
    rot[..., 2, 1] = cp * sr
    rot[..., 2, 2] = cp * cr
    return rot


def range_image_points(
    range_image: np.ndarray, calib: LidarCalibration,
    pixel_pose: np.ndarray | None = None, world_from_vehicle: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Vehicle-frame points of the pixels with range > 0 of one (H, W) range image.

    Returns ``(mask, xyz)``: mask (H, W) of the kept pixels, xyz (n, 3) float64 in row-major
    pixel order. With ``pixel_pose`` (H, W, 6) each point is first carried to the world by the
    vehicle pose at its own capture time, then back into the vehicle frame of
    ``world_from_vehicle`` (the frame's pose), which undoes the motion during the sweep (spec F3).
    """
    if (pixel_pose is None) != (world_from_vehicle is None):
        raise ValueError("range_image_points: pass pixel_pose and world_from_vehicle together, or neither")
    height, width = range_image.shape
    mask = range_image > 0
    rows, cols = np.nonzero(mask)
    rng = range_image[rows, cols].astype(np.float64)
    incl = row_inclinations(calib, height)[rows]
    azim = column_azimuths(calib.extrinsic, width)[cols]
    cos_incl = np.cos(incl)
    sensor = np.stack([rng * cos_incl * np.cos(azim), rng * cos_incl * np.sin(azim), rng * np.sin(incl)], 1)
    xyz = sensor @ calib.extrinsic[:3, :3].T + calib.extrinsic[:3, 3]
    if pixel_pose is not None:
        pose = pixel_pose[rows, cols].astype(np.float64)
        rot = euler_rotation(pose[:, 0], pose[:, 1], pose[:, 2])
        world = np.einsum("nij,nj->ni", rot, xyz) + pose[:, 3:6]
        rot_f, t_f = world_from_vehicle[:3, :3], world_from_vehicle[:3, 3]
        xyz = (world - t_f) @ rot_f  # rot_f^T (world - t_f), row-vector form
    return mask, xyz


# --- parquet reading (spec F1) -----------------------------------------------------------------

class ComponentFile:
    """One component file of one segment, opened with its needed columns checked.

    Errors raised here and through :meth:`error` name the file, and the column where one is at
    fault, and say to download the file again.
    """

    def __init__(self, split_dir: Path, component: str, segment: str, fields: list[str]) -> None:
        """``fields``: key columns by full name, the component's own columns without the prefix."""
        self.component = component
        self.fields = self._full_names(fields)
        self.path = component_path(split_dir, component, segment)
        if not self.path.is_file():
            raise DatasetLayoutError(
                f"waymo v2 component file {str(self.path)!r} is missing (component {component!r} of "
                f"segment {segment!r}); download the {component!r} folder of this split of the Waymo "
                f"Open Dataset v2 perception data next to the others"
            )
        try:
            # column chunks streamed: a lidar file may be one large row group, and reading it whole
            # first cost 0.5 GB more peak memory per worker (60-frame segment) for no measured speed
            self.pf = pq.ParquetFile(self.path, pre_buffer=False, buffer_size=_READ_BUFFER)
        except (pa.ArrowException, OSError) as err:
            raise CorruptFileError(
                f"waymo v2 component file {str(self.path)!r} cannot be read as parquet ({err}); the file "
                f"is truncated or corrupt: download it again"
            ) from err
        self._require_fields()

    def _full_names(self, fields: list[str]) -> list[str]:
        """Key columns as given, the component's own with its prefix."""
        return [f if f.startswith("key.") else column(self.component, f) for f in fields]

    def _require_fields(self) -> None:
        """CorruptFileError naming the columns of ``fields`` the file's schema lacks."""
        names = set(self.pf.schema_arrow.names)
        missing = [f for f in self.fields if f not in names]
        if missing:
            raise CorruptFileError(
                f"waymo v2 component file {str(self.path)!r} has no column {missing[0]!r}"
                + (f" (nor {missing[1:]})" if len(missing) > 1 else "")
                + f"; it is not a {self.component!r} component of the v2 perception data: download it again"
            )

    def widened(self, fields: list[str]) -> ComponentFile:
        """The same open file reading ``fields`` too (named as in ``__init__``), its footer not read
        again; refused as ``__init__`` refuses a missing column."""
        wider = copy.copy(self)
        wider.fields = self.fields + self._full_names(fields)
        wider._require_fields()
        return wider

    def error(self, problem: str, row: dict | None = None) -> CorruptFileError:
        keys = "" if row is None else " (row " + ", ".join(
            f"{k}={row[k].as_py()!r}" for k in (KEY_TIME, KEY_LASER) if k in row) + ")"
        return CorruptFileError(f"waymo v2 component file {str(self.path)!r}{keys}: {problem}; download it again")

    def rows(self, keep=None) -> Iterator[dict]:
        """Rows as dicts of pyarrow scalars by full column name, ``_BATCH_ROWS`` decoded at a time.

        ``keep(timestamp, laser)`` (when given) selects rows from the key columns first: a row
        group with no wanted row is never decoded, and unwanted rows of the others not converted.
        """
        keys = [k for k in (KEY_TIME, KEY_LASER) if k in self.fields]
        try:
            for group in range(self.pf.num_row_groups):
                wanted = None
                if keep is not None:
                    key_table = self.pf.read_row_group(group, columns=keys)
                    times = key_table.column(KEY_TIME).to_pylist()
                    lasers = key_table.column(KEY_LASER).to_pylist() if KEY_LASER in keys else [None] * len(times)
                    wanted = [keep(t, laser) for t, laser in zip(times, lasers)]
                    if not any(wanted):
                        continue
                first = 0
                for batch in self.pf.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group], columns=self.fields):
                    cols = {name: batch.column(name) for name in self.fields}
                    for i in range(batch.num_rows):
                        if wanted is None or wanted[first + i]:
                            yield {name: cols[name][i] for name in self.fields}
                    first += batch.num_rows
        except (pa.ArrowException, OSError) as err:
            raise self.error(f"cannot decode the parquet data ({err}); the file is truncated or corrupt") from err

    def values(self, row: dict, field: str, dtype: type, size: int | None = None) -> np.ndarray | None:
        """The list values of ``field`` in ``row`` as a numpy array (None when null)."""
        scalar = row[column(self.component, field)]
        if not scalar.is_valid:
            return None
        values = np.asarray(scalar.values.to_numpy(zero_copy_only=False), dtype=dtype)
        if size is not None and values.size != size:
            raise self.error(f"column {column(self.component, field)!r} holds {values.size} values, "
                             f"expected {size}", row)
        return values

    def scalar(self, row: dict, field: str) -> float:
        """A non-null float field of ``row``."""
        value = row[column(self.component, field)]
        if not value.is_valid:
            raise self.error(f"column {column(self.component, field)!r} is null", row)
        return float(value.as_py())

    def image(self, row: dict, field: str, channels: int, dtype: type) -> np.ndarray | None:
        """The (H, W, channels) image of ``<field>.values`` and ``<field>.shape`` (None if null)."""
        shape = self.values(row, f"{field}.shape", np.int64)
        values = self.values(row, f"{field}.values", dtype)
        values_col = column(self.component, f"{field}.values")
        if shape is None or values is None:
            if (shape is None) != (values is None):
                raise self.error(f"exactly one of {values_col!r} and its shape column is null", row)
            return None
        if shape.size != 3 or shape[2] != channels or (shape <= 0).any() or values.size != int(np.prod(shape)):
            raise self.error(
                f"column {values_col!r} holds {values.size} values for the shape {shape.tolist()} of "
                f"{column(self.component, field + '.shape')!r}, expected (H, W, {channels}) with "
                f"H*W*{channels} values", row)
        return values.reshape(shape)


def read_calibrations(split_dir: Path, segment: str) -> dict[int, LidarCalibration]:
    """Calibration of every lidar of ``segment``, by laser name."""
    f = ComponentFile(split_dir, CALIBRATION, segment, [KEY_LASER, "extrinsic.transform", "beam_inclination.min",
                                                        "beam_inclination.max", "beam_inclination.values"])
    calibs = {}
    for row in f.rows():
        extrinsic = f.values(row, "extrinsic.transform", np.float64, 16)
        if extrinsic is None:
            raise f.error(f"column {column(CALIBRATION, 'extrinsic.transform')!r} is null", row)
        per_beam = f.values(row, "beam_inclination.values", np.float64)
        calibs[row[KEY_LASER].as_py()] = LidarCalibration(
            extrinsic.reshape(4, 4), f.scalar(row, "beam_inclination.min"), f.scalar(row, "beam_inclination.max"),
            per_beam if per_beam is not None and per_beam.size else None)
    if TOP_LASER not in calibs:
        raise f.error(f"no row for the top lidar ({KEY_LASER} = {TOP_LASER})")
    return calibs


def labelled_timestamps(split_dir: Path, segment: str) -> list[int]:
    """Timestamps of the frames whose top lidar carries segmentation labels, sorted."""
    f = ComponentFile(split_dir, SEGMENTATION, segment, [KEY_TIME, KEY_LASER])
    return sorted({row[KEY_TIME].as_py() for row in f.rows() if row[KEY_LASER].as_py() == TOP_LASER})


def frame_timestamps(split_dir: Path, segment: str) -> list[int]:
    """Timestamps of every frame of ``segment`` (rows of its vehicle pose component), sorted."""
    return sorted(row[KEY_TIME].as_py() for row in ComponentFile(split_dir, VEHICLE_POSE, segment, [KEY_TIME]).rows())


def frame_count(split_dir: Path, segment: str) -> int:
    """Number of frames of ``segment`` (rows of its vehicle pose component)."""
    return ComponentFile(split_dir, VEHICLE_POSE, segment, [KEY_TIME]).pf.metadata.num_rows


def read_segment_frames(split_dir: Path, segment: str, timestamps: list[int], labelled: bool = True) -> Iterator[Frame]:
    """Convert the frames ``timestamps`` of ``segment`` (spec F5), yielding them as they complete;
    with ``labelled`` False the segmentation component is not read (label -1 everywhere; decision 57).

    A frame is complete when the lidar file has yielded a row for every calibrated lidar; a wanted
    frame still incomplete at the end of the file is an error naming the file and the lidars.
    """
    split_dir = Path(split_dir)
    wanted = set(timestamps)
    calibs = read_calibrations(split_dir, segment)
    poses = _read_vehicle_poses(split_dir, segment, wanted)
    pixel_poses = _read_top_images(split_dir, PIXEL_POSE, segment, wanted, RETURNS[:1], POSE_CHANNELS, np.float32)
    labels = (_read_top_images(split_dir, SEGMENTATION, segment, wanted, RETURNS, LABEL_CHANNELS, np.int32)
              if labelled else dict.fromkeys(wanted, [None] * len(RETURNS)))
    f = ComponentFile(split_dir, LIDAR, segment, [KEY_TIME, KEY_LASER] + [f"{r}.{p}" for r in RETURNS
                                                                           for p in ("values", "shape")])
    pending: dict[int, dict[int, list[np.ndarray | None]]] = {}
    for row in f.rows(keep=lambda t, laser: t in wanted):
        ts, laser = row[KEY_TIME].as_py(), row[KEY_LASER].as_py()
        if laser not in calibs:
            raise f.error(f"lidar {laser} has no calibration in the {CALIBRATION!r} component (it lists "
                          f"{sorted(calibs)})", row)
        pending.setdefault(ts, {})[laser] = [f.image(row, r, LIDAR_CHANNELS, np.float32) for r in RETURNS]
        if len(pending[ts]) == len(calibs):
            yield _assemble(f, ts, pending.pop(ts), calibs, poses[ts], pixel_poses[ts][0], labels[ts])
            wanted.discard(ts)
    if wanted:
        ts = min(wanted)
        raise f.error(f"it lacks range images of frame {KEY_TIME}={ts}: it has lidars "
                      f"{sorted(pending.get(ts, {}))}, the calibration lists {sorted(calibs)} (and "
                      f"{len(wanted) - 1} more frame(s) are incomplete)")


def _read_vehicle_poses(split_dir: Path, segment: str, wanted: set[int]) -> dict[int, np.ndarray]:
    f = ComponentFile(split_dir, VEHICLE_POSE, segment, [KEY_TIME, "world_from_vehicle.transform"])
    poses = {}
    for row in f.rows(keep=lambda t, _: t in wanted):
        pose = f.values(row, "world_from_vehicle.transform", np.float64, 16)
        if pose is None:
            raise f.error(f"column {column(VEHICLE_POSE, 'world_from_vehicle.transform')!r} is null", row)
        poses[row[KEY_TIME].as_py()] = pose.reshape(4, 4)
    _require_frames(f, wanted, poses)
    return poses


def _read_top_images(split_dir: Path, component: str, segment: str, wanted: set[int], fields: tuple[str, ...],
                     channels: int, dtype: type) -> dict[int, list[np.ndarray | None]]:
    """Per wanted frame, the top lidar's images ``fields`` of ``component`` (None where null)."""
    f = ComponentFile(split_dir, component, segment, [KEY_TIME, KEY_LASER] + [f"{n}.{p}" for n in fields
                                                                               for p in ("values", "shape")])
    out = {}
    for row in f.rows(keep=lambda t, laser: t in wanted and laser == TOP_LASER):
        out[row[KEY_TIME].as_py()] = [f.image(row, n, channels, dtype) for n in fields]
        if out[row[KEY_TIME].as_py()][0] is None:
            raise f.error(f"column {column(component, fields[0] + '.values')!r} is null for the top lidar", row)
    _require_frames(f, wanted, out)
    return out


def _require_frames(f: ComponentFile, wanted: set[int], found: dict) -> None:
    absent = sorted(wanted - found.keys())
    if absent:
        raise f.error(f"no row for the labelled frame(s) {absent[:3]} (of {len(absent)}); the segment's "
                      f"components do not match")


def _assemble(f: ComponentFile, ts: int, images: dict[int, list], calibs: dict[int, LidarCalibration],
              pose: np.ndarray, pixel_pose: np.ndarray, labels: list[np.ndarray | None]) -> Frame:
    """Points of every lidar of one frame (lidar file ``f``) in the preprocessed layout's order (spec F5)."""
    coords, strengths, segments = [], [], []
    for ret in range(len(RETURNS)):
        for laser in sorted(images):
            image = images[laser][ret]
            if image is None:
                continue
            top = laser == TOP_LASER
            label = labels[ret] if top else None
            for what, other in (("per-pixel pose", pixel_pose if top else None), (f"return {ret + 1} labels", label)):
                if other is not None and other.shape[:2] != image.shape[:2]:
                    raise f.error(f"frame {KEY_TIME}={ts}: the top lidar's {what} are {other.shape[:2]} but its "
                                  f"range image is {image.shape[:2]}; the components do not match")
            calib = calibs[laser]
            if calib.per_beam is not None and calib.per_beam.size != image.shape[0]:
                raise f.error(f"frame {KEY_TIME}={ts}: lidar {laser}'s range image has {image.shape[0]} rows but "
                              f"its calibration column {column(CALIBRATION, 'beam_inclination.values')!r} holds "
                              f"{calib.per_beam.size} beams; the components do not match")
            mask, xyz = range_image_points(image[..., 0], calib, pixel_pose if top else None, pose if top else None)
            coords.append(xyz)
            strengths.append(np.tanh(image[..., 1][mask]))
            if label is not None:
                segments.append(label[..., 1][mask].astype(np.int32) - 1)
            else:
                segments.append(np.full(xyz.shape[0], -1, dtype=np.int32))
    if not coords:
        raise f.error(f"frame {KEY_TIME}={ts} has no range image in any of its rows")
    return Frame(
        timestamp=ts,
        coord=np.concatenate(coords).astype(np.float32).reshape(-1, 3),
        strength=np.concatenate(strengths).astype(np.float32).reshape(-1, 1),
        segment=np.concatenate(segments),
        pose=pose,
    )
