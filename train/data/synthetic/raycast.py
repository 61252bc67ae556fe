"""The nearest surface along each of a set of rays from one origin over a synthetic scene (part of
the synthetic simulator): the one intersection routine the LiDAR and the cameras share.

:class:`RayCaster` keeps a depth buffer over rays ``o + t d`` (world frame, unit ``d``): per ray
the distance ``t`` to the nearest hit over the ground plane ``z = 0`` (within ``max_range``; its
label from the scene's ground rectangles) and every primitive (:mod:`.primitives`), with the hit
surface's label, reflectivity ``rho``, incidence exponent ``alpha``, ``|cos(incidence)|``
between the ray and the surface normal and the hit primitive's index; ``inf``, label -1 and
primitive -1 where nothing is hit.

Culling: a primitive is intersected only with the rays that can reach its footprint, a vertical
prism described by an azimuth interval seen from the origin, a range of horizontal distances and
a range of heights. The rays the footprint covers lie in that azimuth interval and between the
smallest and largest elevation ``atan2(z - o_z, d)`` over its corners (both are monotone in
``z`` and ``d``), so the selection is conservative and the culled cast equals the brute-force one.
How the rays in such a window are found depends on how they are laid out, so it is the one
method a kind of sensor implements (:meth:`RayCaster.rays_within`): the LiDAR's beam x azimuth
grid by index arithmetic (:mod:`.sensor`), a camera's pixel rays by a search in their azimuths
(:mod:`.camera_rig`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .primitives import box_hit, ellipsoid_hit, frustum_hit
from .scene import Scene


def wrap_angle(a: np.ndarray | float) -> np.ndarray | float:
    """Angles in radians wrapped into [-pi, pi)."""
    return (a + np.pi) % (2 * np.pi) - np.pi


class RayCaster(ABC):
    """Depth buffer of the rays ``origin + t dirs`` (see the module docstring).

    ``dirs`` (n, 3) unit directions in the world frame; after :meth:`cast`, ``t`` (n,) holds the
    distance to the nearest hit (inf: none), ``label`` (n,) int64 its Waymo train id (-1: none or
    undefined), ``rho``, ``alpha`` and ``cos`` (n,) its material and incidence, ``primitive`` (n,)
    int64 the index of the hit primitive in the order of ``Scene.instance`` (boxes, frustums,
    ellipsoids; -1 the ground or none). ``cull=False``
    intersects every primitive with every ray (the brute-force twin the tests compare against).
    """

    def __init__(self, origin: np.ndarray, dirs: np.ndarray, max_range: float, cull: bool = True) -> None:
        self.o, self.max_range, self.cull = origin, max_range, cull
        self.flat_dirs = dirs.reshape(-1, 3)
        n = len(self.flat_dirs)
        self.t = np.full(n, np.inf)
        self.label = np.full(n, -1, dtype=np.int64)
        self.rho = np.zeros(n)
        self.alpha = np.ones(n)
        self.cos = np.zeros(n)
        self.primitive = np.full(n, -1, dtype=np.int64)

    @abstractmethod
    def rays_within(self, az_lo: float, az_hi: float, el_lo: float, el_hi: float) -> np.ndarray | None:
        """Flat ids of the rays whose world azimuth lies in [az_lo, az_hi] (radians, az_hi - az_lo
        < 2 pi, az_lo possibly outside [-pi, pi)) and elevation in [el_lo, el_hi]; a superset is
        allowed; None if no ray can."""

    def window(self, az_lo: float, az_hi: float, d_min: float, d_max: float, z_min: float,
               z_max: float) -> np.ndarray | None:
        """Flat ray ids whose direction can reach a footprint seen over azimuths
        [az_lo, az_hi] (world, radians, az_hi - az_lo < 2 pi), horizontal distances
        [d_min, d_max] and heights [z_min, z_max]; None if no ray can."""
        if not self.cull:
            return np.arange(self.t.size)
        if d_min > self.max_range:
            return None
        oz = self.o[2]
        els = [np.arctan2(z - oz, d) for z in (z_min, z_max) for d in (d_min, d_max)]
        return self.rays_within(az_lo, az_hi, min(els), max(els))

    def window_circle(self, cx: float, cy: float, radius: float, z_min: float,
                      z_max: float) -> np.ndarray | None:
        dx, dy = cx - self.o[0], cy - self.o[1]
        dist = float(np.hypot(dx, dy))
        if dist <= radius:
            return self.window(-np.pi, np.pi, 0.0, dist + radius, z_min, z_max)
        phi, half = float(np.arctan2(dy, dx)), float(np.arcsin(radius / dist))
        return self.window(phi - half, phi + half, dist - radius, dist + radius, z_min, z_max)

    def window_box(self, row: np.ndarray) -> np.ndarray | None:
        cx, cy, cz, hx, hy, hz, yaw = row[:7]
        c, s = np.cos(yaw), np.sin(yaw)
        rel = np.array([self.o[0] - cx, self.o[1] - cy])
        local = np.array([c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1]])
        outside = np.maximum(np.abs(local) - np.array([hx, hy]), 0.0)
        d_min = float(np.hypot(*outside))
        corners = np.array([[sx * hx, sy * hy] for sx in (-1, 1) for sy in (-1, 1)])
        world = np.stack([cx + c * corners[:, 0] - s * corners[:, 1],
                          cy + s * corners[:, 0] + c * corners[:, 1]], axis=1)
        vec = world - self.o[:2]
        d_max = float(np.hypot(vec[:, 0], vec[:, 1]).max())
        if d_min == 0.0:
            return self.window(-np.pi, np.pi, 0.0, d_max, cz - hz, cz + hz)
        phi = float(np.arctan2(cy - self.o[1], cx - self.o[0]))
        rel_ang = wrap_angle(np.arctan2(vec[:, 1], vec[:, 0]) - phi)
        return self.window(phi + rel_ang.min(), phi + rel_ang.max(), d_min, d_max, cz - hz, cz + hz)

    def update(self, rays: np.ndarray, t: np.ndarray, normal: np.ndarray, row: np.ndarray,
               primitive: int) -> None:
        better = t < self.t[rays]
        if not better.any():
            return
        ids = rays[better]
        self.t[ids] = t[better]
        self.label[ids] = int(row[-3])
        self.rho[ids] = row[-2]
        self.alpha[ids] = row[-1]
        self.primitive[ids] = primitive
        d = self.flat_dirs[ids]
        self.cos[ids] = np.abs((normal[better] * d).sum(axis=1))

    def cast_ground(self, scene: Scene) -> None:
        d = self.flat_dirs
        down = np.flatnonzero(d[:, 2] < -1e-9)
        t = -self.o[2] / d[down, 2]
        near = t <= self.max_range
        rays, t = down[near], t[near]
        x = self.o[0] + t * d[rays, 0]
        y = self.o[1] + t * d[rays, 1]
        label = np.full(len(rays), scene.ground_default[0])
        rho = np.full(len(rays), scene.ground_default[1])
        alpha = np.full(len(rays), scene.ground_default[2])
        for x0, x1, y0, y1, lab, r, a in scene.ground:
            inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
            label[inside], rho[inside], alpha[inside] = lab, r, a
        self.t[rays] = t
        self.label[rays] = label.astype(np.int64)
        self.rho[rays], self.alpha[rays] = rho, alpha
        self.cos[rays] = -d[rays, 2]

    def cast(self, scene: Scene) -> None:
        """Fill the buffer: the ground first, then every primitive over its window of rays."""
        self.cast_ground(scene)
        d = self.flat_dirs
        first_frustum = len(scene.boxes)
        first_ellipsoid = first_frustum + len(scene.frustums)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            for k, row in enumerate(scene.boxes):
                rays = self.window_box(row)
                if rays is not None:
                    t, n = box_hit(self.o, d[rays], row[:3], row[3:6], row[6])
                    self.update(rays, t, n, row, k)
            for k, row in enumerate(scene.frustums, start=first_frustum):
                rays = self.window_circle(row[0], row[1], max(row[4], row[5]), row[2], row[2] + row[3])
                if rays is not None:
                    t, n = frustum_hit(self.o, d[rays], *row[:6])
                    self.update(rays, t, n, row, k)
            for k, row in enumerate(scene.ellipsoids, start=first_ellipsoid):
                rays = self.window_circle(row[0], row[1], max(row[3], row[4]), row[2] - row[5],
                                          row[2] + row[5])
                if rays is not None:
                    t, n = ellipsoid_hit(self.o, d[rays], row[:3], row[3:6], row[6])
                    self.update(rays, t, n, row, k)
