"""Vectorised ray intersection with the analytic primitives of the synthetic street scenes.

All rays of one scan share the sensor origin ``o`` (3,); ``d`` (k,3) are unit directions. Each
function returns ``(t, normal)``: the distance along the ray to the first surface hit, ``inf`` for
a miss (and for hits behind the origin), and the unit outward surface normal (k,3) at the hit
(undefined rows where ``t`` is inf). Primitives:

- oriented box: centre (3), half extents (3), yaw about z (slab test in the box frame);
- vertical frustum: base centre (x, y, z0), height h, bottom radius r0, top radius r1, no caps
  (a cylinder when r0 == r1, a cone when r1 is ~0); the nearest intersection with the lateral
  surface inside [z0, z0 + h];
- oriented ellipsoid: centre (3), radii (3), yaw about z (unit sphere in the scaled frame).

Hand-written rather than taken from a ray-tracing library: the scenes need only these three
shapes, and numpy over a window of a few thousand rays per primitive is all the speed required.
"""
from __future__ import annotations

import numpy as np

_TINY = 1e-12


def _to_local(o: np.ndarray, d: np.ndarray, center: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Origin (3,) and directions (k,3) in the frame of a primitive rotated by ``yaw`` about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    rel = o - center
    o_local = np.array([c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2]])
    d_local = np.empty_like(d)
    d_local[:, 0] = c * d[:, 0] + s * d[:, 1]
    d_local[:, 1] = -s * d[:, 0] + c * d[:, 1]
    d_local[:, 2] = d[:, 2]
    return o_local, d_local


def _to_world(n_local: np.ndarray, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    n = np.empty_like(n_local)
    n[:, 0] = c * n_local[:, 0] - s * n_local[:, 1]
    n[:, 1] = s * n_local[:, 0] + c * n_local[:, 1]
    n[:, 2] = n_local[:, 2]
    return n


def box_hit(o: np.ndarray, d: np.ndarray, center: np.ndarray, half: np.ndarray,
            yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Slab test against an oriented box (origin outside the box)."""
    o_l, d_l = _to_local(o, d, center, yaw)
    d_safe = np.where(np.abs(d_l) < _TINY, _TINY, d_l)
    t1 = (-half - o_l) / d_safe
    t2 = (half - o_l) / d_safe
    t_lo = np.minimum(t1, t2)
    t_hi = np.maximum(t1, t2)
    axis = np.argmax(t_lo, axis=1)
    t_near = t_lo[np.arange(len(d)), axis]
    t_far = t_hi.min(axis=1)
    hit = (t_near <= t_far) & (t_near > 0)
    t = np.where(hit, t_near, np.inf)
    n_local = np.zeros_like(d_l)
    n_local[np.arange(len(d)), axis] = -np.sign(d_safe[np.arange(len(d)), axis])
    return t, _to_world(n_local, yaw)


def frustum_hit(o: np.ndarray, d: np.ndarray, cx: float, cy: float, z0: float, h: float,
                r0: float, r1: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit on the lateral surface of a vertical frustum, radius r(z) = a + b z."""
    b = (r1 - r0) / h
    a = r0 - b * z0
    px, py = o[0] - cx, o[1] - cy
    ra = a + b * o[2]  # radius of the (infinite) surface at the origin's height
    qa = d[:, 0] ** 2 + d[:, 1] ** 2 - (b * d[:, 2]) ** 2
    qb = 2.0 * (px * d[:, 0] + py * d[:, 1] - b * ra * d[:, 2])
    qc = px * px + py * py - ra * ra
    disc = qb * qb - 4.0 * qa * qc
    ok = (disc >= 0) & (np.abs(qa) > _TINY)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    qa_safe = np.where(ok, qa, 1.0)
    roots = np.stack([(-qb - sq) / (2 * qa_safe), (-qb + sq) / (2 * qa_safe)])
    z = o[2] + roots * d[:, 2]
    valid = ok & (roots > 0) & (z >= z0) & (z <= z0 + h) & (a + b * z >= 0)
    t = np.where(valid, roots, np.inf).min(axis=0)
    t_fin = np.where(np.isfinite(t), t, 0.0)
    hx = px + t_fin * d[:, 0]
    hy = py + t_fin * d[:, 1]
    hz = o[2] + t_fin * d[:, 2]
    radius = np.maximum(a + b * hz, _TINY)
    # gradient of x^2 + y^2 - r(z)^2 is (2x, 2y, -2 r b); normalise.
    n = np.stack([hx, hy, -radius * b], axis=1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), _TINY)
    return t, n


def ellipsoid_hit(o: np.ndarray, d: np.ndarray, center: np.ndarray, radii: np.ndarray,
                  yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit on an oriented ellipsoid (origin outside it)."""
    o_l, d_l = _to_local(o, d, center, yaw)
    os_ = o_l / radii
    ds = d_l / radii
    qa = (ds * ds).sum(axis=1)
    qb = 2.0 * (ds @ os_)
    qc = float(os_ @ os_) - 1.0
    disc = qb * qb - 4.0 * qa * qc
    ok = disc >= 0
    t_near = (-qb - np.sqrt(np.where(ok, disc, 0.0))) / (2.0 * qa)
    t = np.where(ok & (t_near > 0), t_near, np.inf)
    hit_l = o_l + np.where(np.isfinite(t), t, 0.0)[:, None] * d_l
    n_l = hit_l / (radii * radii)
    n_l /= np.maximum(np.linalg.norm(n_l, axis=1, keepdims=True), _TINY)
    return t, _to_world(n_l, yaw)
