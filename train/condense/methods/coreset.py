"""Coreset baselines of dataset distillation: Random, Herding and K-Center, per class (DD3D Sec. 5,
"Baselines"; decision 71).

Each rule picks, from the clouds of one class, the order in which they join the coreset; the first
CPC of that order are kept (all of them when the class has fewer). Herding and K-Center work on a
feature vector per cloud (the caller's: the global feature of a lightweight PointNet trained on the
full training set, :mod:`train.condense.matching.features`).

- Random: a uniformly random order from ``default_rng([seed, class])``.
- Herding (Welling 2009, as the iCaRL exemplar rule): the k-th pick is the cloud whose feature
  brings the mean of the k picked features nearest (Euclidean) the class mean; picks are never
  repeated; ties go to the lowest index.
- K-Center (Sener & Savarese 2018, the greedy 2-approximation): the first pick is the cloud nearest
  the class mean, then each pick the cloud farthest (Euclidean) from its nearest pick so far; ties
  go to the lowest index.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

# A rule: (the features of one class's clouds (n, D) or None, how many to pick, a random stream) -> order
Rule = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def random_order(features: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` of the class's clouds in a uniformly random order (the features give only their number)."""
    return rng.permutation(len(features))[:count]


def herding_order(features: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy mean matching (module docstring); ``rng`` unused (the rule is deterministic)."""
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    picked: list[int] = []
    total = np.zeros_like(mean)
    free = np.ones(len(x), dtype=bool)
    for k in range(1, min(count, len(x)) + 1):
        gap = np.linalg.norm((total + x) / k - mean, axis=1)
        gap[~free] = np.inf
        best = int(np.argmin(gap))
        picked.append(best)
        total += x[best]
        free[best] = False
    return np.asarray(picked, dtype=np.int64)


def kcenter_order(features: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-center (module docstring); ``rng`` unused (the rule is deterministic)."""
    x = np.asarray(features, dtype=np.float64)
    first = int(np.argmin(np.linalg.norm(x - x.mean(axis=0), axis=1)))
    picked = [first]
    nearest = np.linalg.norm(x - x[first], axis=1)
    for _ in range(1, min(count, len(x))):
        best = int(np.argmax(nearest))
        picked.append(best)
        nearest = np.minimum(nearest, np.linalg.norm(x - x[best], axis=1))
    return np.asarray(picked, dtype=np.int64)


def select_per_class(labels: np.ndarray, features: np.ndarray, cpc: int, rule: Rule, seed: int) -> np.ndarray:
    """Indices into ``labels`` of the coreset: for each class in increasing order, ``rule``'s first
    ``cpc`` clouds of that class (in the rule's order). ``features`` (S, D), one row per cloud."""
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = rule(features[members], cpc, np.random.default_rng([seed, int(label)]))
        chosen.append(members[order[:cpc]])
    return np.concatenate(chosen)
