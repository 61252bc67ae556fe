"""Procedural street scenes built from labelled analytic primitives (part of the synthetic simulator).

A scene is a street along the world x axis: a flat ground plane z = 0 whose label comes from 2D
rectangles (road, lane markers, lawns = walkable, the rest other ground), raised boxes for curbs
and sidewalks, and objects made of oriented boxes, vertical frustums and oriented ellipsoids, each
primitive carrying a Waymo class id (labels.WAYMO_CLASSES; -1 "undefined" for street clutter such as
bins, benches and hydrants, which the Waymo labels leave undefined too), a reflectivity and an
incidence exponent. Optional cross street with curbs, crosswalks and traffic lights.

The classes are made learnable but not trivially: thin poles and young tree trunks overlap in
radius (trunks carry a canopy), pickups and vans are car-sized (pickups are trucks, vans are cars),
curbs share the sidewalk's material and differ from the road by a 10-20 cm step and intensity,
lane markers differ from road only by intensity, and every object draws its own reflectivity.

Two styles (:data:`STYLES`, ``--synthetic-variant``): ``demo`` (the README demo's scenes) and
``fine``, a harder set with the same 22 classes for the capacity check of ``train.study``: the
reflectivity of every class spreads 1.8 times as far between objects (intensity tells classes
apart less often, geometry must), small and thin objects (pedestrians, two-wheelers, clutter,
signs, cones, trees and street lights) are 2.5 times as frequent, and 60% of the street trees are
pole-thin young ones instead of 30%. ``demo`` draws exactly the numbers it drew before the styles
existed (every factor is 1 there), so its scenes are unchanged.

Instances: every primitive drawn by one placed object (a car with its wheels, a tree, a street
light with its sign, a ridden bicycle with its rider) carries the object's instance id, one id per
class the object's primitives carry (a tree's trunk and its canopy are two instances, as a street
light's pole and its sign); the road, curbs, sidewalks, buildings and free-standing vegetation
carry 0 (stuff). The ids only record what was drawn: they draw no random number, so a scene and its
scans are the same as before they existed (decision 66).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import wraps

import numpy as np

from ..labels import WAYMO_CLASSES

CLASS = {name: i for i, name in enumerate(WAYMO_CLASSES)}
UNDEFINED = -1

# class -> (median reflectivity, log-normal spread between objects, incidence exponent alpha).
# Intensity of a return = rho * cos(incidence)^alpha (alpha < 1: retro-reflective paint and signs).
MATERIALS: dict[str, tuple[float, float, float]] = {
    "car": (0.22, 0.6, 1.0), "truck": (0.26, 0.5, 1.0), "bus": (0.3, 0.4, 1.0),
    "other_vehicle": (0.28, 0.5, 1.0), "motorcyclist": (0.18, 0.5, 1.0),
    "bicyclist": (0.18, 0.5, 1.0), "pedestrian": (0.18, 0.6, 1.0), "sign": (1.6, 0.4, 0.25),
    "traffic_light": (0.22, 0.3, 1.0), "pole": (0.3, 0.35, 1.0),
    "construction_cone": (0.9, 0.3, 0.5), "bicycle": (0.2, 0.4, 1.0),
    "motorcycle": (0.3, 0.4, 1.0), "building": (0.25, 0.5, 1.0), "vegetation": (0.45, 0.3, 0.7),
    "tree_trunk": (0.2, 0.3, 1.0), "curb": (0.3, 0.2, 1.0), "road": (0.1, 0.25, 1.0),
    "lane_marker": (0.8, 0.25, 0.4), "other_ground": (0.18, 0.4, 1.0),
    "walkable": (0.4, 0.25, 0.8), "sidewalk": (0.28, 0.2, 1.0), "undefined": (0.3, 0.5, 1.0),
}


@dataclass(frozen=True)
class SceneStyle:
    """How hard a scene is to segment (see the module docstring); the default is the demo's."""

    material_spread: float = 1.0  # factor on every class's log-normal reflectivity spread
    small_objects: float = 1.0  # factor on the rates of small and thin objects
    young_trees: float = 0.3  # share of the street trees that are pole-thin young ones


STYLES: dict[str, SceneStyle] = {
    "demo": SceneStyle(),
    "fine": SceneStyle(material_spread=1.8, small_objects=2.5, young_trees=0.6),
}
DEFAULT_VARIANT = "demo"


def scene_style(variant: str) -> SceneStyle:
    """The style of ``variant`` (a key of :data:`STYLES`); anything else is refused."""
    if variant not in STYLES:
        raise ValueError(f"synthetic variant must be one of {tuple(STYLES)}, got {variant!r}")
    return STYLES[variant]


@dataclass
class Scene:
    """Primitive tables of one scene (world frame, metres, radians).

    boxes (B,10): cx, cy, cz, hx, hy, hz (half extents), yaw, label, rho, alpha.
    frustums (F,9): cx, cy, z0, h, r0, r1, label, rho, alpha.
    ellipsoids (E,10): cx, cy, cz, rx, ry, rz, yaw, label, rho, alpha.
    ground (G,7): xmin, xmax, ymin, ymax, label, rho, alpha; later rows override earlier ones;
    ``ground_default`` (3,): label, rho, alpha of the plane outside every rectangle.
    ego (3,): x, y, yaw of the vehicle frame on the ground (the sensor sits above it).
    instance (B+F+E,) int64: the instance id of every primitive, boxes then frustums then
    ellipsoids (module docstring; 0 stuff); a scene built without ids has all 0.
    """

    boxes: np.ndarray
    frustums: np.ndarray
    ellipsoids: np.ndarray
    ground: np.ndarray
    ground_default: np.ndarray
    ego: np.ndarray
    instance: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        primitives = len(self.boxes) + len(self.frustums) + len(self.ellipsoids)
        if len(self.instance) == 0:
            self.instance = np.zeros(primitives, dtype=np.int64)
        if self.instance.shape != (primitives,):
            raise ValueError(f"Scene: {primitives} primitives but {self.instance.shape} instance ids")


class SceneBuilder:
    """Collects primitives; every ``add_*`` draws the object's reflectivity from its class."""

    def __init__(self, rng: np.random.Generator, style: SceneStyle = STYLES[DEFAULT_VARIANT]) -> None:
        self.rng = rng
        self.style = style
        self.boxes: list[list[float]] = []
        self.frustums: list[list[float]] = []
        self.ellipsoids: list[list[float]] = []
        self.ground: list[list[float]] = []
        self.instances: dict[str, list[int]] = {"boxes": [], "frustums": [], "ellipsoids": []}
        self._objects = 0  # objects opened so far
        self._object = 0  # the open object (0: none)
        self._ids: dict[tuple[int, float], int] = {}  # (object, class label) -> instance id

    @contextmanager
    def object(self) -> Iterator[None]:
        """Everything added inside belongs to one new object (nested calls stay in the outer one)."""
        if self._object:
            yield
            return
        self._objects += 1
        self._object = self._objects
        try:
            yield
        finally:
            self._object = 0

    def _instance(self, kind: str, mat: list[float]) -> list[float]:
        """Record the instance id of a primitive of ``kind`` with material ``mat``; return ``mat``."""
        key = (self._object, mat[0])
        ids = self.instances[kind]
        ids.append(self._ids.setdefault(key, len(self._ids) + 1) if self._object else 0)
        return mat

    def material(self, cls: str) -> list[float]:
        rho, spread, alpha = MATERIALS[cls]
        label = UNDEFINED if cls == "undefined" else CLASS[cls]
        spread *= self.style.material_spread
        return [label, rho * float(np.exp(spread * self.rng.standard_normal())), alpha]

    def box(self, cls: str, center: tuple[float, float, float], size: tuple[float, float, float],
            yaw: float = 0.0, mat: list[float] | None = None) -> None:
        self.boxes.append([*center, size[0] / 2, size[1] / 2, size[2] / 2, yaw,
                           *self._instance("boxes", mat or self.material(cls))])

    def frustum(self, cls: str, x: float, y: float, z0: float, h: float, r0: float, r1: float,
                mat: list[float] | None = None) -> None:
        self.frustums.append([x, y, z0, h, r0, r1, *self._instance("frustums", mat or self.material(cls))])

    def ellipsoid(self, cls: str, center: tuple[float, float, float],
                  radii: tuple[float, float, float], yaw: float = 0.0,
                  mat: list[float] | None = None) -> None:
        self.ellipsoids.append([*center, *radii, yaw, *self._instance("ellipsoids", mat or self.material(cls))])

    def ground_rect(self, cls: str, xmin: float, xmax: float, ymin: float, ymax: float,
                    mat: list[float] | None = None) -> None:
        self.ground.append([xmin, xmax, ymin, ymax, *(mat or self.material(cls))])

    def build(self, ego: tuple[float, float, float]) -> Scene:
        def table(rows: list[list[float]], width: int) -> np.ndarray:
            return np.asarray(rows, dtype=np.float64).reshape(-1, width)

        instance = np.array([*self.instances["boxes"], *self.instances["frustums"], *self.instances["ellipsoids"]],
                            dtype=np.int64)
        return Scene(table(self.boxes, 10), table(self.frustums, 9), table(self.ellipsoids, 10),
                     table(self.ground, 7), np.asarray(self.material("other_ground")),
                     np.asarray(ego, dtype=np.float64), instance)


def one_object(add: Callable[..., None]) -> Callable[..., None]:
    """Make ``add(b, ...)`` draw one object: its primitives share the object's instance ids."""
    @wraps(add)
    def wrapper(b: SceneBuilder, *args: object, **kwargs: object) -> None:
        with b.object():
            add(b, *args, **kwargs)
    return wrapper


def _at(x: float, y: float, yaw: float, dx: float, dy: float) -> tuple[float, float]:
    """World xy of the point (dx, dy) in the frame of an object at (x, y) heading ``yaw``."""
    c, s = np.cos(yaw), np.sin(yaw)
    return x + c * dx - s * dy, y + s * dx + c * dy


# ----------------------------------------------------------------------------- objects
def add_wheels(b: SceneBuilder, x: float, y: float, yaw: float, mat: list[float],
               length: float, width: float, radius: float, z: float = 0.0) -> None:
    for dx in (-0.36 * length, 0.36 * length):
        for dy in (-width / 2 + 0.12, width / 2 - 0.12):
            wx, wy = _at(x, y, yaw, dx, dy)
            b.ellipsoid("car", (wx, wy, z + radius), (radius, 0.12, radius), yaw, mat)


@one_object
def add_car(b: SceneBuilder, x: float, y: float, yaw: float) -> None:
    """Sedan, SUV or van: a body box, a cabin box and four wheels, all labelled car."""
    r = b.rng
    mat = b.material("car")
    kind = r.choice(["sedan", "suv", "van"], p=[0.55, 0.3, 0.15])
    length = {"sedan": r.uniform(3.9, 4.9), "suv": r.uniform(4.3, 5.0), "van": r.uniform(4.8, 5.6)}[kind]
    width = r.uniform(1.7, 2.0)
    body_h = {"sedan": r.uniform(0.55, 0.75), "suv": r.uniform(0.8, 1.0), "van": r.uniform(1.5, 1.9)}[kind]
    b.box("car", (x, y, 0.3 + body_h / 2), (length, width, body_h), yaw, mat)
    if kind != "van":
        cab_l = length * r.uniform(0.45, 0.6)
        cab_h = r.uniform(0.45, 0.6)
        cx, cy = _at(x, y, yaw, -0.08 * length, 0.0)
        b.box("car", (cx, cy, 0.3 + body_h + cab_h / 2), (cab_l, width * 0.88, cab_h), yaw, mat)
    add_wheels(b, x, y, yaw, mat, length, width, 0.32)


@one_object
def add_truck(b: SceneBuilder, x: float, y: float, yaw: float) -> None:
    """Pickup (car-sized, open bed) or box truck (cab + tall cargo box), labelled truck."""
    r = b.rng
    mat = b.material("truck")
    if r.random() < 0.45:  # pickup
        length, width = r.uniform(5.0, 5.9), r.uniform(1.85, 2.05)
        body_h = r.uniform(0.75, 0.95)
        b.box("truck", (x, y, 0.4 + body_h / 2), (length, width, body_h), yaw, mat)
        cx, cy = _at(x, y, yaw, 0.12 * length, 0.0)
        b.box("truck", (cx, cy, 0.4 + body_h + 0.3), (0.4 * length, width * 0.9, 0.6), yaw, mat)
        for side in (-1, 1):  # bed walls
            wx, wy = _at(x, y, yaw, -0.3 * length, side * (width / 2 - 0.04))
            b.box("truck", (wx, wy, 0.4 + body_h + 0.2), (0.38 * length, 0.08, 0.4), yaw, mat)
        add_wheels(b, x, y, yaw, mat, length, width, 0.38)
    else:  # box truck
        cab_l, width = r.uniform(1.8, 2.4), r.uniform(2.2, 2.5)
        cargo_l, cargo_h = r.uniform(4.5, 8.0), r.uniform(2.3, 3.0)
        total = cab_l + cargo_l
        cx, cy = _at(x, y, yaw, total / 2 - cab_l / 2, 0.0)
        b.box("truck", (cx, cy, 0.5 + 1.1), (cab_l, width * 0.95, 2.2), yaw, mat)
        gx, gy = _at(x, y, yaw, -total / 2 + cargo_l / 2, 0.0)
        b.box("truck", (gx, gy, 0.9 + cargo_h / 2), (cargo_l, width, cargo_h), yaw, b.material("truck"))
        add_wheels(b, x, y, yaw, mat, total, width, 0.5)


@one_object
def add_bus(b: SceneBuilder, x: float, y: float, yaw: float) -> None:
    r = b.rng
    mat = b.material("bus")
    length, width, height = r.uniform(10.0, 13.0), r.uniform(2.45, 2.6), r.uniform(2.9, 3.3)
    b.box("bus", (x, y, 0.35 + height / 2), (length, width, height), yaw, mat)
    add_wheels(b, x, y, yaw, mat, length, width, 0.5)


@one_object
def add_other_vehicle(b: SceneBuilder, x: float, y: float, yaw: float) -> None:
    """A detached trailer on two axles or a small construction vehicle (Waymo "other vehicle")."""
    r = b.rng
    mat = b.material("other_vehicle")
    if r.random() < 0.6:
        length, width, height = r.uniform(3.0, 7.0), r.uniform(1.8, 2.5), r.uniform(1.0, 2.6)
        b.box("other_vehicle", (x, y, 0.7 + height / 2), (length, width, height), yaw, mat)
        wx, wy = _at(x, y, yaw, length / 2 + 0.8, 0.0)
        b.box("other_vehicle", (wx, wy, 0.55), (1.6, 0.12, 0.12), yaw, mat)  # tow bar
        add_wheels(b, x, y, yaw, mat, 0.5 * length, width, 0.35)
    else:
        b.box("other_vehicle", (x, y, 1.2), (3.2, 2.0, 1.6), yaw, mat)
        cx, cy = _at(x, y, yaw, -0.6, 0.0)
        b.box("other_vehicle", (cx, cy, 2.5), (1.4, 1.4, 1.1), yaw, mat)
        ax, ay = _at(x, y, yaw, 2.4, 0.0)
        b.box("other_vehicle", (ax, ay, 1.6), (2.2, 0.3, 0.3), yaw + 0.2, mat)  # arm
        add_wheels(b, x, y, yaw, mat, 3.2, 2.0, 0.45)


@one_object
def add_person(b: SceneBuilder, x: float, y: float, yaw: float, cls: str, z: float = 0.0,
               seated: bool = False) -> None:
    """Legs (two frustums) unless seated, torso frustum, head ellipsoid."""
    r = b.rng
    mat = b.material(cls)
    s = r.uniform(0.8, 1.1) if not seated else r.uniform(0.95, 1.05)
    if not seated:
        for side in (-1, 1):
            lx, ly = _at(x, y, yaw, r.uniform(-0.12, 0.12), side * 0.1 * s)
            b.frustum(cls, lx, ly, z, 0.85 * s, 0.085 * s, 0.07 * s, mat)
        torso_z = z + 0.85 * s
    else:
        torso_z = z
    b.frustum(cls, x, y, torso_z, 0.6 * s, 0.16 * s, 0.2 * s, mat)
    b.ellipsoid(cls, (x, y, torso_z + 0.6 * s + 0.14 * s), (0.1 * s, 0.1 * s, 0.13 * s), yaw, mat)


@one_object
def add_two_wheeler(b: SceneBuilder, x: float, y: float, yaw: float, motor: bool,
                    rider: bool) -> None:
    """Bicycle or motorcycle, optionally ridden; a ridden one is labelled bicyclist/motorcyclist
    as a whole (rider and vehicle), an unridden one bicycle/motorcycle."""
    cls = ("motorcyclist" if rider else "motorcycle") if motor else ("bicyclist" if rider else "bicycle")
    mat = b.material(cls)
    wheel_r, base = (0.32, 1.45) if motor else (0.34, 1.05)
    wheel_w = 0.08 if motor else 0.025
    for dx in (-base / 2, base / 2):
        wx, wy = _at(x, y, yaw, dx, 0.0)
        b.ellipsoid(cls, (wx, wy, wheel_r), (wheel_r, wheel_w, wheel_r), yaw, mat)
    if motor:
        b.box(cls, (x, y, 0.65), (base * 1.1, 0.45, 0.5), yaw, mat)
    else:
        b.box(cls, (x, y, 0.62), (base * 0.95, 0.05, 0.08), yaw, mat)
        hx, hy = _at(x, y, yaw, base / 2 - 0.1, 0.0)
        b.box(cls, (hx, hy, 0.95), (0.06, 0.55, 0.05), yaw, mat)
    if rider:
        add_person(b, x, y, yaw, cls, z=0.75 if motor else 0.85, seated=True)


@one_object
def add_tree(b: SceneBuilder, x: float, y: float, young: bool) -> None:
    """Trunk frustum (young trees are pole-thin) carrying one to three canopy ellipsoids."""
    r = b.rng
    radius = r.uniform(0.05, 0.1) if young else r.uniform(0.14, 0.4)
    height = r.uniform(1.6, 2.6) if young else r.uniform(2.0, 4.0)
    b.frustum("tree_trunk", x, y, 0.0, height + 0.3, radius, radius * 0.75)
    mat = b.material("vegetation")
    crown = r.uniform(0.8, 1.6) if young else r.uniform(1.8, 4.0)
    for _ in range(int(r.integers(1, 4))):
        cx, cy = x + r.normal(0, 0.3 * crown), y + r.normal(0, 0.3 * crown)
        b.ellipsoid("vegetation", (cx, cy, height + crown * r.uniform(0.6, 0.9)),
                    (crown * r.uniform(0.7, 1.0), crown * r.uniform(0.7, 1.0), crown * r.uniform(0.7, 1.1)),
                    r.uniform(0, np.pi), mat)


@one_object
def add_street_light(b: SceneBuilder, x: float, y: float, arm_yaw: float) -> None:
    r = b.rng
    mat = b.material("pole")
    height, radius = r.uniform(5.5, 9.0), r.uniform(0.07, 0.14)
    b.frustum("pole", x, y, 0.0, height, radius, radius * 0.65, mat)
    arm = r.uniform(1.0, 2.5)
    ax, ay = _at(x, y, arm_yaw, arm / 2, 0.0)
    b.box("pole", (ax, ay, height - 0.1), (arm, 0.1, 0.1), arm_yaw, mat)
    lx, ly = _at(x, y, arm_yaw, arm, 0.0)
    b.box("pole", (lx, ly, height - 0.25), (0.6, 0.3, 0.2), arm_yaw, mat)
    if r.random() < 0.3:  # a sign mounted on the light pole
        b.box("sign", (x, y, r.uniform(2.2, 3.0)), (0.04, r.uniform(0.5, 0.8), r.uniform(0.5, 0.8)))


@one_object
def add_sign(b: SceneBuilder, x: float, y: float, face_yaw: float) -> None:
    """Thin post (pole) with one or two retro-reflective plates (sign)."""
    r = b.rng
    height, radius = r.uniform(2.2, 3.2), r.uniform(0.03, 0.05)
    b.frustum("pole", x, y, 0.0, height, radius, radius)
    plate_h = r.uniform(0.5, 0.9)
    b.box("sign", (x, y, height - plate_h / 2 + 0.05), (0.04, r.uniform(0.5, 0.9), plate_h), face_yaw)
    if r.random() < 0.3:
        b.box("sign", (x, y, height - plate_h - 0.3), (0.04, 0.6, 0.35), face_yaw)


@one_object
def add_traffic_light(b: SceneBuilder, x: float, y: float, arm_yaw: float, arm: float) -> None:
    """Pole, a horizontal arm over the road (pole), one or two light housings (traffic light)."""
    r = b.rng
    mat = b.material("pole")
    height, radius = r.uniform(4.5, 6.5), r.uniform(0.1, 0.16)
    b.frustum("pole", x, y, 0.0, height, radius, radius * 0.8, mat)
    ax, ay = _at(x, y, arm_yaw, arm / 2, 0.0)
    b.box("pole", (ax, ay, height - 0.2), (arm, 0.14, 0.14), arm_yaw, mat)
    for frac in ((0.6, 0.95) if r.random() < 0.6 else (0.9,)):
        hx, hy = _at(x, y, arm_yaw, frac * arm, 0.0)
        b.box("traffic_light", (hx, hy, height - 0.8), (0.35, 0.35, 1.0), arm_yaw)
    b.box("traffic_light", (*_at(x, y, arm_yaw, 0.25, 0.0), 2.8), (0.3, 0.3, 0.9), arm_yaw)


@one_object
def add_cone(b: SceneBuilder, x: float, y: float) -> None:
    r = b.rng
    if r.random() < 0.75:
        b.frustum("construction_cone", x, y, 0.0, r.uniform(0.45, 0.9), r.uniform(0.14, 0.2), 0.025)
    else:  # drum / barrel
        b.frustum("construction_cone", x, y, 0.0, r.uniform(0.9, 1.1), 0.3, 0.27)


@one_object
def add_clutter(b: SceneBuilder, x: float, y: float, yaw: float) -> None:
    """Bins, benches, hydrants and boxes: undefined (-1) in the labels, as in Waymo."""
    kind = b.rng.integers(4)
    if kind == 0:
        b.box("undefined", (x, y, 0.5), (0.6, 0.6, 1.0), yaw)
    elif kind == 1:
        b.box("undefined", (x, y, 0.45), (1.8, 0.5, 0.1), yaw)
        b.box("undefined", (*_at(x, y, yaw, 0.0, 0.22), 0.7), (1.8, 0.06, 0.45), yaw)
    elif kind == 2:
        b.frustum("undefined", x, y, 0.0, 0.75, 0.13, 0.1)
    else:
        b.box("undefined", (x, y, 0.6), (0.5, 0.4, 1.2), yaw)


# ----------------------------------------------------------------------------- layout
def _spots(rng: np.random.Generator, start: float, stop: float, gap: tuple[float, float]) -> list[float]:
    """Positions from ``start`` to ``stop`` with uniformly random gaps."""
    out, pos = [], start + rng.uniform(0, gap[1])
    while pos < stop:
        out.append(pos)
        pos += rng.uniform(*gap)
    return out


def generate_scene(rng: np.random.Generator, half_length: float = 80.0, variant: str = DEFAULT_VARIANT) -> Scene:
    """Draw one street scene of style ``variant`` and the ego pose (in a lane, facing along or against x)."""
    b = SceneBuilder(rng, scene_style(variant))
    more = b.style.small_objects  # rates of small objects are multiplied by it, their gaps divided
    L = half_length
    n_lanes = int(rng.integers(2, 5))
    lane_w = rng.uniform(3.0, 3.7)
    parking = rng.random() < 0.6
    park_w = 2.3 if parking else 0.0
    half_w = n_lanes * lane_w / 2 + park_w
    curb_w, curb_h = rng.uniform(0.15, 0.3), rng.uniform(0.1, 0.2)
    walk_w = rng.uniform(1.6, 4.5)
    cross = rng.random() < 0.45
    xc = rng.uniform(-35, 35) if cross else 0.0
    cross_half = rng.uniform(4.0, 8.0) if cross else 0.0
    # x intervals of the blocks on each side of the main street
    blocks = [(-L, xc - cross_half), (xc + cross_half, L)] if cross else [(-L, L)]

    # ground plane: road, lawns, markers (later rectangles win)
    road = b.material("road")
    b.ground_rect("road", -L, L, -half_w, half_w, road)
    if cross:
        b.ground_rect("road", xc - cross_half, xc + cross_half, -L, L, road)
    marker = b.material("lane_marker")
    lane0 = -half_w + park_w
    for k in range(n_lanes + 1):
        yk = lane0 + k * lane_w
        solid = k in (0, n_lanes) or (k == n_lanes // 2 and n_lanes >= 3)
        if (k in (0, n_lanes)) and not parking:
            yk += 0.3 if k == 0 else -0.3
        for x0, x1 in blocks:
            if solid:
                b.ground_rect("lane_marker", x0, x1, yk - 0.08, yk + 0.08, marker)
            else:
                for xs in np.arange(x0 + rng.uniform(0, 10), x1 - 3.0, rng.uniform(9.0, 12.0)):
                    b.ground_rect("lane_marker", xs, xs + 3.0, yk - 0.07, yk + 0.07, marker)
    if cross:
        for side in (-1, 1):  # crosswalk stripes across the main street
            x0 = xc + side * (cross_half + 1.0) - (3.0 if side < 0 else 0.0)
            for ys in np.arange(-half_w + 0.3, half_w - 0.5, 1.0):
                b.ground_rect("lane_marker", x0, x0 + 3.0, ys, ys + 0.5, marker)

    # curbs, sidewalks, lawns, buildings and street furniture, side by side
    for side in (-1, 1):
        y_curb = side * (half_w + curb_w / 2)
        y_walk = side * (half_w + curb_w + walk_w / 2)
        y_out = side * (half_w + curb_w + walk_w)
        zone = rng.uniform(0.0, 9.0)
        zone_cls = "walkable" if rng.random() < 0.6 else "other_ground"
        for x0, x1 in blocks:
            b.box("curb", ((x0 + x1) / 2, y_curb, (curb_h - 0.5) / 2), (x1 - x0, curb_w, curb_h + 0.5))
            b.box("sidewalk", ((x0 + x1) / 2, y_walk, (curb_h - 0.5) / 2), (x1 - x0, walk_w, curb_h + 0.5))
            y_lo, y_hi = sorted((y_out, y_out + side * zone))
            if zone > 0.5:
                b.ground_rect(zone_cls, x0, x1, y_lo, y_hi)
            if cross:  # curb and sidewalk along the cross street, at the block's corner edge
                edge = x1 if x1 < xc else x0
                sgn = 1 if x1 < xc else -1
                y_far = side * L
                ylo, yhi = sorted((side * (half_w + curb_w + walk_w), y_far))
                b.box("curb", (edge - sgn * curb_w / 2, (ylo + yhi) / 2, (curb_h - 0.5) / 2),
                      (curb_w, yhi - ylo, curb_h + 0.5))
                b.box("sidewalk", (edge - sgn * (curb_w + walk_w / 2), (ylo + yhi) / 2, (curb_h - 0.5) / 2),
                      (walk_w, yhi - ylo, curb_h + 0.5))
            # buildings behind the zone (clear of the cross street's sidewalk), gaps hold trees
            margin = curb_w + walk_w
            x_start = x0 + (margin if cross and x0 > xc else 0.0)
            x_end = x1 - (margin if cross and x1 < xc else 0.0)
            x = x_start + rng.uniform(0, 6)
            while x < x_end - 4:
                length = min(rng.uniform(8, 35), x_end - x)
                depth, height = rng.uniform(8, 20), rng.uniform(3.5, 25)
                yb = y_out + side * (zone + depth / 2)
                b.box("building", (x + length / 2, yb, height / 2), (length, depth, height))
                gap = rng.uniform(0, 10) if rng.random() < 0.5 else 0.0
                if gap > 4:
                    add_tree(b, x + length + gap / 2, y_out + side * (zone + rng.uniform(1, 4)), False)
                x += length + gap
            # furniture on the sidewalk and in the zone
            inner = side * (half_w + curb_w + 0.45)
            for xs in _spots(rng, x0 + 2, x1 - 2, (20 / more, 35 / more)):
                add_street_light(b, xs, inner, np.pi / 2 * -side)
            for xs in _spots(rng, x0 + 1, x1 - 1, (6 / more, 15 / more)):
                if rng.random() < 0.65:
                    ty = y_walk + side * rng.uniform(-0.2, 0.3) * walk_w if walk_w > 2.5 or zone < 1 \
                        else y_out + side * rng.uniform(0.5, max(0.6, zone - 0.5))
                    add_tree(b, xs, ty, young=rng.random() < b.style.young_trees)
            for xs in _spots(rng, x0 + 1, x1 - 1, (15 / more, 45 / more)):
                add_sign(b, xs, inner + side * rng.uniform(0, 0.4), np.pi * (side > 0))
            for _ in range(rng.poisson(more * 2.5 * (x1 - x0) / L)):
                add_person(b, rng.uniform(x0 + 1, x1 - 1), y_walk + side * rng.uniform(-0.4, 0.4) * walk_w,
                           rng.uniform(-np.pi, np.pi), "pedestrian", z=curb_h)
            for _ in range(rng.poisson(more * 0.8 * (x1 - x0) / L)):
                add_two_wheeler_on(b, rng.uniform(x0 + 1, x1 - 1), y_out - side * 0.5, np.pi / 2, curb_h)
            for _ in range(rng.poisson(more * 1.5 * (x1 - x0) / L)):
                cy = y_out - side * rng.uniform(0.3, 0.8)
                before = len(b.boxes), len(b.frustums)
                add_clutter(b, rng.uniform(x0 + 1, x1 - 1), cy, rng.uniform(0, np.pi))
                _raise(b, before, curb_h)
            if zone > 2:
                for _ in range(rng.poisson(3 * (x1 - x0) / L)):
                    bx, by = rng.uniform(x_start, x_end), y_out + side * rng.uniform(0.8, zone - 0.5)
                    rr = rng.uniform(0.4, 1.3)
                    b.ellipsoid("vegetation", (bx, by, rr * 0.6), (rr, rr * rng.uniform(0.6, 1), rr * 0.8))
                if rng.random() < 0.3:
                    hy = y_out + side * (zone - 0.6)
                    b.box("vegetation", ((x_start + x_end) / 2, hy, 0.6),
                          (max(x_end - x_start - 2, 1.0), 0.8, rng.uniform(0.8, 1.8)))

    if cross:  # traffic lights at the four corners, arms over the main street
        for sx in (-1, 1):
            for sy in (-1, 1):
                px = xc + sx * (cross_half + curb_w + 0.5)
                py = sy * (half_w + curb_w + 0.6)
                add_traffic_light(b, px, py, -sy * np.pi / 2, rng.uniform(3.0, min(7.0, half_w)))

    # ego: in a lane, facing along (+x, right-hand traffic lanes y < 0) or against x
    lane = int(rng.integers(n_lanes))
    ego_y = lane0 + (lane + 0.5) * lane_w
    ego_x = rng.uniform(-10, 10)
    ego_yaw = (0.0 if ego_y < 0 else np.pi) + rng.normal(0, 0.03)

    # traffic in the lanes, parked vehicles, cyclists, construction cones
    kinds = ["car", "truck", "bus", "other", "motorcyclist", "bicyclist"]
    for k in range(n_lanes):
        yk = lane0 + (k + 0.5) * lane_w
        heading = 0.0 if yk < 0 else np.pi
        for xs in _spots(rng, -L + 5, L - 5, (9, 45)):
            if k == lane and abs(xs - ego_x) < 9:
                continue
            kind = rng.choice(kinds, p=[0.7, 0.12, 0.05, 0.04, 0.045, 0.045])
            _add_vehicle(b, kind, xs, yk + rng.normal(0, 0.2), heading + rng.normal(0, 0.03))
    if parking:
        for side in (-1, 1):
            yp = side * (half_w - park_w / 2)
            for xs in _spots(rng, -L + 3, L - 3, (5.5, 9)):
                if cross and abs(xs - xc) < cross_half + 4:
                    continue
                if rng.random() < 0.6:
                    kind = rng.choice(["car", "truck", "other", "motorcycle"], p=[0.82, 0.1, 0.04, 0.04])
                    yaw = (0.0 if side < 0 else np.pi) + rng.normal(0, 0.04)
                    _add_vehicle(b, kind, xs, yp + rng.normal(0, 0.15), yaw)
    if cross:
        for sx in (-1, 1):
            for xs in _spots(rng, -L + 5, L - 5, (12, 50)):
                if abs(xs) > half_w + 3:
                    _add_vehicle(b, rng.choice(kinds[:2], p=[0.85, 0.15]), xc + sx * lane_w / 2, xs,
                                 sx * np.pi / 2 + rng.normal(0, 0.03))
        for _ in range(rng.poisson(2 * more)):  # pedestrians on the crosswalks
            add_person(b, xc + rng.choice([-1, 1]) * (cross_half + 2.5), rng.uniform(-half_w, half_w),
                       rng.uniform(-np.pi, np.pi), "pedestrian")
    if rng.random() < min(1.0, 0.4 * more):  # a work zone: cones along a lane edge
        k = int(rng.integers(n_lanes))
        ye = lane0 + k * lane_w + rng.uniform(0.3, 0.8)
        xs0 = rng.uniform(-L + 10, L - 30)
        for xs in np.arange(xs0, xs0 + rng.uniform(8, 30), rng.uniform(1.5, 4.0)):
            if k == lane and abs(xs - ego_x) < 5:
                continue
            add_cone(b, xs, ye + rng.normal(0, 0.05))
    return b.build((ego_x, ego_y, ego_yaw))


def add_two_wheeler_on(b: SceneBuilder, x: float, y: float, yaw: float, z: float) -> None:
    """A parked bicycle (80%) or motorcycle on a raised surface of height ``z``."""
    before = len(b.boxes), len(b.frustums), len(b.ellipsoids)
    add_two_wheeler(b, x, y, yaw + b.rng.normal(0, 0.2), motor=b.rng.random() < 0.2, rider=False)
    _raise(b, before, z)


def _raise(b: SceneBuilder, before: tuple[int, ...], z: float) -> None:
    """Lift the primitives added since ``before`` by ``z`` (objects standing on a sidewalk)."""
    for rows in (b.boxes[before[0]:], b.frustums[before[1]:]):
        for row in rows:
            row[2] += z
    if len(before) > 2:
        for row in b.ellipsoids[before[2]:]:
            row[2] += z


def _add_vehicle(b: SceneBuilder, kind: str, x: float, y: float, yaw: float) -> None:
    if kind == "car":
        add_car(b, x, y, yaw)
    elif kind == "truck":
        add_truck(b, x, y, yaw)
    elif kind == "bus":
        add_bus(b, x, y, yaw)
    elif kind == "other":
        add_other_vehicle(b, x, y, yaw)
    elif kind in ("motorcyclist", "bicyclist"):
        add_two_wheeler(b, x, y, yaw, motor=kind == "motorcyclist", rider=True)
    elif kind == "motorcycle":
        add_two_wheeler(b, x, y, yaw, motor=True, rider=False)
    else:
        raise ValueError(f"unknown vehicle kind {kind!r}")
