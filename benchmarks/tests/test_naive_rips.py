"""The naive baseline (decision 21) is a baseline only if it computes the right diagrams.

Its H0/H1 diagrams and critical simplices must equal ``reference.rips_persistence`` exactly (same
float64 distances, same filtration order) and Ripser's within float32 resolution (decision 6a);
its deadline must stop it, and bad input must be refused. The isolated runner must report a
deadline overrun as "timeout" and an unaffordable allocation as "out of memory".
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import ripser
import torch

from benchmarks.cpu.isolated import run_isolated
from benchmarks.cpu.naive_rips import naive_rips_diagrams
from reference.distances import pairwise_distances
from reference.persistence import rips_persistence


def _cloud(n: int, dim: int, seed: int) -> np.ndarray:
    return pairwise_distances(np.random.default_rng(seed).normal(size=(n, dim)))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("n", "dim"), [(4, 2), (9, 2), (16, 3), (25, 8)])
def test_naive_diagrams_equal_reference_rips_persistence(n: int, dim: int, seed: int) -> None:
    dist = _cloud(n, dim, seed)
    ref0, ref1 = rips_persistence(dist, maxdim=1)
    got = naive_rips_diagrams(torch.tensor(dist))
    np.testing.assert_array_equal(got.pairs0.numpy(), ref0.pairs)
    np.testing.assert_array_equal(got.death_edges0.numpy(), ref0.death_edges)
    np.testing.assert_array_equal(got.pairs1.numpy(), ref1.pairs)
    np.testing.assert_array_equal(got.birth_edges1.numpy(), ref1.birth_edges)
    np.testing.assert_array_equal(got.death_triangles1.numpy(), ref1.death_simplices)


@pytest.mark.parametrize("seed", range(3))
def test_naive_diagrams_match_ripser_within_float32(seed: int) -> None:
    dist = _cloud(30, 4, seed)
    got = naive_rips_diagrams(torch.tensor(dist))
    dgms = ripser.ripser(dist, distance_matrix=True, maxdim=1)["dgms"]
    h0 = np.sort(dgms[0][np.isfinite(dgms[0][:, 1]), 1])
    h1 = dgms[1][np.lexsort((dgms[1][:, 0], dgms[1][:, 1]))]
    np.testing.assert_allclose(np.sort(got.pairs0[:, 1].numpy()), h0, rtol=1e-6)
    assert got.pairs1.shape == h1.shape
    np.testing.assert_allclose(got.pairs1.numpy(), h1, rtol=1e-6)


def test_naive_pairs_carry_gradient_to_the_critical_edges() -> None:
    dist = torch.tensor(_cloud(12, 3, 0), requires_grad=True)
    got = naive_rips_diagrams(dist)
    (got.pairs0[:, 1].sum() + got.pairs1[:, 1].sum() - got.pairs1[:, 0].sum()).backward()
    expected = torch.zeros_like(dist)
    for (i, j) in got.death_edges0.tolist():
        expected[i, j] += 1
    for (i, j) in got.birth_edges1.tolist():
        expected[i, j] -= 1
    for tri in got.death_triangles1.tolist():
        a, b, c = tri
        edges = [(a, b), (a, c), (b, c)]
        i, j = max(edges, key=lambda e: float(dist.detach()[e]))
        expected[i, j] += 1
    torch.testing.assert_close(dist.grad, expected, rtol=0, atol=0)


def test_naive_stops_at_its_deadline() -> None:
    with pytest.raises(TimeoutError, match="deadline"):
        naive_rips_diagrams(torch.tensor(_cloud(20, 3, 0)), deadline=time.perf_counter() - 1.0)


@pytest.mark.parametrize("bad", [np.zeros((3, 4)), np.zeros((1, 1)), np.full((3, 3), np.nan)])
def test_naive_rejects_bad_distance_matrices(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="dist"):
        naive_rips_diagrams(torch.tensor(bad))


def test_isolated_runner_reports_timeout_and_out_of_memory() -> None:
    slow = run_isolated("benchmarks.cpu.table6:naive_point", {"n": 60, "seed": 0, "tracemalloc_below_s": 0.0},
                        timeout_s=0.01, memory_limit_mb=4096)
    assert slow["status"] == "timeout", slow
    huge = run_isolated("benchmarks.cpu.table6:naive_point", {"n": 200, "seed": 0, "tracemalloc_below_s": 0.0},
                        timeout_s=120, memory_limit_mb=1024)
    assert huge["status"] == "out of memory", huge
