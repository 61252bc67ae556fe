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

The nearest hits come from :class:`.raycast.RayCaster`, the intersection routine the simulated
cameras share; culling: a primitive is only intersected with the rays of the azimuth columns and
beam rows its bounding footprint can cover, so a scan costs about (#rays + sum of primitive
windows) work.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .raycast import RayCaster
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


class _LidarCaster(RayCaster):
    """The depth buffer over the (beams x azimuth_steps) ray grid of one scan; flat ray id
    ``beam * azimuth_steps + column``."""

    def __init__(self, cfg: SensorConfig, origin: np.ndarray, yaw: float, cull: bool = True) -> None:
        self.yaw = yaw
        self.el, az = cfg.elevations(), cfg.azimuths()
        self.n_az = cfg.azimuth_steps
        self.step = 2 * np.pi / self.n_az
        ce = np.cos(self.el)[:, None]
        self.dirs_vehicle = np.stack(np.broadcast_arrays(
            ce * np.cos(az)[None], ce * np.sin(az)[None], np.sin(self.el)[:, None]), axis=-1)
        c, s = np.cos(yaw), np.sin(yaw)
        dv = self.dirs_vehicle
        dirs = np.stack([c * dv[..., 0] - s * dv[..., 1], s * dv[..., 0] + c * dv[..., 1], dv[..., 2]], axis=-1)
        super().__init__(origin, dirs, cfg.max_range, cull)

    def rays_within(self, az_lo: float, az_hi: float, el_lo: float, el_hi: float) -> np.ndarray | None:
        """The beams between the elevations times the columns between the azimuths (index arithmetic
        on the grid, half a column of margin)."""
        r0 = int(np.searchsorted(self.el, el_lo - 1e-9, side="left"))
        r1 = int(np.searchsorted(self.el, el_hi + 1e-9, side="right"))
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


def vehicle_pose(ego: tuple[float, float, float]) -> np.ndarray:
    """(4, 4) vehicle -> world transform of the ego pose ``(x, y, yaw)`` (the vehicle frame's
    origin on the ground, z up)."""
    x, y, yaw = ego
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0, x], [s, c, 0.0, y], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def cast_scan(scene: Scene, cfg: SensorConfig, rng: np.random.Generator,
              ego: tuple[float, float, float] | None = None, cull: bool = True) -> dict[str, np.ndarray]:
    """Simulate one sweep from the ego pose (default ``scene.ego``), in the vehicle frame.

    Returns ``coord`` (n,3) float32 (sensor at (0, 0, height)), ``strength`` (n,1) float32
    tanh(intensity), ``segment`` (n,) int32 Waymo train ids (-1 undefined), ``beam`` and
    ``column`` (n,) int64 ray indices, ``instance`` (n,) int64 the instance id of the hit object
    (``Scene.instance``; 0 ground and stuff) and ``pose`` (4,4) float64 vehicle -> world.
    ``cull=False`` intersects every primitive with every ray (slow; same result).
    """
    ex, ey, eyaw = scene.ego if ego is None else ego
    caster = _LidarCaster(cfg, np.array([ex, ey, cfg.height]), float(eyaw), cull)
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
    return {
        "coord": coord.astype(np.float32),
        "strength": np.tanh(intensity).astype(np.float32)[:, None],
        "segment": caster.label[ids].astype(np.int32),
        "beam": beam.astype(np.int64),
        "column": column.astype(np.int64),
        "instance": np.concatenate([[0], scene.instance])[caster.primitive[ids] + 1],  # -1 (ground) -> 0
        "pose": vehicle_pose((ex, ey, eyaw)),
    }
