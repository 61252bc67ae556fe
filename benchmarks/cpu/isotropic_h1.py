"""One cloud's persistence diagrams on nearly isotropic features, by stage, in core-milliseconds.

The setting of ``docs/notes/topo-term-on-gpu.md`` ("The H1 engine on isotropic features (CPU)",
decision 83): the untrained paper presets' features have an effective dimension (participation
ratio of the covariance spectrum) of 28-32. :func:`isotropic_cloud` draws such features: 64-d
Gaussian, covariance spectrum ``exp(-i / tau)`` with ``tau`` giving a participation ratio of 30,
normalised per cloud (``scale``, decision 13), TPS to ``m`` points (paper Algorithm 5).

:func:`stage_times` runs H0 + H1 of one cloud as a persistence worker does
(``fast.persistence.cloud.stage_parts``) on one thread and sums the process CPU time of each
compiled stage, timed around the module-level functions the engine calls (a stage's entry is
looked up in its module at every call). Process CPU time, not wall time: the machines of these
sessions share their cores with other jobs. Run: ``python -m benchmarks.cpu.isotropic_h1 [clouds]``.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from fast.persistence import cloud, edge_stage, native, tps_indices
from reference.normalize import normalize_cloud

CHANNELS = 64
EFFECTIVE_DIMENSION = 30.0
SOURCE_POINTS = 4096
STAGES: dict[str, tuple[tuple[object, str], ...]] = {
    "distances": ((cloud, "_distance_matrix"),),
    "radius, certificate, edges kept": ((edge_stage, "enclosing_radius"), (edge_stage, "mst_longest_edge"),
                                        (edge_stage, "edges_apparent_between"), (edge_stage, "edges_within")),
    "edge sort": ((edge_stage, "length_order"),),
    "edge ranks": ((edge_stage, "build_edge_order"),),
    "apparent pairs, tree": ((edge_stage, "lune_empty"), (edge_stage, "columns_to_reduce")),
    "H1 reduction": ((native, "reduce_columns"),),
}
"""Each stage and the functions (module, name) whose time it sums; the rest of a cloud is ``other``."""


def participation_ratio(spectrum: np.ndarray) -> float:
    """``(sum l)^2 / sum l^2`` of the eigenvalues ``l``: the effective dimension."""
    return float(spectrum.sum() ** 2 / (spectrum**2).sum())


def isotropic_cloud(seed: int, m: int = 1024, effective_dimension: float = EFFECTIVE_DIMENSION) -> np.ndarray:
    """(m, 64) float64 features of one cloud (see the module docstring)."""
    taus = np.linspace(1.0, 200.0, 4000)
    ratios = [participation_ratio(np.exp(-np.arange(CHANNELS) / tau)) for tau in taus]
    spectrum = np.exp(-np.arange(CHANNELS) / taus[int(np.argmin(np.abs(np.subtract(ratios, effective_dimension))))])
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(CHANNELS, CHANNELS)))
    x = normalize_cloud(rng.normal(size=(SOURCE_POINTS, CHANNELS)) * np.sqrt(spectrum) @ rotation.T, "scale")
    return x[tps_indices(x, m, seed)]


@contextmanager
def _timed(seconds: dict[str, float]) -> Iterator[None]:
    """Within the block, every function of :data:`STAGES` adds its process CPU time to ``seconds``."""
    originals = [(module, name, getattr(module, name)) for fns in STAGES.values() for module, name in fns]

    def timed(label: str, fn: Callable) -> Callable:
        def call(*args: object, **kwargs: object) -> object:
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[label] += time.process_time() - start
        return call

    for label, fns in STAGES.items():
        for module, name in fns:
            setattr(module, name, timed(label, getattr(module, name)))
    try:
        yield
    finally:
        for module, name, fn in originals:
            setattr(module, name, fn)


def stage_times(points: np.ndarray, rounds: int = 3) -> dict[str, float]:
    """Core-seconds per stage of H0 + H1 of ``points`` (the round of least total), plus ``other`` and ``total``."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        seconds = dict.fromkeys(STAGES, 0.0)
        with _timed(seconds):
            start = time.process_time()
            _, h1 = cloud.stage_parts(cloud.distances(points), None)
            h1()
            total = time.process_time() - start
        if not best or total < best["total"]:
            best = {**seconds, "other": total - sum(seconds.values()), "total": total}
    return best


def main(clouds: int = 12) -> None:
    """Print each stage's mean and per-cloud core-ms over ``clouds`` isotropic clouds."""
    samples = [isotropic_cloud(seed) for seed in range(clouds)]
    stage_times(samples[0], rounds=1)  # loads (or compiles) the kernels
    rows = [stage_times(points) for points in samples]
    print(f"{clouds} clouds of 1,024 points, load average {os.getloadavg()[0]:.2f}")
    for label in rows[0]:
        values = [1e3 * row[label] for row in rows]
        print(f"{label:32s} mean {np.mean(values):6.1f}  per cloud {[round(v, 1) for v in values]}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
