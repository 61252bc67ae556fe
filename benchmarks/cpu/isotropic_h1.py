"""One cloud's persistence diagrams on nearly isotropic features, by stage, in core-milliseconds,
and in wall milliseconds at 1 and 2 threads.

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

With ``--threads`` (decision 89), :func:`thread_rounds` gives each stage's wall time instead, the
cloud's row-parallel parts on 1 and on 2 threads (:data:`THREADS`) in interleaved rounds, with the
load average, under a worker's memory setting (``fast.persistence.worker.keep_freed_memory``: the
large arrays of a cloud reuse the pages of the one before):
``python -m benchmarks.cpu.isotropic_h1 --threads [clouds] [rounds]``. Wall time counts only on
cores no other job uses, so the load average is printed with every round.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from fast.persistence import cloud, edge_stage, native, tps_indices
from fast.persistence.worker import keep_freed_memory
from reference.normalize import normalize_cloud

CHANNELS = 64
EFFECTIVE_DIMENSION = 30.0
SOURCE_POINTS = 4096
STAGES: dict[str, tuple[tuple[object, str], ...]] = {
    "distances": ((cloud, "distances"),),
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
def _timed(seconds: dict[str, float], clock: Callable[[], float]) -> Iterator[None]:
    """Within the block, every function of :data:`STAGES` adds its time by ``clock`` to ``seconds``."""
    originals = [(module, name, getattr(module, name)) for fns in STAGES.values() for module, name in fns]

    def timed(label: str, fn: Callable) -> Callable:
        def call(*args: object, **kwargs: object) -> object:
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[label] += clock() - start
        return call

    for label, fns in STAGES.items():
        for module, name in fns:
            setattr(module, name, timed(label, getattr(module, name)))
    try:
        yield
    finally:
        for module, name, fn in originals:
            setattr(module, name, fn)


def stage_times(points: np.ndarray, rounds: int = 3, threads: int = 1,
                clock: Callable[[], float] = time.process_time) -> dict[str, float]:
    """Seconds by ``clock`` (core-seconds by default) per stage of H0 + H1 of ``points`` on
    ``threads`` threads (the round of least total), plus ``other`` and ``total``."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        seconds = dict.fromkeys(STAGES, 0.0)
        with _timed(seconds, clock):
            start = clock()
            _, h1 = cloud.stage_parts(cloud.distances(points, threads), None, threads)
            h1()
            total = clock() - start
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


THREADS = (1, 2)
"""The thread counts :func:`thread_rounds` compares (the machine of these sessions has 2 cores)."""


def thread_rounds(clouds: int = 12, rounds: int = 4) -> None:
    """Print each stage's wall ms per cloud (mean over ``clouds`` clouds of each cloud's least
    over ``rounds`` rounds) at each of :data:`THREADS`; a round runs every cloud at every thread
    count in turn, so the counts share the machine's moments."""
    keep_freed_memory()
    samples = [isotropic_cloud(seed) for seed in range(clouds)]
    for threads in THREADS:  # loads (or compiles) the kernels, starts the helper threads
        stage_times(samples[0], rounds=1, threads=threads, clock=time.perf_counter)
    best: dict[int, list[dict[str, float]]] = {threads: [{} for _ in samples] for threads in THREADS}
    for round_ in range(rounds):
        totals = {}
        for threads in THREADS:
            for kept, points in zip(best[threads], samples):
                row = stage_times(points, rounds=1, threads=threads, clock=time.perf_counter)
                if not kept or row["total"] < kept["total"]:
                    kept.update(row)
            totals[threads] = np.mean([row["total"] for row in best[threads]])
        print(f"round {round_ + 1}: load average {os.getloadavg()[0]:.2f}, best so far (ms a cloud): "
              + ", ".join(f"{threads} thread(s) {1e3 * total:.1f}" for threads, total in totals.items()))
    print(f"{clouds} clouds of 1,024 points, wall ms a cloud (mean of each cloud's best of {rounds} rounds)")
    print(f"{'stage':32s} " + " ".join(f"{threads:>3d} thread(s)" for threads in THREADS))
    for label in best[THREADS[0]][0]:
        print(f"{label:32s} " + " ".join(f"{1e3 * np.mean([row[label] for row in best[t]]):13.1f}" for t in THREADS))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--threads"]:
        thread_rounds(*(int(a) for a in sys.argv[2:]))
    else:
        main(*(int(a) for a in sys.argv[1:]))
