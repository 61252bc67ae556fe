"""``shapes``: procedurally generated objects of 13 classes built from labelled parts, the object
set built into the project (no download), generated on the fly like the synthetic LiDAR scenes.

Each class is a function of a random generator that returns its parts as placed primitives
(:mod:`.surfaces`; z up, about a metre across) with proportions drawn from wide ranges, so the
classes overlap in size and in parts (a stool is a chair without a back, a bench a long stool that
may have one, a table a tall stool with a wide top, a bottle and a rocket a cylinder with a tapered
end). A cloud of class c is N points drawn on its surfaces by area, then turned about the up axis
by a uniform angle, and jittered by Gaussian noise of 1% of its radius.

Determinism: cloud i of a standard split (``trainval`` or ``test``) is of class ``i % 13`` and is
drawn from ``default_rng([seed, split code, i, 1])`` (the pre-processing draws from
``[seed, split code, i]``), so it depends only on those, not on the clouds made before it.
``size`` clouds of each class form ``trainval`` and ``size * 2 // 5`` the test split
(:data:`SHAPES_SIZE` by default).

Part ids are global over the classes, in class order (:data:`SHAPE_PARTS`): chair 0-3, stool 4-5, ...
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .cloud import SPLIT_CODES, RawClouds, standard_split
from .surfaces import Box, Ellipsoid, Frustum, Placed, TorusArc, rotation_about, sample_surfaces

SHAPES_SIZE = 100  # clouds of each class in the training split (trainval)
NOISE = 0.01  # jitter, a fraction of the cloud's radius

Builder = Callable[[np.random.Generator], list[Placed]]


def _rod(start: np.ndarray | tuple[float, ...], end: np.ndarray | tuple[float, ...], radius: float, part: int,
         caps: bool = False) -> Placed:
    """A cylinder of ``radius`` from point ``start`` to point ``end`` (discs at both ends with ``caps``)."""
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    axis = end - start
    length = float(np.linalg.norm(axis))
    u = axis / length
    cross, cos = np.cross([0.0, 0.0, 1.0], u), float(u[2])
    sin = float(np.linalg.norm(cross))
    if sin < 1e-12:  # along +z or -z
        turn = np.eye(3) if cos > 0 else rotation_about(0, np.pi)
    else:  # Rodrigues: the rotation taking +z to u
        k = cross / sin
        kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
        turn = np.eye(3) + sin * kx + (1 - cos) * kx @ kx
    return Placed(Frustum(radius, radius, length, bottom=caps, top=caps), part, tuple(start), turn)


def _leaning(size: tuple[float, float, float], hinge: tuple[float, float, float], lean: float,
             part: int) -> Placed:
    """A box standing on the edge ``hinge`` (its bottom centre), leaned back (towards -y) by ``lean``."""
    turn = rotation_about(0, lean)
    return Placed(Box(size), part, tuple(np.asarray(hinge) + turn @ np.array([0.0, 0.0, size[2] / 2])), turn)


def _legs(rng: np.random.Generator, width: float, depth: float, height: float, part: int,
          inset: float = 0.03) -> list[Placed]:
    """Four legs (round or square, a random choice) under the corners of a width x depth top."""
    round_legs, thick = rng.random() < 0.5, rng.uniform(0.015, 0.04)
    out = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * (width / 2 - inset), sy * (depth / 2 - inset)
            leg = Frustum(thick, thick, height) if round_legs else Box((2 * thick, 2 * thick, height))
            out.append(Placed(leg, part, (x, y, 0.0 if round_legs else height / 2)))
    return out


def chair(rng: np.random.Generator) -> list[Placed]:
    """seat 0, back 1, legs 2, arms 3 (a third of the chairs)."""
    w, d, t, h = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.03, 0.08), rng.uniform(0.35, 0.5)
    back_h, tilt = rng.uniform(0.3, 0.6), rng.uniform(0.0, 0.3)
    parts = [Placed(Box((w, d, t)), 0, (0.0, 0.0, h + t / 2)), *_legs(rng, w, d, h, 2)]
    parts.append(_leaning((w, 0.04, back_h), (0.0, -d / 2 + 0.02, h + t), tilt, 1))
    if rng.random() < 1 / 3:
        for side in (-1, 1):
            parts.append(Placed(Box((0.05, d * 0.8, 0.04)), 3, (side * w / 2, 0.0, h + t + 0.2)))
    return parts


def stool(rng: np.random.Generator) -> list[Placed]:
    """seat 0, legs 1 (three or four, splayed)."""
    r, t, h = rng.uniform(0.15, 0.25), rng.uniform(0.03, 0.07), rng.uniform(0.45, 0.75)
    legs, splay, thick = int(rng.integers(3, 5)), rng.uniform(0.0, 0.2), rng.uniform(0.015, 0.03)
    parts = [Placed(Frustum(r, r, t, bottom=True, top=True), 0, (0.0, 0.0, h))]
    for k in range(legs):
        c, s = np.cos(2 * np.pi * k / legs), np.sin(2 * np.pi * k / legs)
        foot = 0.8 * r + np.tan(splay) * h
        parts.append(_rod((foot * c, foot * s, 0.0), (0.8 * r * c, 0.8 * r * s, h), thick, 1))
    return parts


def table(rng: np.random.Generator) -> list[Placed]:
    """top 0, legs 1 (four legs, or a pedestal on a foot)."""
    w, d, t, h = rng.uniform(0.7, 1.6), rng.uniform(0.5, 1.0), rng.uniform(0.03, 0.08), rng.uniform(0.6, 0.8)
    parts = [Placed(Box((w, d, t)), 0, (0.0, 0.0, h + t / 2))]
    if rng.random() < 0.7:
        return parts + _legs(rng, w, d, h, 1, inset=rng.uniform(0.03, 0.15))
    r = rng.uniform(0.04, 0.08)
    return parts + [Placed(Frustum(r, r, h), 1), Placed(Frustum(min(w, d) / 3, r, 0.05, bottom=True), 1)]


def bench(rng: np.random.Generator) -> list[Placed]:
    """seat 0, legs 1, back 2 (half the benches)."""
    w, d, t, h = rng.uniform(1.0, 1.8), rng.uniform(0.3, 0.45), rng.uniform(0.03, 0.08), rng.uniform(0.38, 0.5)
    parts = [Placed(Box((w, d, t)), 0, (0.0, 0.0, h + t / 2)), *_legs(rng, w, d, h, 1, inset=0.08)]
    if rng.random() < 0.5:
        back_h = rng.uniform(0.25, 0.45)
        parts.append(Placed(Box((w, 0.04, back_h)), 2, (0.0, -d / 2, h + t + back_h / 2)))
    return parts


def lamp(rng: np.random.Generator) -> list[Placed]:
    """base 0, stem 1, shade 2."""
    base_r, stem_h, stem_r = rng.uniform(0.08, 0.16), rng.uniform(0.3, 0.7), rng.uniform(0.01, 0.025)
    shade_h, lower, upper = rng.uniform(0.15, 0.3), rng.uniform(0.1, 0.2), rng.uniform(0.05, 0.12)
    base = Box((2 * base_r, 2 * base_r, 0.03)) if rng.random() < 0.3 else Frustum(base_r, base_r * 0.8, 0.03, top=True)
    return [Placed(base, 0, (0.0, 0.0, 0.015 if isinstance(base, Box) else 0.0)),
            Placed(Frustum(stem_r, stem_r, stem_h), 1, (0.0, 0.0, 0.03)),
            Placed(Frustum(lower, upper, shade_h), 2, (0.0, 0.0, 0.03 + stem_h - shade_h * 0.4))]


def mug(rng: np.random.Generator) -> list[Placed]:
    """body 0 (open at the top), handle 1."""
    r, h, taper = rng.uniform(0.035, 0.06), rng.uniform(0.07, 0.13), rng.uniform(0.9, 1.15)
    ring, tube = rng.uniform(0.45, 0.6) * h / 2, rng.uniform(0.006, 0.012)
    handle = Placed(TorusArc(ring, tube, -np.pi / 2, np.pi), 1, (r * (1 + taper) / 2, 0.0, h / 2),
                    rotation_about(0, np.pi / 2))
    return [Placed(Frustum(r, r * taper, h, bottom=True), 0), handle]


def bottle(rng: np.random.Generator) -> list[Placed]:
    """body 0, neck 1 (shoulder and neck), cap 2."""
    r, h = rng.uniform(0.03, 0.06), rng.uniform(0.12, 0.25)
    neck_r, shoulder, neck_h, cap_h = rng.uniform(0.25, 0.45) * r, rng.uniform(0.02, 0.06), rng.uniform(0.03, 0.08), \
        rng.uniform(0.01, 0.025)
    return [Placed(Frustum(r, r, h, bottom=True), 0),
            Placed(Frustum(r, neck_r, shoulder), 1, (0.0, 0.0, h)),
            Placed(Frustum(neck_r, neck_r, neck_h), 1, (0.0, 0.0, h + shoulder)),
            Placed(Frustum(neck_r * 1.15, neck_r * 1.15, cap_h, top=True), 2, (0.0, 0.0, h + shoulder + neck_h))]


def airplane(rng: np.random.Generator) -> list[Placed]:
    """fuselage 0, wings 1, tail 2, engines 3 (none, two or four)."""
    length, radius = rng.uniform(1.0, 1.6), rng.uniform(0.05, 0.1)
    span, chord, sweep = rng.uniform(0.8, 1.6), rng.uniform(0.12, 0.25), rng.uniform(0.0, 0.5)
    parts = [Placed(Ellipsoid((length / 2, radius, radius)), 0)]
    for side in (-1, 1):
        wing = rotation_about(2, side * sweep)
        parts.append(Placed(Box((chord, span / 2, 0.015)), 1, (0.0, side * span / 4, 0.0), wing))
        parts.append(Placed(Box((chord * 0.6, span / 6, 0.01)), 2, (-length / 2 + chord * 0.3, side * span / 12,
                                                                      0.02), rotation_about(2, side * sweep)))
    fin_h = rng.uniform(0.12, 0.25)
    parts.append(Placed(Box((chord * 0.7, 0.01, fin_h)), 2, (-length / 2 + chord * 0.35, 0.0, fin_h / 2)))
    engines = int(rng.choice([0, 2, 4]))
    for k in range(engines):
        y = (1 if k % 2 else -1) * span * (0.15 if k < 2 else 0.3)
        parts.append(_rod((chord * 0.3, y, -0.06), (chord * 0.3 - chord * 1.1, y, -0.06), radius * 0.45, 3))
    return parts


def car(rng: np.random.Generator) -> list[Placed]:
    """body 0, cabin 1, wheels 2."""
    length, width, body_h = rng.uniform(1.0, 1.5), rng.uniform(0.45, 0.6), rng.uniform(0.15, 0.3)
    cab_l, cab_h, wheel_r = length * rng.uniform(0.4, 0.65), rng.uniform(0.12, 0.22), rng.uniform(0.08, 0.12)
    parts = [Placed(Box((length, width, body_h)), 0, (0.0, 0.0, wheel_r + body_h / 2)),
             Placed(Box((cab_l, width * 0.85, cab_h)), 1, (-0.05 * length, 0.0, wheel_r + body_h + cab_h / 2))]
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * 0.33 * length, sy * (width / 2 - 0.03)
            parts.append(_rod((x, y, wheel_r), (x, y - sy * 0.06, wheel_r), wheel_r, 2, caps=True))
    return parts


def rocket(rng: np.random.Generator) -> list[Placed]:
    """body 0, nose 1, fins 2 (three or four)."""
    r, h, nose_h = rng.uniform(0.05, 0.1), rng.uniform(0.6, 1.2), rng.uniform(0.12, 0.3)
    fins, fin_h, fin_w = int(rng.integers(3, 5)), rng.uniform(0.1, 0.25), rng.uniform(0.06, 0.15)
    parts = [Placed(Frustum(r, r, h, bottom=True), 0), Placed(Frustum(r, 0.0, nose_h), 1, (0.0, 0.0, h))]
    for k in range(fins):
        a = 2 * np.pi * k / fins
        parts.append(Placed(Box((fin_w, 0.01, fin_h)), 2, ((r + fin_w / 2) * np.cos(a), (r + fin_w / 2) * np.sin(a),
                                                           fin_h / 2), rotation_about(2, a)))
    return parts


def guitar(rng: np.random.Generator) -> list[Placed]:
    """body 0 (two bouts), neck 1, head 2; lying along x."""
    lower, upper, depth = rng.uniform(0.16, 0.22), rng.uniform(0.11, 0.16), rng.uniform(0.04, 0.06)
    neck_l, head_l = rng.uniform(0.4, 0.6), rng.uniform(0.1, 0.18)
    return [Placed(Ellipsoid((lower * 1.1, lower, depth)), 0),
            Placed(Ellipsoid((upper * 1.1, upper, depth)), 0, (lower * 1.1 + upper * 0.6, 0.0, 0.0)),
            Placed(Box((neck_l, 0.05, 0.025)), 1, (lower * 1.1 + upper * 1.4 + neck_l / 2 - 0.1, 0.0, 0.0)),
            Placed(Box((head_l, 0.08, 0.02)), 2, (lower * 1.1 + upper * 1.4 + neck_l - 0.1 + head_l / 2, 0.0, 0.0))]


def laptop(rng: np.random.Generator) -> list[Placed]:
    """base 0, screen 1 (opened 80-130 degrees about the back edge)."""
    w, d, t = rng.uniform(0.3, 0.4), rng.uniform(0.2, 0.28), rng.uniform(0.01, 0.025)
    opening = np.deg2rad(rng.uniform(80, 130))
    return [Placed(Box((w, d, t)), 0, (0.0, 0.0, t / 2)),
            _leaning((w, 0.008, d * rng.uniform(0.9, 1.0)), (0.0, -d / 2, t), opening - np.pi / 2, 1)]


def bookshelf(rng: np.random.Generator) -> list[Placed]:
    """frame 0 (sides, top, bottom, back half of the time), shelves 1."""
    w, d, h = rng.uniform(0.5, 1.2), rng.uniform(0.25, 0.4), rng.uniform(0.8, 2.0)
    shelves, t = int(rng.integers(2, 6)), rng.uniform(0.015, 0.03)
    parts = [Placed(Box((t, d, h)), 0, (side * (w / 2 - t / 2), 0.0, h / 2)) for side in (-1, 1)]
    parts += [Placed(Box((w, d, t)), 0, (0.0, 0.0, z)) for z in (t / 2, h - t / 2)]
    if rng.random() < 0.5:
        parts.append(Placed(Box((w, t, h)), 0, (0.0, -d / 2, h / 2)))
    for k in range(1, shelves + 1):
        parts.append(Placed(Box((w - 2 * t, d, t)), 1, (0.0, 0.0, h * k / (shelves + 1))))
    return parts


# class name -> (builder, part names), in class-id order; the part ids are global in this order
SHAPE_CLASSES: dict[str, tuple[Builder, tuple[str, ...]]] = {
    "chair": (chair, ("seat", "back", "leg", "arm")),
    "stool": (stool, ("seat", "leg")),
    "table": (table, ("top", "leg")),
    "bench": (bench, ("seat", "leg", "back")),
    "lamp": (lamp, ("base", "stem", "shade")),
    "mug": (mug, ("body", "handle")),
    "bottle": (bottle, ("body", "neck", "cap")),
    "airplane": (airplane, ("fuselage", "wing", "tail", "engine")),
    "car": (car, ("body", "cabin", "wheel")),
    "rocket": (rocket, ("body", "nose", "fin")),
    "guitar": (guitar, ("body", "neck", "head")),
    "laptop": (laptop, ("base", "screen")),
    "bookshelf": (bookshelf, ("frame", "shelf")),
}
SHAPE_NAMES = tuple(SHAPE_CLASSES)
SHAPE_PARTS = tuple(f"{name}/{part}" for name, (_, parts) in SHAPE_CLASSES.items() for part in parts)
SHAPE_PART_CLASSES = np.repeat(np.arange(len(SHAPE_CLASSES)), [len(p) for _, p in SHAPE_CLASSES.values()])
_PART_OFFSETS = np.concatenate([[0], np.cumsum([len(p) for _, p in SHAPE_CLASSES.values()])[:-1]])


def make_shape(label: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One cloud of class ``label``: ``n`` points (n, 3) and their global part ids (n,)."""
    build, _ = SHAPE_CLASSES[SHAPE_NAMES[label]]
    points, parts = sample_surfaces(build(rng), n, rng)
    points = points @ rotation_about(2, rng.uniform(0.0, 2 * np.pi)).T
    radius = np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1)).max()
    points = points + rng.normal(0.0, NOISE * radius, points.shape)
    return points, parts + _PART_OFFSETS[label]


def read_shapes(split: str, points: int, seed: int, size: int) -> RawClouds:
    """``split`` (:data:`.cloud.SPLITS`) of the generated set, ``size`` training clouds a class."""
    def generate(standard: str) -> RawClouds:
        count = len(SHAPE_NAMES) * (size if standard == "trainval" else size * 2 // 5)
        code = SPLIT_CODES[standard]
        labels = np.arange(count, dtype=np.int64) % len(SHAPE_NAMES)
        keys = np.stack([np.full(count, code), np.arange(count)], axis=1)
        return RawClouds(labels, keys, [f"shapes {standard} cloud {i}" for i in range(count)],
                         lambda i: make_shape(int(labels[i]), points, np.random.default_rng([seed, code, i, 1])))

    return standard_split(split, generate)
