"""Points drawn uniformly by area on the surfaces of analytic primitives, the building blocks of
the procedural ``shapes`` set (:mod:`.shapes`).

Primitives, each in its own frame: a box centred on the origin (its six faces); a frustum along
+z from height 0 to ``h``, radius ``r0`` at the bottom and ``r1`` at the top, its bottom and top
discs optional (a cylinder when r0 == r1, a cone when r1 == 0); an ellipsoid centred on the
origin; and an arc of a torus around +z (ring radius ``ring``, tube radius ``tube``, from angle
``start`` over ``arc`` radians). A :class:`Placed` primitive has a rotation, a translation and a
part id; :func:`sample_surfaces` spreads N points over a list of them in proportion to their
areas (one multinomial draw) and samples each uniformly:

- box: a face chosen by area, uniform on it;
- frustum side: the height fraction ``s`` from the inverse CDF of a density linear in the radius
  (``s = (sqrt(r0^2 + u (r1^2 - r0^2)) - r0) / (r1 - r0)``), the angle uniform; a disc: radius
  ``R sqrt(u)``;
- ellipsoid: a direction uniform on the sphere mapped to ``(a x, b y, c z)`` and kept with
  probability proportional to the area element ``|grad|`` there (rejection), area from Thomsen's
  approximation (within about 1%; the area only sets the share of points);
- torus arc: the angle along the ring uniform, the angle around the tube kept with probability
  ``(ring + tube cos phi) / (ring + tube)`` (rejection).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THOMSEN_P = 1.6075  # exponent of Thomsen's ellipsoid-area approximation


@dataclass(frozen=True)
class Box:
    size: tuple[float, float, float]

    def area(self) -> float:
        x, y, z = self.size
        return 2.0 * (x * y + y * z + x * z)

    def sample(self, k: int, rng: np.random.Generator) -> np.ndarray:
        half = np.asarray(self.size, dtype=np.float64) / 2
        x, y, z = self.size
        face_areas = np.array([y * z, x * z, x * y])
        axis = rng.choice(3, size=k, p=face_areas / face_areas.sum())
        points = rng.uniform(-half, half, size=(k, 3))
        points[np.arange(k), axis] = half[axis] * rng.choice([-1.0, 1.0], size=k)
        return points


@dataclass(frozen=True)
class Frustum:
    r0: float
    r1: float
    h: float
    bottom: bool = False
    top: bool = False

    def _areas(self) -> np.ndarray:
        side = np.pi * (self.r0 + self.r1) * np.hypot(self.r1 - self.r0, self.h)
        return np.array([side, np.pi * self.r0 ** 2 * self.bottom, np.pi * self.r1 ** 2 * self.top])

    def area(self) -> float:
        return float(self._areas().sum())

    def sample(self, k: int, rng: np.random.Generator) -> np.ndarray:
        areas = self._areas()
        where = rng.choice(3, size=k, p=areas / areas.sum())
        u, angle = rng.random(k), rng.uniform(0.0, 2 * np.pi, k)
        if abs(self.r1 - self.r0) < 1e-12:
            s = u
        else:
            s = (np.sqrt(self.r0 ** 2 + u * (self.r1 ** 2 - self.r0 ** 2)) - self.r0) / (self.r1 - self.r0)
        radius = self.r0 + s * (self.r1 - self.r0)
        height = s * self.h
        for cap, r_cap, z_cap in ((1, self.r0, 0.0), (2, self.r1, self.h)):
            on = where == cap
            radius[on] = r_cap * np.sqrt(u[on])
            height[on] = z_cap
        return np.stack([radius * np.cos(angle), radius * np.sin(angle), height], axis=1)


@dataclass(frozen=True)
class Ellipsoid:
    radii: tuple[float, float, float]

    def area(self) -> float:
        a, b, c = (r ** THOMSEN_P for r in self.radii)
        return float(4 * np.pi * ((a * b + a * c + b * c) / 3) ** (1 / THOMSEN_P))

    def sample(self, k: int, rng: np.random.Generator) -> np.ndarray:
        radii = np.asarray(self.radii, dtype=np.float64)
        weight = np.array([radii[1] * radii[2], radii[0] * radii[2], radii[0] * radii[1]])
        out = np.empty((0, 3))
        while len(out) < k:
            u = rng.standard_normal((2 * k + 8, 3))
            u /= np.linalg.norm(u, axis=1, keepdims=True)
            element = np.linalg.norm(u * weight, axis=1)
            keep = rng.random(len(u)) * weight.max() <= element
            out = np.concatenate([out, u[keep] * radii])
        return out[:k]


@dataclass(frozen=True)
class TorusArc:
    ring: float
    tube: float
    start: float
    arc: float

    def area(self) -> float:
        return float(self.arc * self.ring * 2 * np.pi * self.tube)

    def sample(self, k: int, rng: np.random.Generator) -> np.ndarray:
        phi = np.empty(0)
        while len(phi) < k:
            draw = rng.uniform(0.0, 2 * np.pi, 2 * k + 8)
            keep = rng.random(len(draw)) * (self.ring + self.tube) <= self.ring + self.tube * np.cos(draw)
            phi = np.concatenate([phi, draw[keep]])
        phi = phi[:k]
        theta = self.start + rng.uniform(0.0, self.arc, k)
        r = self.ring + self.tube * np.cos(phi)
        return np.stack([r * np.cos(theta), r * np.sin(theta), self.tube * np.sin(phi)], axis=1)


Primitive = Box | Frustum | Ellipsoid | TorusArc


@dataclass(frozen=True)
class Placed:
    """A primitive moved to ``offset`` after ``rotation`` (3, 3), its points labelled ``part``."""

    shape: Primitive
    part: int
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: np.ndarray | None = None


def rotation_about(axis: int, angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about coordinate axis ``axis`` (0 x, 1 y, 2 z)."""
    c, s = np.cos(angle), np.sin(angle)
    i, j = (axis + 1) % 3, (axis + 2) % 3  # the right-hand rule
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def sample_surfaces(placed: list[Placed], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points (n, 3) spread over ``placed`` by area, and the part id (n,) of each."""
    areas = np.array([p.shape.area() for p in placed])
    counts = rng.multinomial(n, areas / areas.sum())
    points, parts = [], []
    for p, k in zip(placed, counts):
        if k == 0:
            continue
        local = p.shape.sample(int(k), rng)
        if p.rotation is not None:
            local = local @ p.rotation.T
        points.append(local + np.asarray(p.offset))
        parts.append(np.full(k, p.part, dtype=np.int64))
    return np.concatenate(points), np.concatenate(parts)
