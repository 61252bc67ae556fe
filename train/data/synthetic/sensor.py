"""Spinning multi-beam LiDAR ray caster over a synthetic scene (part of the synthetic simulator).

Sensor model: ``beams`` lasers at elevations evenly spaced over [fov_down, fov_up] degrees, fired
at ``azimuth_steps`` azimuths ``-pi + (j + 0.5) * 2 pi / azimuth_steps`` (vehicle frame), from
``height`` metres above the vehicle origin on the ground. For every ray the nearest hit over the
ground plane and all primitives is kept (occlusion). Returns are then degraded:

- range noise: ``t + N(0, range_noise^2)`` along the ray (the direction stays exact, so every
  point lies on its beam's cone and its azimuth column);
- intensity ``I = rho * |cos(incidence)|^alpha * exp(N(0, intensity_noise^2))`` with the hit
  primitive's reflectivity ``rho`` and exponent ``alpha``; strength = ``tanh(I)`` as in the Waymo
  preprocessing;
- dropout: a random fraction ``dropout`` plus weak returns, dropped with probability
  ``exp(-I (10 m / t)^2 / weak_return)`` (dark surfaces at grazing angles fade out with range);
- rays with no hit within ``max_range`` (sky) give no point.

Culling: a primitive is only intersected with the rays of the azimuth columns and beam rows its
bounding footprint can cover, so a scan costs about (#rays + sum of primitive windows) work.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .primitives import box_hit, ellipsoid_hit, frustum_hit
from .scene import Scene


@dataclass(frozen=True)
class SensorConfig:
    """Spinning LiDAR parameters (angles in degrees, lengths in metres)."""

    beams: int = 32
    fov_up: float = 2.4
    fov_down: float = -17.6
    azimuth_steps: int = 560
    height: float = 2.0
    max_range: float = 75.0
    min_range: float = 1.0
    range_noise: float = 0.02
    intensity_noise: float = 0.1
    dropout: float = 0.03
    weak_return: float = 0.002

    def __post_init__(self) -> None:
        if self.beams < 1 or self.azimuth_steps < 8:
            raise ValueError(f"SensorConfig needs beams >= 1 and azimuth_steps >= 8, got "
                             f"{self.beams}, {self.azimuth_steps}")
        if not -90 < self.fov_down < self.fov_up < 90:
            raise ValueError(f"SensorConfig needs -90 < fov_down < fov_up < 90 degrees, got "
                             f"{self.fov_down}, {self.fov_up}")
        if not 0 <= self.min_range < self.max_range or self.height <= 0:
            raise ValueError("SensorConfig needs 0 <= min_range < max_range and height > 0")
        if not 0 <= self.dropout < 1 or self.range_noise < 0 or self.weak_return < 0:
            raise ValueError("SensorConfig needs 0 <= dropout < 1, range_noise >= 0, weak_return >= 0")

    def elevations(self) -> np.ndarray:
        """Beam elevations in radians, ascending (beam 0 is the lowest)."""
        if self.beams == 1:
            return np.deg2rad(np.array([self.fov_down]))
        return np.deg2rad(np.linspace(self.fov_down, self.fov_up, self.beams))

    def azimuths(self) -> np.ndarray:
        """Azimuth of every column in radians, in the vehicle frame, ascending in (-pi, pi)."""
        step = 2 * np.pi / self.azimuth_steps
        return -np.pi + (np.arange(self.azimuth_steps) + 0.5) * step

    def as_dict(self) -> dict:
        return asdict(self)


def _wrap(a: np.ndarray | float) -> np.ndarray | float:
    return (a + np.pi) % (2 * np.pi) - np.pi


class _Caster:
    """Depth buffer over the (beams x azimuth_steps) ray grid of one scan."""

    def __init__(self, cfg: SensorConfig, origin: np.ndarray, yaw: float, cull: bool = True) -> None:
        self.cfg, self.o, self.yaw, self.cull = cfg, origin, yaw, cull
        self.el, az = cfg.elevations(), cfg.azimuths()
        self.n_az = cfg.azimuth_steps
        self.step = 2 * np.pi / self.n_az
        ce = np.cos(self.el)[:, None]
        self.dirs_vehicle = np.stack(np.broadcast_arrays(
            ce * np.cos(az)[None], ce * np.sin(az)[None], np.sin(self.el)[:, None]), axis=-1)
        c, s = np.cos(yaw), np.sin(yaw)
        dv = self.dirs_vehicle
        self.dirs = np.stack([c * dv[..., 0] - s * dv[..., 1], s * dv[..., 0] + c * dv[..., 1],
                              dv[..., 2]], axis=-1)
        n = cfg.beams * self.n_az
        self.t = np.full(n, np.inf)
        self.label = np.full(n, -1, dtype=np.int64)
        self.rho = np.zeros(n)
        self.alpha = np.ones(n)
        self.cos = np.zeros(n)

    def window(self, az_lo: float, az_hi: float, d_min: float, d_max: float, z_min: float,
               z_max: float) -> np.ndarray | None:
        """Flat ray ids whose direction can reach a footprint seen over azimuths
        [az_lo, az_hi] (world, radians, az_hi - az_lo < 2 pi), horizontal distances
        [d_min, d_max] and heights [z_min, z_max]; None if no ray can."""
        if not self.cull:  # every ray (the brute-force twin the tests compare culling against)
            return np.arange(self.t.size)
        if d_min > self.cfg.max_range:
            return None
        oz = self.o[2]
        els = [np.arctan2(z - oz, d) for z in (z_min, z_max) for d in (d_min, d_max)]
        r0 = int(np.searchsorted(self.el, min(els) - 1e-9, side="left"))
        r1 = int(np.searchsorted(self.el, max(els) + 1e-9, side="right"))
        if r0 >= r1:
            return None
        if az_hi - az_lo >= 2 * np.pi - 2 * self.step:
            cols = np.arange(self.n_az)
        else:
            lo = az_lo - self.yaw + np.pi
            j0 = int(np.floor(lo / self.step - 0.5))
            j1 = int(np.ceil((lo + az_hi - az_lo) / self.step - 0.5))
            cols = np.arange(j0, j1 + 1) % self.n_az
        return (np.arange(r0, r1)[:, None] * self.n_az + cols[None, :]).ravel()

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
        rel_ang = _wrap(np.arctan2(vec[:, 1], vec[:, 0]) - phi)
        return self.window(phi + rel_ang.min(), phi + rel_ang.max(), d_min, d_max, cz - hz, cz + hz)

    def update(self, rays: np.ndarray, t: np.ndarray, normal: np.ndarray, row: np.ndarray) -> None:
        better = t < self.t[rays]
        if not better.any():
            return
        ids = rays[better]
        self.t[ids] = t[better]
        self.label[ids] = int(row[-3])
        self.rho[ids] = row[-2]
        self.alpha[ids] = row[-1]
        d = self.dirs.reshape(-1, 3)[ids]
        self.cos[ids] = np.abs((normal[better] * d).sum(axis=1))

    def cast_ground(self, scene: Scene) -> None:
        d = self.dirs.reshape(-1, 3)
        down = np.flatnonzero(d[:, 2] < -1e-9)
        t = -self.o[2] / d[down, 2]
        near = t <= self.cfg.max_range
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
        self.cast_ground(scene)
        d = self.dirs.reshape(-1, 3)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            for row in scene.boxes:
                rays = self.window_box(row)
                if rays is not None:
                    t, n = box_hit(self.o, d[rays], row[:3], row[3:6], row[6])
                    self.update(rays, t, n, row)
            for row in scene.frustums:
                rays = self.window_circle(row[0], row[1], max(row[4], row[5]), row[2], row[2] + row[3])
                if rays is not None:
                    t, n = frustum_hit(self.o, d[rays], *row[:6])
                    self.update(rays, t, n, row)
            for row in scene.ellipsoids:
                rays = self.window_circle(row[0], row[1], max(row[3], row[4]), row[2] - row[5],
                                          row[2] + row[5])
                if rays is not None:
                    t, n = ellipsoid_hit(self.o, d[rays], row[:3], row[3:6], row[6])
                    self.update(rays, t, n, row)


def cast_scan(scene: Scene, cfg: SensorConfig, rng: np.random.Generator,
              ego: tuple[float, float, float] | None = None, cull: bool = True) -> dict[str, np.ndarray]:
    """Simulate one sweep from the ego pose (default ``scene.ego``), in the vehicle frame.

    Returns ``coord`` (n,3) float32 (sensor at (0, 0, height)), ``strength`` (n,1) float32
    tanh(intensity), ``segment`` (n,) int32 Waymo train ids (-1 undefined), ``beam`` and
    ``column`` (n,) int64 ray indices, and ``pose`` (4,4) float64 vehicle -> world.
    ``cull=False`` intersects every primitive with every ray (slow; same result).
    """
    ex, ey, eyaw = scene.ego if ego is None else ego
    caster = _Caster(cfg, np.array([ex, ey, cfg.height]), float(eyaw), cull)
    caster.cast(scene)
    t = caster.t
    hit = np.isfinite(t) & (t <= cfg.max_range) & (t >= cfg.min_range)
    ids = np.flatnonzero(hit)
    t = t[ids] + cfg.range_noise * rng.standard_normal(len(ids))
    cos = np.clip(caster.cos[ids], 0.0, 1.0)
    intensity = caster.rho[ids] * cos ** caster.alpha[ids] * np.exp(
        cfg.intensity_noise * rng.standard_normal(len(ids)))
    signal = intensity * (10.0 / np.maximum(t, 1e-3)) ** 2
    p_drop = cfg.dropout + (1 - cfg.dropout) * (np.exp(-signal / cfg.weak_return)
                                                if cfg.weak_return > 0 else 0.0)
    keep = (rng.random(len(ids)) >= p_drop) & (t > 0)
    ids, t, intensity = ids[keep], t[keep], intensity[keep]
    beam, column = np.divmod(ids, cfg.azimuth_steps)
    coord = t[:, None] * caster.dirs_vehicle.reshape(-1, 3)[ids] + np.array([0.0, 0.0, cfg.height])
    c, s = np.cos(eyaw), np.sin(eyaw)
    pose = np.array([[c, -s, 0.0, ex], [s, c, 0.0, ey], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    return {
        "coord": coord.astype(np.float32),
        "strength": np.tanh(intensity).astype(np.float32)[:, None],
        "segment": caster.label[ids].astype(np.int32),
        "beam": beam.astype(np.int64),
        "column": column.astype(np.int64),
        "pose": pose,
    }
