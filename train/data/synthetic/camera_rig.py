"""Pinhole cameras on the simulated vehicle, rendered from the scene the LiDAR scans (part of the
synthetic simulator; decision 58).

A :class:`CameraRig` is a set of :class:`CameraMount` poses on the vehicle sharing one image size
and horizontal field of view. Each camera follows :mod:`train.data.cameras.camera`: OpenCV camera frame
(x right, y down, z along the optical axis), ``K = [[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2],
[0, 0, 1]]`` with ``f = (W / 2) / tan(hfov / 2)`` (square pixels, the principal point at the
image's centre, the outer pixel edges at +-hfov / 2), and ``scan_to_camera`` the inverse of the
mount's camera -> vehicle transform, since the LiDAR's scan is in the vehicle frame
(:mod:`.sensor`). A mount's yaw turns the optical axis about the vehicle's z (0: forward, 90:
left), its pitch tilts it down.

Rendering (:func:`render_rig`): one ray through every pixel centre, ``d_cam = K^-1 (u, v, 1)``
at integer ``(u, v)``, cast by :class:`.raycast.RayCaster`, the routine the LiDAR uses, with the
same ground plane, primitives and culling. Per pixel:

- depth: ``t * d_z / |d_cam|`` (metres along the optical axis) of the nearest surface within
  ``max_range`` metres of the camera, ``inf`` where there is none (sky);
- class: the surface's Waymo train id, 255 where there is no surface or its label is undefined
  (-1: the street clutter; depth tells the two apart);
- colour: ``base(class) * (a + (1 - a) |cos i|^alpha) * (0.5 + 0.5 tanh(2 rho))`` with the
  incidence ``i`` between the pixel's ray and the surface normal and the surface's reflectivity
  ``rho`` and exponent ``alpha`` (the LiDAR intensity's inputs: retro-reflective paint stays
  bright at grazing angles, and each object's own ``rho`` varies its shade), ambient ``a =
  AMBIENT``; where there is no surface a sky graded from horizon to zenith by the ray's elevation;
  then ``N(0, colour_noise^2)`` per channel from the frame's camera stream, rounded to uint8.

Not simulated: lens distortion, rolling shutter, exposure, motion blur, shadows, textures.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..cameras.camera_images import NO_CLASS
from ..cameras.camera import Camera, checked_camera
from .raycast import RayCaster, wrap_angle
from .scene import Scene
from .sensor import vehicle_pose

NO_CAMERAS = "none"
RENDERER_VERSION = 1  # recorded in a camera set's marker: a change of the shading invalidates those caches
AMBIENT = 0.4
_EPS = 1e-9  # radians of margin in the culling windows

# RGB base colour of every Waymo train id (train.data.labels.WAYMO_CLASSES order), then of the
# undefined street clutter (row -1).
BASE_COLOURS = np.array([
    (60, 80, 150), (150, 120, 60), (200, 170, 40), (140, 100, 140),  # car truck bus other_vehicle
    (180, 60, 60), (200, 90, 60), (220, 60, 120),  # motorcyclist bicyclist pedestrian
    (230, 40, 40), (40, 40, 40), (130, 130, 135), (255, 120, 0),  # sign traffic_light pole cone
    (150, 150, 60), (100, 60, 30), (170, 150, 130), (60, 140, 50),  # bicycle motorcycle building vegetation
    (100, 70, 40), (180, 180, 170), (80, 80, 85), (245, 245, 235),  # tree_trunk curb road lane_marker
    (140, 120, 90), (90, 170, 70), (175, 170, 160),  # other_ground walkable sidewalk
    (110, 90, 120),  # undefined
], dtype=np.float64)
SKY_HORIZON = np.array([200.0, 215.0, 230.0])
SKY_ZENITH = np.array([90.0, 130.0, 200.0])


@dataclass(frozen=True)
class CameraMount:
    """A camera's pose on the vehicle: position in metres in the vehicle frame (x forward, y left,
    z up, origin on the ground under the LiDAR), yaw and downward pitch in degrees."""

    name: str
    x: float
    y: float
    z: float
    yaw: float
    pitch: float

    def camera_to_vehicle(self) -> np.ndarray:
        """(4, 4) rigid transform from the camera's OpenCV frame to the vehicle frame."""
        yaw, pitch = np.deg2rad(self.yaw), np.deg2rad(self.pitch)
        forward = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), -np.sin(pitch)])
        right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
        down = np.cross(forward, right)
        out = np.eye(4)
        out[:3, :3] = np.stack([right, down, forward], axis=1)
        out[:3, 3] = (self.x, self.y, self.z)
        return out


@dataclass(frozen=True)
class CameraRig:
    """Cameras sharing an image size (pixels), horizontal field of view (degrees), the range of
    the surfaces they see (metres) and the colour noise (8-bit levels)."""

    mounts: tuple[CameraMount, ...]
    width: int = 160
    height: int = 96
    hfov: float = 100.0
    max_range: float = 100.0
    colour_noise: float = 2.0

    def __post_init__(self) -> None:
        names = [m.name for m in self.mounts]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"CameraRig needs at least one camera and distinct names, got {names}")
        if self.width < 1 or self.height < 1 or not 0 < self.hfov < 180:
            raise ValueError(f"CameraRig needs a positive image size and 0 < hfov < 180 degrees, got "
                             f"{self.width} x {self.height}, {self.hfov}")
        if self.max_range <= 0 or self.colour_noise < 0:
            raise ValueError(f"CameraRig needs max_range > 0 and colour_noise >= 0, got {self.max_range}, "
                             f"{self.colour_noise}")

    def intrinsics(self) -> np.ndarray:
        f = self.width / 2 / np.tan(np.deg2rad(self.hfov) / 2)
        return np.array([[f, 0.0, (self.width - 1) / 2], [0.0, f, (self.height - 1) / 2], [0.0, 0.0, 1.0]])

    def as_dict(self) -> dict:
        """The rig as JSON's values (the mounts a list), as a marker file reads it back."""
        return {**asdict(self), "mounts": [asdict(m) for m in self.mounts]}


# The rigs --synthetic-cameras names. ring: four cameras at roof height looking forward, left,
# right and back, 100 degrees wide each (neighbours overlap by 10 degrees, as a real rig's do),
# tilted 5 degrees down.
RIGS: dict[str, CameraRig] = {
    "ring": CameraRig((CameraMount("front", 0.6, 0.0, 1.8, 0.0, 5.0), CameraMount("left", 0.0, 0.5, 1.8, 90.0, 5.0),
                       CameraMount("right", 0.0, -0.5, 1.8, -90.0, 5.0),
                       CameraMount("back", -0.6, 0.0, 1.8, 180.0, 5.0))),
}


def camera_rig(name: str) -> CameraRig | None:
    """The rig called ``name`` (a key of :data:`RIGS`), None for ``"none"``; anything else is refused."""
    if name == NO_CAMERAS:
        return None
    if name not in RIGS:
        raise ValueError(f"synthetic cameras must be one of {(NO_CAMERAS, *RIGS)}, got {name!r}")
    return RIGS[name]


@dataclass(frozen=True, eq=False)
class RenderedCamera:
    """One camera's images of a frame: ``colour`` (H, W, 3) uint8, ``classes`` (H, W) uint8 train
    ids (NO_CLASS: none), ``depth`` (H, W) float32 metres along the optical axis (inf: none)."""

    name: str
    intrinsics: np.ndarray
    scan_to_camera: np.ndarray
    colour: np.ndarray
    classes: np.ndarray
    depth: np.ndarray

    def camera(self, image: str) -> Camera:
        """The calibrated camera of these images, its colour image at ``image`` (relative to the data root)."""
        height, width = self.classes.shape
        return checked_camera(self.name, image, width, height, self.intrinsics, self.scan_to_camera,
                              "the synthetic camera rig")


class _PixelCaster(RayCaster):
    """The depth buffer over a camera's pixel rays; the culling window searches the rays sorted by
    world azimuth, then keeps those within the elevations."""

    def __init__(self, origin: np.ndarray, dirs: np.ndarray, max_range: float, cull: bool) -> None:
        super().__init__(origin, dirs, max_range, cull)
        az = np.arctan2(dirs[:, 1], dirs[:, 0])
        self.el = np.arcsin(np.clip(dirs[:, 2], -1.0, 1.0))
        self.order = np.argsort(az, kind="stable")
        self.az_sorted = az[self.order]

    def rays_within(self, az_lo: float, az_hi: float, el_lo: float, el_hi: float) -> np.ndarray | None:
        span = az_hi - az_lo
        if span >= 2 * np.pi - 2 * _EPS:
            rays = self.order
        else:
            lo = float(wrap_angle(az_lo)) - _EPS
            hi = lo + span + 2 * _EPS
            parts = [self.order[np.searchsorted(self.az_sorted, lo, "left"):np.searchsorted(self.az_sorted, hi,
                                                                                           "right")]]
            if hi > np.pi:  # the interval wraps past +pi
                parts.append(self.order[:np.searchsorted(self.az_sorted, hi - 2 * np.pi, "right")])
            if lo < -np.pi:  # the margin reaches below -pi
                parts.append(self.order[np.searchsorted(self.az_sorted, lo + 2 * np.pi, "left"):])
            rays = np.concatenate(parts)
        el = self.el[rays]
        rays = rays[(el >= el_lo - _EPS) & (el <= el_hi + _EPS)]
        return rays if rays.size else None


def _pixel_rays(rig: CameraRig) -> np.ndarray:
    """(H * W, 3) ``K^-1 (u, v, 1)`` of every pixel centre, row-major (v, then u): the camera-frame
    rays, of depth 1."""
    v, u = np.mgrid[0:rig.height, 0:rig.width]
    homogeneous = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1).astype(np.float64)
    return np.linalg.solve(rig.intrinsics(), homogeneous.T).T


def render_rig(scene: Scene, rig: CameraRig, ego: tuple[float, float, float], rng: np.random.Generator,
               cull: bool = True) -> list[RenderedCamera]:
    """Every camera of ``rig`` on the vehicle at ``ego`` (x, y, yaw in the world), in the order of its
    mounts (see the module docstring); ``rng`` draws the colour noise; ``cull=False`` intersects every
    primitive with every ray (slow; same images)."""
    to_world = vehicle_pose(ego)
    rays = _pixel_rays(rig)
    norm = np.linalg.norm(rays, axis=1)
    unit = rays / norm[:, None]
    k = rig.intrinsics()
    shape = (rig.height, rig.width)
    out = []
    for mount in rig.mounts:
        camera_to_vehicle = mount.camera_to_vehicle()
        camera_to_world = to_world @ camera_to_vehicle
        dirs = unit @ camera_to_world[:3, :3].T
        caster = _PixelCaster(camera_to_world[:3, 3], dirs, rig.max_range, cull)
        caster.cast(scene)
        hit = caster.t <= rig.max_range
        depth = np.where(hit, caster.t / norm, np.inf)
        classes = np.where(hit & (caster.label >= 0), caster.label, NO_CLASS)
        colour = _shade(caster, hit, dirs[:, 2]) + rig.colour_noise * rng.standard_normal((len(dirs), 3))
        out.append(RenderedCamera(
            mount.name, k, np.linalg.inv(camera_to_vehicle),
            np.clip(np.round(colour), 0, 255).astype(np.uint8).reshape(*shape, 3),
            classes.astype(np.uint8).reshape(shape), depth.astype(np.float32).reshape(shape)))
    return out


def _shade(caster: RayCaster, hit: np.ndarray, dir_z: np.ndarray) -> np.ndarray:
    """(n, 3) float colour before noise: shaded surfaces where ``hit``, the sky elsewhere."""
    shade = (AMBIENT + (1 - AMBIENT) * np.clip(caster.cos, 0.0, 1.0) ** caster.alpha) * (
        0.5 + 0.5 * np.tanh(2.0 * caster.rho))
    surface = BASE_COLOURS[caster.label] * shade[:, None]
    up = np.clip(np.arcsin(np.clip(dir_z, -1.0, 1.0)) / (np.pi / 4), 0.0, 1.0)[:, None]
    sky = SKY_HORIZON + up * (SKY_ZENITH - SKY_HORIZON)
    return np.where(hit[:, None], surface, sky)
