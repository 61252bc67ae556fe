"""Hypothesis strategies for point clouds, shared by the persistence, routing and loss tests.

Stable public names (other test files import them):

- ``point_clouds(min_n=2, max_n=120, min_dim=1, max_dim=64, kinds=CLOUD_KINDS)``: (N, C) float64
  clouds of the families in ``CLOUD_KINDS``: Gaussian, clustered, noisy circles, tori, collinear,
  duplicated points and integer lattice points (exact distance ties and duplicates).
- ``tie_free_point_clouds(min_n=2, max_n=20, min_dim=1, max_dim=64, min_rel_gap=1e-5)``: clouds
  of the generic families whose distinct pairwise distances are all more than ``min_rel_gap``
  apart relative to the larger one (and all positive), i.e. no exact or near ties. The expected
  number of near ties grows like N^4 * min_rel_gap, so keep ``max_n`` around 20-25 at the
  default gap (hypothesis gives up if it rejects too many draws).
- ``min_relative_gap(feats)``: the smallest relative gap between sorted pairwise distances (0 for
  ties or duplicates), the quantity ``tie_free_point_clouds`` filters on.
- ``student_teacher_batch(rng, sizes, m, normalize, seed, duplicates=False, check=True)``: student
  (sumN, 4) and teacher (sumN, 3) features with END offsets, the input of ``topo_loss``; with
  ``check`` every cloud's normalised TPS subset is separated (decision 6a).

Hypothesis draws the family, N, C, a power-of-two scale and a seed; numpy builds the cloud from
the seed. That keeps 7,000-coordinate clouds cheap to generate and still shrinks towards small
N, small C and simple families. Power-of-two scales keep the lattice family's ties exact.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from hypothesis import event
from hypothesis import strategies as st

from reference.distances import pairwise_distances
from reference.normalize import normalize_cloud
from reference.tps import tps_cloud

CLOUD_KINDS: tuple[str, ...] = (
    "gaussian",
    "clustered",
    "circles",
    "tori",
    "collinear",
    "duplicated",
    "lattice",
)
GENERIC_KINDS: tuple[str, ...] = ("gaussian", "clustered", "circles", "tori", "collinear")


def _embed(native: np.ndarray, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Place a (n, k) cloud into R^dim by a random isometry (k <= dim) or keep its first dims."""
    k = native.shape[1]
    if dim < k:
        return native[:, :dim].copy()
    frame, _ = np.linalg.qr(rng.normal(size=(dim, k)))
    return native @ frame.T + rng.normal(size=dim)


def _gaussian(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=(n, dim))


def _clustered(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centers = 6.0 * rng.normal(size=(int(rng.integers(1, 6)), dim))
    labels = rng.integers(len(centers), size=n)
    return centers[labels] + rng.uniform(0.05, 1.0) * rng.normal(size=(n, dim))


def _circles(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    labels = rng.integers(int(rng.integers(1, 4)), size=n)
    noise = float(rng.choice([1e-3, 0.05, 0.2]))
    parts = []
    for c in range(int(labels.max()) + 1):
        m = int(np.sum(labels == c))
        angle = rng.uniform(0.0, 2.0 * np.pi, size=m)
        ring = rng.uniform(0.5, 3.0) * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        parts.append(_embed(ring + noise * rng.normal(size=ring.shape), dim, rng) + 4 * c)
    return np.concatenate(parts, axis=0)


def _tori(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    big, small = rng.uniform(1.5, 3.0), rng.uniform(0.3, 1.0)
    u, v = rng.uniform(0.0, 2.0 * np.pi, size=(2, n))
    torus = np.stack(
        [(big + small * np.cos(v)) * np.cos(u), (big + small * np.cos(v)) * np.sin(u), small * np.sin(v)],
        axis=1,
    )
    return _embed(torus + 0.01 * rng.normal(size=torus.shape), dim, rng)


def _collinear(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    return rng.uniform(-3.0, 3.0, size=(n, 1)) * direction + rng.normal(size=dim)


def _duplicated(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    base = rng.normal(size=(int(rng.integers(1, max(2, n))), dim))
    rows = np.concatenate([np.arange(len(base)), rng.integers(len(base), size=n - len(base))])
    return base[rng.permutation(rows)]


def _lattice(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, int(rng.integers(1, 4)) + 1, size=(n, dim)).astype(np.float64)


_BUILDERS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "gaussian": _gaussian,
    "clustered": _clustered,
    "circles": _circles,
    "tori": _tori,
    "collinear": _collinear,
    "duplicated": _duplicated,
    "lattice": _lattice,
}


def build_cloud(kind: str, n: int, dim: int, seed: int, scale_exp: int = 0) -> np.ndarray:
    """Deterministic (n, dim) float64 cloud of family ``kind`` from ``seed``, times 2**scale_exp."""
    if kind not in _BUILDERS:
        raise ValueError(f"unknown cloud kind {kind!r}; use one of {CLOUD_KINDS}")
    cloud = _BUILDERS[kind](n, dim, np.random.default_rng(seed)) if n > 0 else np.zeros((0, dim))
    return np.ldexp(cloud, scale_exp)


@st.composite
def point_clouds(
    draw: st.DrawFn,
    min_n: int = 2,
    max_n: int = 120,
    min_dim: int = 1,
    max_dim: int = 64,
    kinds: Sequence[str] = CLOUD_KINDS,
) -> np.ndarray:
    """(N, C) float64 clouds, N in [min_n, max_n], C in [min_dim, max_dim], families ``kinds``."""
    kind = draw(st.sampled_from(tuple(kinds)))
    n = draw(st.integers(min_n, max_n))
    dim = draw(st.integers(min_dim, max_dim))
    scale_exp = draw(st.integers(-4, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    event(f"cloud kind: {kind}")
    event(f"cloud size: N {'<' if n < 40 else '>='} 40")
    return build_cloud(kind, n, dim, seed, scale_exp)


def min_relative_gap(feats: np.ndarray) -> float:
    """Smallest ``(d_(k+1) - d_k) / d_(k+1)`` over sorted pairwise distances (0 if any tie/zero)."""
    dist = pairwise_distances(feats)
    values = np.sort(dist[np.triu_indices(len(dist), 1)])
    if values.size == 0:
        return np.inf
    if values[0] <= 0:
        return 0.0
    if values.size == 1:
        return np.inf
    return float(np.min(np.diff(values) / values[1:]))


def tie_free_point_clouds(
    min_n: int = 2,
    max_n: int = 20,
    min_dim: int = 1,
    max_dim: int = 64,
    min_rel_gap: float = 1e-5,
) -> st.SearchStrategy[np.ndarray]:
    """Generic clouds (no duplicates, no lattice) whose pairwise distances have no near ties."""
    return point_clouds(min_n, max_n, min_dim, max_dim, kinds=GENERIC_KINDS).filter(
        lambda cloud: min_relative_gap(cloud) > min_rel_gap
    )


def _separated(points: np.ndarray, rel: float = 1e-5) -> bool:
    """True if the distinct pairwise distances of ``points`` differ pairwise by more than ``rel``."""
    d = np.unique(pairwise_distances(points)[np.triu_indices(len(points), 1)])
    return len(d) < 2 or bool(np.min(np.diff(d) / d[1:]) > rel)


def _gaussian_cloud(rng: np.random.Generator, n: int, channels: int, duplicates: bool) -> np.ndarray:
    x = rng.normal(size=(n, channels))
    if duplicates and n > 3:
        x[rng.integers(1, n, size=max(n // 5, 1))] = x[0]
    return x


def student_teacher_batch(
    rng: np.random.Generator,
    sizes: Sequence[int],
    m: int,
    normalize: str,
    seed: int,
    duplicates: bool = False,
    check: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Student (sumN, 4) and teacher (sumN, 3) Gaussian clouds and their END offsets.

    With ``duplicates`` about a fifth of each teacher cloud repeats its first point (and the student
    repeats it at the same rows). With ``check`` every cloud's normalised TPS subset (what the
    persistence engine sees) is drawn until separated in the sense of decision 6a: its distinct
    distances more than 1e-5 apart, relative.
    """
    students, teachers = [], []
    for b, n in enumerate(sizes):
        for _ in range(200):
            s, t = _gaussian_cloud(rng, n, 4, False), _gaussian_cloud(rng, n, 3, duplicates)
            s[np.all(t == t[0], axis=1)] = s[0]  # duplicated points have equal features in both
            t_n = normalize_cloud(t, normalize)
            idx = tps_cloud(t_n, m, seed + b)
            if not check or (_separated(t_n[idx]) and _separated(normalize_cloud(s, normalize)[idx])):
                break
        else:
            raise AssertionError("could not draw a separated cloud; lower the sizes")
        students.append(s)
        teachers.append(t)
    return np.concatenate(students), np.concatenate(teachers), np.cumsum(sizes)
