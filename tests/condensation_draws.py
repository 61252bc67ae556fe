"""Random inputs for the condensation maths (DD3D's rotator, matching objectives and generator), and the
margins that keep them away from the ill-posed inputs (decision 74).

Shared by the twin table (tests/test_twins.py) and the property tests (tests/test_condensation_maths.py).
A cloud is drawn again until it is well-posed by these stated margins:

- ``GAP_MARGIN``: every two neighbouring principal variances differ by at least this fraction of the
  largest, unless both are zero to rounding (at most ``ZERO_VARIANCE`` of the largest: a cloud of one
  or two points);
- ``ENTRY_MARGIN``: in each principal axis of non-zero variance, the largest two magnitudes of its
  entries differ by at least this (``pca_canonical``'s eigenvector sign convention);
- ``SIGN_MARGIN``: every axis's ``|mean sin(w0 x)|`` is at least this (the sign step).
"""
from __future__ import annotations

import numpy as np

GAP_MARGIN = 0.05
ZERO_VARIANCE = 1e-20
ENTRY_MARGIN = 1e-6
SIGN_MARGIN = 1e-3


def random_orthogonal(rng: np.random.Generator, dim: int = 3) -> np.ndarray:
    """A Haar-random orthogonal matrix (a rotation or a reflection, each with probability 1/2)."""
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def pca_well_posed(cloud: np.ndarray) -> bool:
    """Whether one (N, D) cloud's principal frame and eigenvector signs are determined by the margins."""
    x = cloud - cloud.mean(axis=0)
    lam, u = np.linalg.eigh(x.T @ x / len(x))
    lam, u = lam[::-1], u[:, ::-1]
    top = max(lam[0], 0.0)
    nonzero = lam > ZERO_VARIANCE * top
    if np.any(nonzero[:-1] & (lam[:-1] - lam[1:] < GAP_MARGIN * top)):
        return False
    magnitudes = np.sort(np.abs(u), axis=0)
    return len(u) < 2 or bool(np.all((magnitudes[-1] - magnitudes[-2] >= ENTRY_MARGIN)[nonzero]))


def sign_well_posed(cloud: np.ndarray, w0: float) -> bool:
    """Whether every axis's mean of ``sin(w0 x)`` of one (N, D) cloud is at least ``SIGN_MARGIN`` from 0."""
    return bool(np.all(np.abs(np.sin(w0 * cloud).mean(axis=0)) >= SIGN_MARGIN))


def anisotropic_cloud(rng: np.random.Generator, n: int, duplicates: bool = False) -> np.ndarray:
    """An (n, 3) Gaussian cloud of random axis lengths, turned and moved at random, well-posed for PCA."""
    while True:
        x = rng.normal(size=(n, 3)) * rng.uniform(0.2, 3.0, size=3)
        if duplicates and n > 2:
            x[rng.integers(n, size=max(n // 4, 1))] = x[rng.integers(n, size=max(n // 4, 1))]
        x = x @ random_orthogonal(rng) + rng.normal(scale=2.0, size=3)
        if pca_well_posed(x):
            return x


def draw_pca_canonical(rng: np.random.Generator, kind: str) -> dict:
    n = int(rng.integers(1, 4)) if kind == "tiny" else int(rng.integers(4, 60))
    clouds = [anisotropic_cloud(rng, n, duplicates=kind == "duplicates") for _ in range(int(rng.integers(1, 4)))]
    return dict(points=np.stack(clouds))


def draw_sign_canonical(rng: np.random.Generator, kind: str) -> dict:
    n = int(rng.integers(1, 4)) if kind == "tiny" else int(rng.integers(4, 60))
    w0 = float(rng.choice([0.5, 1.0, 2.0, 5.0]))
    clouds, count = [], int(rng.integers(1, 4))
    while len(clouds) < count:
        x = rng.normal(size=(n, 3)) * rng.uniform(0.2, 3.0, size=3) + rng.normal(size=3)
        if kind == "duplicates" and n > 2:
            x[rng.integers(n, size=max(n // 4, 1))] = x[rng.integers(n, size=max(n // 4, 1))]
        if sign_well_posed(x, w0):
            clouds.append(x)
    return dict(points=np.stack(clouds), w0=w0)


def random_gradients(rng: np.random.Generator, kind: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two lists of gradients of the same parameters: matrices, convolution kernels and 1-D vectors."""
    shapes = []
    for _ in range(int(rng.integers(1, 5))):
        out, fan_in = (int(v) for v in rng.integers(1, 7, size=2))
        shape_kind = "vector" if kind == "one_dim" else str(rng.choice(["matrix", "vector", "conv1d", "conv2d"]))
        shapes.append({"matrix": (out, fan_in), "vector": (out,), "conv1d": (out, fan_in, int(rng.integers(1, 4))),
                       "conv2d": (out, fan_in, 1, int(rng.integers(1, 3)))}[shape_kind])
    a = [rng.normal(size=s) for s in shapes]
    b = [rng.normal(size=s) for s in shapes]
    if kind == "zero_rows":  # whole output rows of zeros on one side or both (a unit no point reaches)
        for x, y in zip(a, b):
            rows = rng.random(x.shape[0]) < 0.4
            x[rows & (rng.random(x.shape[0]) < 0.7)] = 0.0
            y[rows & (rng.random(x.shape[0]) < 0.7)] = 0.0
    return a, b


def draw_gradient_match_distance(rng: np.random.Generator, kind: str) -> dict:
    a, b = random_gradients(rng, kind)
    return dict(grads_a=a, grads_b=b)


def draw_distribution_match_loss(rng: np.random.Generator, kind: str) -> dict:
    d = int(rng.integers(1, 9))
    if kind == "empty":
        return dict(embeddings_a=np.zeros((0, d)), labels_a=np.zeros(0, dtype=np.int64),
                    embeddings_b=np.zeros((0, d)), labels_b=np.zeros(0, dtype=np.int64))
    classes = rng.choice(8, size=1 if kind == "tiny" else int(rng.integers(1, 6)), replace=False)
    sides = []
    for low, high in ((1, 4), (1, 12)):
        per_class = np.ones(len(classes), dtype=int) if kind == "tiny" else rng.integers(low, high, size=len(classes))
        labels = rng.permutation(np.repeat(classes, per_class))
        sides.append((rng.normal(scale=2.0, size=(len(labels), d)) + rng.normal(size=d), labels))
    (ea, ya), (eb, yb) = sides
    return dict(embeddings_a=ea, labels_a=ya, embeddings_b=eb, labels_b=yb)


def random_generator_weights(rng: np.random.Generator, widths: list[int], noise_dims: int = 1) -> dict:
    """SIREN-initialised weights (first layer U(-1, 1), later U(+-sqrt(6 / fan_in))) in (out, in) layout;
    the codes are as wide as the first layer, the first layer takes ``noise_dims`` scalars a point."""
    def uniform(bound: float, *shape: int) -> np.ndarray:
        return rng.uniform(-bound, bound, size=shape)

    fans = [noise_dims] + widths[:-1]
    return dict(sine_weights=[uniform(1.0 if i == 0 else np.sqrt(6 / f), w, f) for i, (w, f) in enumerate(zip(widths, fans))],
                sine_biases=[uniform(1.0 / np.sqrt(f), w) for w, f in zip(widths, fans)],
                modulator_weights=[uniform(1.0 / np.sqrt(f), w, f) for w, f in zip(widths[1:], widths[:-1])],
                modulator_biases=[uniform(0.5, w) for w in widths[1:]],
                out_weight=uniform(np.sqrt(6 / widths[-1]), 3, widths[-1]))


def draw_generator_forward(rng: np.random.Generator, kind: str) -> dict:
    """A generator's inputs; ``surface``: two noise scalars a point ((B, N, 2) noise)."""
    clouds = int(rng.integers(1, 4))
    n = int(rng.integers(1, 3)) if kind == "tiny" else int(rng.integers(3, 40))
    widths = [int(w) for w in rng.integers(1, 9, size=int(rng.integers(1, 4)))]
    w0 = float(rng.choice([100.0, 400.0])) if kind == "high_frequency" else float(rng.choice([1.0, 10.0, 30.0]))
    dims = 2 if kind == "surface" else 1
    noise = rng.random((clouds, n, 2)) if dims == 2 else rng.random((clouds, n))
    return dict(noise=noise, codes=rng.normal(size=(clouds, widths[0])),
                **random_generator_weights(rng, widths, dims), w0=w0)
