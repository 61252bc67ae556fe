"""A rolling-shutter camera's motion during its readout, and the pixel that saw a point (decision 64).

A rolling shutter exposes the image's columns (or rows) one after the other while the camera moves.
:class:`RollingShutter` holds, in the camera frame of :mod:`train.data.cameras.camera` at the image's pose
(the pose ``scan_to_camera`` ends in, time 0):

* the **time of a pixel**: the middle of its line's exposure, linear along the readout axis,
  ``t(c) = start + (end - start) c / L`` for ``left_to_right`` (c = u, L = width) and
  ``top_to_bottom`` (c = v, L = height), ``start + (end - start) (L - c) / L`` for
  ``right_to_left`` and ``bottom_to_top``, with ``c`` the continuous pixel coordinate of
  decision 58 (seconds, relative to the image pose's time);
* the camera's **velocity** at the image pose: ``linear_velocity`` v (m/s) and
  ``angular_velocity`` w (rad/s), both in the camera frame at time 0. To first order in t (Waymo's
  camera model), a point ``q`` of that frame is seen from the camera at time t at

      p(t) = (I - t [w]x) (q - t v)

  (the camera's centre moves by ``t v``, its axes turn by ``t w``).

A point's pixel is where the camera at that pixel's own time puts it: the root of
``r(t) = t - t(c(p(t)))`` (``c`` the pixel coordinate along the readout axis, lens included),
found by Newton's method from t = 0 for all points at once, with the exact derivative
``r'(t) = 1 - dt/dc * dc/dt`` (:func:`solve_exposure`). A point is done when ``|r|`` is at most
:data:`TOLERANCE_LINES` of one line's readout time (its pixel and the line read at its time then
agree to 1e-4 pixels); one that is not done after :data:`MAX_STEPS` steps, or whose time runs off
to non-finite values, is **unsolved**: no pixel, NaN depth, counted by the caller. A point behind
the camera (depth <= 0) at a tried time, or beyond the lens's fold (decision 63), is not seen.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DIRECTIONS = ("left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top")
TOLERANCE_LINES = 1e-4  # |r| at most this many lines' readout time: the point's pixel to 1e-4 px
MAX_STEPS = 8  # Newton steps; typically 2-3 suffice (decision 64)


@dataclass(frozen=True, eq=False)
class RollingShutter:
    """The readout and the camera's motion of one image (module docstring): ``direction`` one of
    :data:`DIRECTIONS`, ``readout`` (start, end) seconds relative to the image pose, velocities (3,)
    in the camera frame at the image pose."""

    direction: str
    readout: np.ndarray
    linear_velocity: np.ndarray
    angular_velocity: np.ndarray

    def time_line(self, width: int, height: int) -> tuple[float, float, int]:
        """``(a, b, axis)``: a pixel's time is ``a + b * uv[:, axis]`` (module docstring)."""
        start, end = (float(x) for x in self.readout)
        axis = 0 if self.direction in ("left_to_right", "right_to_left") else 1
        length = (width, height)[axis]
        if self.direction in ("left_to_right", "top_to_bottom"):
            return start, (end - start) / length, axis
        return end, -(end - start) / length, axis

    def points_at(self, q: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(p, w x d)``: points ``q`` (n, 3) of the camera frame at time 0 as the camera sees them at
        times ``t`` (n, 1), and the cross product :meth:`rate` takes (``d = q - t v``)."""
        d = q - t * self.linear_velocity
        wd = d @ _cross_matrix(self.angular_velocity).T
        return d - t * wd, wd

    def rate(self, t: np.ndarray, wd: np.ndarray) -> np.ndarray:
        """dp/dt (n, 3) at times ``t`` (n, 1) of the points whose :meth:`points_at` gave ``wd``."""
        v, w = self.linear_velocity, self.angular_velocity
        return t * np.cross(w, v) - v - wd


def _cross_matrix(w: np.ndarray) -> np.ndarray:
    """[w]x: ``[w]x @ d`` is the cross product ``w x d``."""
    return np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])


def solve_exposure(shutter: RollingShutter, q: np.ndarray, width: int, height: int,
                   image: Callable[[np.ndarray], np.ndarray],
                   image_rate: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(uv, depth)`` of the points ``q`` (n, 3, camera frame at the image pose) on a rolling-shutter
    image (module docstring): ``image(p)`` gives the pixels (n, 2) of camera-frame points (NaN beyond
    the lens's fold), ``image_rate(p, dp)`` their rate of change. ``uv`` is NaN where the point is not
    seen (behind the camera, beyond the fold) or unsolved; ``depth`` is the depth at the point's time,
    NaN where unsolved."""
    a, b, axis = shutter.time_line(width, height)
    tolerance = TOLERANCE_LINES * abs(b)
    uv = np.full((len(q), 2), np.nan)
    depth = q[:, 2].copy()
    active = np.arange(len(q))  # the points still iterated, and their own q and t
    t = np.zeros((len(q), 1))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # non-finite times end as unsolved
        for step in range(MAX_STEPS + 1):
            p, wd = shutter.points_at(q, t)
            pix = image(p)
            depth[active] = p[:, 2]
            finite = np.isfinite(p).all(axis=1)
            unseen = finite & ((p[:, 2] <= 0) | np.isnan(pix[:, 0]))  # behind the camera, or beyond the fold
            residual = t[:, 0] - (a + b * pix[:, axis])
            done = (np.abs(residual) <= tolerance) & ~unseen
            uv[active[done]] = pix[done]
            depth[active[~finite]] = np.nan
            going = finite & ~done & ~unseen
            if step == MAX_STEPS or not going.any():
                depth[active[going]] = np.nan
                break
            active, q, t, p, wd, residual = active[going], q[going], t[going], p[going], wd[going], residual[going]
            slope = 1.0 - b * image_rate(p, shutter.rate(t, wd))[:, axis]
            t = t - (residual / slope)[:, None]  # a zero slope sends t off to inf: unsolved at the next pass
    return uv, depth
