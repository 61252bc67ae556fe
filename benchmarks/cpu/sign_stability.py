"""How stable DD3D's fixed sign step is when an object is sampled again (decision 78's choice of its
``w0``): every training cloud of the generated shapes, read at 2 x ``points`` points, is split at
random into two halves of ``points``; each half is put in the canonical frame
(``reference.pca_canonical``, then ``reference.sign_canonical`` at ``w0``). A half's frame is
counted as flipped when the two canonical clouds are more than ``factor`` times farther apart
(symmetric Chamfer distance) than under the best of the 8 axis sign flips: the sign step chose
differently for the same object. A mirror-symmetric object's free axis flips harmlessly (both signs
give the same set), so it is not counted.

    python -m benchmarks.sign_stability        # 30 clouds a class, 1,024-point halves, w0 1, 10, 30
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy.spatial import cKDTree

import reference
from train.data.objects import load_objects

FLIPS = [np.array(f, dtype=np.float64) for f in itertools.product([1.0, -1.0], repeat=3)]


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """The symmetric mean nearest-neighbour distance of two (N, 3) clouds."""
    return float(cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def flip_rates(size: int, points: int, w0s: list[float], factor: float = 1.5, seed: int = 0) -> dict[float, float]:
    """The share of clouds whose two halves' sign steps disagree (module docstring), by ``w0``."""
    clouds = load_objects("shapes", split="train", points=2 * points, size=size).points.astype(np.float64)
    rng = np.random.default_rng(seed)
    halves = [(c[order[:points]], c[order[points:]]) for c in clouds for order in [rng.permutation(2 * points)]]
    rates = {}
    for w0 in w0s:
        flipped = 0
        for pair in halves:
            a, b = (reference.sign_canonical(reference.pca_canonical(h[None]), w0)[0] for h in pair)
            flipped += chamfer(a, b) > factor * min(chamfer(a, b * f) for f in FLIPS)
        rates[w0] = flipped / len(halves)
    return rates


if __name__ == "__main__":
    for w0, rate in flip_rates(30, 1024, [1.0, 10.0, 30.0]).items():
        print(f"w0 {w0:g}: {100 * rate:.1f}% of the clouds' halves take different signs")
