"""Paper Figure 8 (App. D.3): H1 vs H2 persistence time as N grows, showing why we stop at H1.

Both through the same engine, giotto-ph ``ripser_parallel`` with ``n_threads=1`` (decision 6b),
on the same structured 64-d clouds (decision 6c), ``maxdim=1`` vs ``maxdim=2``. The H2 run's H0
and H1 diagrams must equal the H1 run's, so the extra time is the cost of the dimension alone.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gph import ripser_parallel

from benchmarks.cpu.clouds import teacher_features
from reference.distances import pairwise_distances


def _persistence(dist: np.ndarray, maxdim: int) -> list[np.ndarray]:
    return ripser_parallel(dist, metric="precomputed", maxdim=maxdim, n_threads=1)["dgms"]


def _rounds(maxdim: int, n: int, full_run: bool) -> int:
    if not full_run:
        return 1
    if maxdim == 1:
        return 5
    return 3 if n <= 400 else 1  # H2 at N >= 800 takes seconds per call


@pytest.mark.parametrize("maxdim", [1, 2])
def test_fig8_homology_dimension_time(benchmark: Any, maxdim: int, fig8_n: int, full_run: bool,
                                      thread_info: dict[str, Any]) -> None:
    benchmark.group = "fig8"
    dist = pairwise_distances(teacher_features(fig8_n, "latent", np.random.default_rng(fig8_n)))
    dgms = benchmark.pedantic(_persistence, args=(dist, maxdim), rounds=_rounds(maxdim, fig8_n, full_run))
    assert len(dgms) == maxdim + 1
    if maxdim == 2:
        for low, high in zip(_persistence(dist, 1), dgms[:2]):
            np.testing.assert_array_equal(low, high)
    benchmark.extra_info.update(thread_info)
    benchmark.extra_info.update(method=f"H{maxdim}", maxdim=maxdim, n=fig8_n, family="latent",
                                pairs_per_dim=[len(d) for d in dgms])
