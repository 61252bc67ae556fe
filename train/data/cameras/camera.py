"""Calibrated cameras of a scan: the pinhole projection of LiDAR points into images (decision 58), with
OpenCV's lens distortion where a camera has one (decision 63) and a rolling shutter where its image
has one (decision 64).

Every data set that ships images describes each scan's cameras as :class:`Camera` values, from
its own calibration files, through :meth:`train.data.base.PointCloudDataset.cameras`:

* the **camera frame** is OpenCV's: x right, y down, z forward along the optical axis (the depth);
* ``scan_to_camera`` (4 x 4, rigid) takes a point in the frame the scan's coordinates are loaded in
  (``sample["coord"]`` before any transform; for a scan read with a per-scan origin, decision 53,
  the coordinates as loaded, origin included) to the camera frame. Each data set folds its own chain
  into it (SemanticKITTI: ``P2``'s offset after ``Tr``; nuScenes: LiDAR -> ego at the sweep's time
  -> global -> ego at the image's time -> camera; Waymo and the synthetic set: vehicle -> camera);
* ``intrinsics`` K (3 x 3): pixel ``u = fx x / z + s y / z + cx``, ``v = fy y / z + cy`` with integer
  ``(u, v)`` at pixel centres, so a point falls in pixel column ``floor(u + 0.5)``, row
  ``floor(v + 0.5)``; a point is seen when its depth is above ``min_depth`` and that pixel lies in
  the ``width x height`` image. The time a line's exposure takes is not modelled (what each data
  set leaves out is said where its cameras are read);
* ``distortion`` (optional, decision 63): OpenCV's radial-tangential lens model ``(k1, k2, p1, p2,
  k3)``. With normalised ``x = X / Z``, ``y = Y / Z``, ``r2 = x^2 + y^2``:
  ``x_d = x (1 + k1 r2 + k2 r2^2 + k3 r2^3) + 2 p1 x y + p2 (r2 + 2 x^2)``,
  ``y_d = y (1 + k1 r2 + k2 r2^2 + k3 r2^3) + p1 (r2 + 2 y^2) + 2 p2 x y``, then K takes
  ``(x_d, y_d)`` to the pixel. The radial map ``r -> r (1 + k1 r^2 + k2 r^4 + k3 r^6)`` folds back
  beyond the first radius where its derivative ``1 + 3 k1 r^2 + 5 k2 r^4 + 7 k3 r^6`` is zero
  (:func:`fold_radius2`): a point at or beyond it is not seen (it would land inside the image, on
  the pixel of a ray nearer the axis). None (SemanticKITTI's rectified images, nuScenes, the
  synthetic rig) is the pinhole alone, computed as before;
* ``rolling_shutter`` (optional, decision 64, :mod:`train.data.cameras.rolling_shutter`): the image's lines
  are read one after the other while the camera moves; a point takes the pixel whose own exposure
  time sees it there, and a depth at that time (NaN where the iteration finds no such time). None
  (every data set but Waymo v2 with its readout fields) projects with the one pose, as before;
* ``image``: the image file, as a POSIX path relative to the data set's root: per-image model
  outputs are found under a predictions folder that mirrors these paths (``train.image_labels``).

The preprocessed Waymo layout (the synthetic set, and Waymo v2 converted by ``train.data.lidar.waymo_convert``)
keeps a frame's cameras in ``<frame>/cameras.json``, read and written here
(:func:`read_camera_list`, :func:`write_camera_list`), image paths relative to the data set's root.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .rolling_shutter import DIRECTIONS, RollingShutter, solve_exposure
from ..validation import BadScanError, CorruptFileError

CAMERA_LIST = "cameras.json"
ROTATION_TOLERANCE = 1e-4  # max |R^T R - I| and |det R - 1| a calibration's rotation may show
DEFAULT_MIN_DEPTH = 1.0  # metres: points nearer the camera than this are not seen (the rule)
DISTORTION_TERMS = ("k1", "k2", "p1", "p2", "k3")  # OpenCV's order of the lens coefficients (decision 63)
ROLLING_SHUTTER_KEYS = ("direction", "readout", "linear_velocity", "angular_velocity")  # decision 64


class CalibrationError(ValueError):
    """A camera calibration that cannot be used (not a rotation, a singular K, a bad size)."""


class MissingImageError(BadScanError):
    """A camera image that a scan's calibration names is not on disk."""


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header (the pixels are not decoded);
    a missing file or one that is no image is refused with one line naming it."""
    try:
        with Image.open(path) as image:
            return int(image.width), int(image.height)
    except FileNotFoundError as err:
        raise MissingImageError(f"{path}: camera image is missing") from err
    except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise CorruptFileError(f"{path}: not a readable image ({err})") from err


def fold_radius2(distortion: np.ndarray) -> float:
    """The squared normalised radius ``s = r^2`` at which the radial map ``r -> r (1 + k1 r^2 + k2 r^4
    + k3 r^6)`` stops increasing: the smallest positive root of its derivative ``1 + 3 k1 s + 5 k2 s^2
    + 7 k3 s^3`` (a cubic in s, solved in closed form by ``np.roots``); inf when it has none, as for
    zero coefficients or a pincushion lens (decision 63). ``distortion`` is ``(k1, k2, p1, p2, k3)``."""
    k1, k2, _, _, k3 = (float(c) for c in distortion)
    roots = np.roots([7.0 * k3, 5.0 * k2, 3.0 * k1, 1.0])  # leading zeros are dropped: a lower degree
    real = roots.real[(np.abs(roots.imag) <= 1e-6 * np.abs(roots)) & (roots.real > 0)]
    return float(real.min()) if real.size else float("inf")


@dataclass(frozen=True, eq=False)
class Camera:
    """One calibrated image of a scan (see the module docstring for the conventions)."""

    name: str
    image: str
    width: int
    height: int
    intrinsics: np.ndarray
    scan_to_camera: np.ndarray
    distortion: np.ndarray | None = None  # (k1, k2, p1, p2, k3); None: an undistorted image
    rolling_shutter: RollingShutter | None = None  # None: one pose for the whole image

    @cached_property
    def fold_radius2(self) -> float:
        """:func:`fold_radius2` of the lens (inf without distortion), computed once per camera."""
        return fold_radius2(self.distortion) if self.distortion is not None else float("inf")

    def points_in_camera(self, xyz: np.ndarray) -> np.ndarray:
        """(n, 3) float64: points of the scan's frame in the camera frame."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        return xyz @ self.scan_to_camera[:3, :3].T + self.scan_to_camera[:3, 3]

    def project(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(uv, depth)``: (n, 2) float64 pixel coordinates (integer at pixel centres; undefined where
        ``depth <= 0``; NaN where the lens folds back, decision 63) and (n,) depth along the optical
        axis in metres. With a rolling shutter (decision 64) both are those at the time the point's
        pixel is exposed; uv is NaN where the point is not seen, and depth NaN where that time is not
        found (the point is unsolved)."""
        cam = self.points_in_camera(xyz)
        if self.rolling_shutter is not None:
            return solve_exposure(self.rolling_shutter, cam, self.width, self.height, self._image, self._image_rate)
        return self._image(cam), cam[:, 2]

    def _image(self, cam: np.ndarray) -> np.ndarray:
        """(n, 2) pixel coordinates of camera-frame points ``cam`` (the module docstring's model)."""
        depth = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uvw = cam @ self.intrinsics.T
            uv = uvw[:, :2] / depth[:, None]
            if self.distortion is not None:
                self._distort(uv, cam[:, 0] / depth, cam[:, 1] / depth)
        return uv

    def _image_rate(self, cam: np.ndarray, rate: np.ndarray) -> np.ndarray:
        """(n, 2): the rate of change of the pixels of camera-frame points ``cam`` moving at ``rate``
        (n, 3): the derivative of the normalised coordinates, through the lens's terms, times K."""
        x, y = cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]
        dx, dy = (rate[:, 0] - x * rate[:, 2]) / cam[:, 2], (rate[:, 1] - y * rate[:, 2]) / cam[:, 2]
        if self.distortion is not None:
            k1, k2, p1, p2, k3 = self.distortion
            r2 = x * x + y * y
            radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
            dr2 = 2.0 * (x * dx + y * dy)
            d_radial = dr2 * (k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2))
            dxy = dx * y + x * dy
            dx, dy = (dx * radial + x * d_radial + 2.0 * p1 * dxy + p2 * (dr2 + 4.0 * x * dx),
                      dy * radial + y * d_radial + p1 * (dr2 + 4.0 * y * dy) + 2.0 * p2 * dxy)
        k = self.intrinsics
        return np.stack([k[0, 0] * dx + k[0, 1] * dy, k[1, 1] * dy], axis=1)

    def _distort(self, uv: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
        """Moves the pinhole pixels ``uv`` of the normalised points ``(x, y)`` in place by the lens: K's
        upper 2 x 2 applied to ``(x_d - x, y_d - y)`` (module docstring; zero coefficients move
        nothing, bit for bit); NaN at and beyond the fold radius."""
        k1, k2, p1, p2, k3 = self.distortion
        xy = x * y
        r2 = x * x + y * y
        radial = r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = x * radial + 2.0 * p1 * xy + p2 * (r2 + 2.0 * x * x)
        dy = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * xy
        k = self.intrinsics
        uv[:, 0] += k[0, 0] * dx + k[0, 1] * dy
        uv[:, 1] += k[1, 1] * dy
        uv[~(r2 < self.fold_radius2)] = np.nan

    def pixels(self, xyz: np.ndarray, min_depth: float = DEFAULT_MIN_DEPTH) -> tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray]:
        """``(rows, cols, depth)``, each (n,): the pixel row and column (int64) of every point the
        camera sees (depth above ``min_depth``, inside the lens's fold radius, pixel inside the image)
        and its depth in metres (float64); -1, -1 and NaN for the points it does not see. ``min_depth``
        may not be negative: a point behind the camera projects through the centre onto a pixel of
        the image too."""
        return self.seen_pixels(*self.project(xyz), min_depth)

    def seen_pixels(self, uv: np.ndarray, depth: np.ndarray, min_depth: float = DEFAULT_MIN_DEPTH
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`pixels` from the outputs ``(uv, depth)`` of :meth:`project`."""
        if not min_depth >= 0:
            raise ValueError(f"camera {self.name!r}: min_depth must be >= 0 metres, got {min_depth}")
        with np.errstate(invalid="ignore"):
            cols = np.floor(uv[:, 0] + 0.5)
            rows = np.floor(uv[:, 1] + 0.5)
            seen = ((depth > min_depth) & (cols >= 0) & (cols < self.width) & (rows >= 0)
                    & (rows < self.height))
        rows = np.where(seen, rows, -1).astype(np.int64)
        cols = np.where(seen, cols, -1).astype(np.int64)
        return rows, cols, np.where(seen, depth, np.nan)


def checked_camera(name: str, image: str, width: int, height: int, intrinsics: Any, scan_to_camera: Any,
                   source: str, distortion: Any = None, rolling_shutter: Any = None) -> Camera:
    """A :class:`Camera` from raw values, refused with one line naming ``source`` (the calibration's
    file) when the size is not positive, K is not an upper-triangular pinhole matrix with positive
    focal lengths, ``scan_to_camera``'s rotation is not a rotation, ``distortion`` (None: none) is
    not 5 finite numbers ``(k1, k2, p1, p2, k3)``, or ``rolling_shutter`` (None: none) is not a
    mapping of :data:`ROLLING_SHUTTER_KEYS` with a known direction, finite times ending no earlier
    than they start and finite 3-vectors."""
    if isinstance(width, bool) or isinstance(height, bool) or int(width) != width or int(height) != height \
            or width < 1 or height < 1:
        raise CalibrationError(f"{source}: camera {name!r} has image size {width} x {height}; it needs positive "
                               "integers")
    k = np.asarray(intrinsics, dtype=np.float64)
    t = np.asarray(scan_to_camera, dtype=np.float64)
    if k.shape != (3, 3) or not np.isfinite(k).all():
        raise CalibrationError(f"{source}: camera {name!r} intrinsics must be a finite 3 x 3 matrix, got shape "
                               f"{k.shape}")
    if not (k[0, 0] > 0 and k[1, 1] > 0 and k[1, 0] == 0 and k[2, 0] == 0 and k[2, 1] == 0
            and np.isclose(k[2, 2], 1.0)):
        raise CalibrationError(f"{source}: camera {name!r} intrinsics are not a pinhole matrix "
                               f"[[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0: {k.tolist()}")
    if t.shape == (3, 4):
        t = np.vstack([t, [0.0, 0.0, 0.0, 1.0]])
    if t.shape != (4, 4) or not np.isfinite(t).all() or not np.allclose(t[3], [0, 0, 0, 1]):
        raise CalibrationError(f"{source}: camera {name!r} extrinsics must be a finite 4 x 4 rigid transform "
                               f"(last row 0 0 0 1), got {t.tolist()}")
    r = t[:3, :3]
    off = float(np.abs(r.T @ r - np.eye(3)).max())
    det = float(np.linalg.det(r))
    if off > ROTATION_TOLERANCE or abs(det - 1.0) > ROTATION_TOLERANCE:
        raise CalibrationError(f"{source}: camera {name!r} extrinsic rotation is not a rotation (|R^T R - I| = "
                               f"{off:.2e}, det R = {det:.6f}; tolerance {ROTATION_TOLERANCE:g})")
    d = None if distortion is None else _checked_distortion(name, distortion, source)
    shutter = None if rolling_shutter is None else _checked_rolling_shutter(name, rolling_shutter, source)
    for array in (k, t, d) + ((shutter.readout, shutter.linear_velocity, shutter.angular_velocity) if shutter else ()):
        if array is not None:
            array.setflags(write=False)
    return Camera(name, str(image), int(width), int(height), k, t, d, shutter)


def _checked_distortion(name: str, distortion: Any, source: str) -> np.ndarray:
    try:
        d = np.asarray(distortion, dtype=np.float64)
    except (TypeError, ValueError):
        d = None
    if d is None or d.shape != (len(DISTORTION_TERMS),) or not np.isfinite(d).all():
        got = d.tolist() if d is not None else " ".join(repr(distortion).split())
        raise CalibrationError(f"{source}: camera {name!r} distortion must be {len(DISTORTION_TERMS)} finite numbers "
                               f"({', '.join(DISTORTION_TERMS)}), got {got}")
    return d


def _checked_rolling_shutter(name: str, value: Any, source: str) -> RollingShutter:
    problem = None
    if not isinstance(value, dict) or set(value) != set(ROLLING_SHUTTER_KEYS):
        problem = f"a mapping of {', '.join(ROLLING_SHUTTER_KEYS)}"
    elif value["direction"] not in DIRECTIONS:
        problem = f"direction one of {', '.join(DIRECTIONS)}"
    else:
        arrays = {}
        for key, size in zip(ROLLING_SHUTTER_KEYS[1:], (2, 3, 3)):
            try:
                arrays[key] = np.asarray(value[key], dtype=np.float64)
            except (TypeError, ValueError):
                arrays[key] = np.full(0, np.nan)
            if arrays[key].shape != (size,) or not np.isfinite(arrays[key]).all():
                problem = f"{key} {size} finite numbers"
        if problem is None and not arrays["readout"][1] >= arrays["readout"][0]:
            problem = "a readout that ends no earlier than it starts"
    if problem is not None:
        got = " ".join(repr(value).split())
        raise CalibrationError(f"{source}: camera {name!r} rolling shutter needs {problem}, got {got}")
    return RollingShutter(value["direction"], *(arrays[key] for key in ROLLING_SHUTTER_KEYS[1:]))


def camera_entry(camera: Camera) -> dict[str, Any]:
    """One camera as the plain values of ``cameras.json`` (``distortion`` and ``rolling_shutter`` only
    when it has them)."""
    entry = {"name": camera.name, "image": camera.image, "width": camera.width, "height": camera.height,
             "intrinsics": camera.intrinsics.tolist(), "scan_to_camera": camera.scan_to_camera.tolist()}
    if camera.distortion is not None:
        entry["distortion"] = camera.distortion.tolist()
    if camera.rolling_shutter is not None:
        shutter = camera.rolling_shutter
        entry["rolling_shutter"] = {"direction": shutter.direction, "readout": shutter.readout.tolist(),
                                    "linear_velocity": shutter.linear_velocity.tolist(),
                                    "angular_velocity": shutter.angular_velocity.tolist()}
    return entry


def write_camera_list(frame_dir: Path, cameras: list[Camera]) -> Path:
    """``<frame_dir>/cameras.json`` describing ``cameras`` (the preprocessed Waymo layout)."""
    path = Path(frame_dir) / CAMERA_LIST
    path.write_text(json.dumps({"cameras": [camera_entry(c) for c in cameras]}, indent=1))
    return path


def read_camera_list(frame_dir: Path) -> list[Camera]:
    """The cameras of ``<frame_dir>/cameras.json`` ([] when the frame has no such file: a frame
    converted or simulated without its images); a file that is not such a list is refused. An entry
    without ``distortion`` is a camera without lens distortion, one without ``rolling_shutter`` a
    camera with one pose for its image."""
    path = Path(frame_dir) / CAMERA_LIST
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())["cameras"]
        return [checked_camera(e["name"], e["image"], e["width"], e["height"], e["intrinsics"],
                               e["scan_to_camera"], str(path), e.get("distortion"), e.get("rolling_shutter"))
                for e in entries]
    except CalibrationError:
        raise
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptFileError(f"{path}: not a camera list ({{'cameras': [{{name, image, width, height, "
                               f"intrinsics, scan_to_camera[, distortion][, rolling_shutter]}}, ...]}}): {err}"
                               ) from err
