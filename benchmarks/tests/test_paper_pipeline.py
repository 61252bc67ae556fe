"""The paper-style baseline is a baseline only if it computes the paper's quantities.

Its Ripser-based critical edges (recovered by value lookup) must equal the reference's critical
edges on tie-free clouds, its Python-loop backward must equal the reference routing of
Algorithm 3 followed by the decision-5 feature step, and bad offsets must be refused.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.cpu.paper_pipeline import RipserLayer, paper_topo_loss, ripser_pairs
from reference.distances import pairwise_distances
from reference.persistence import rips_persistence
from reference.routing import diagram_grad_to_dist_grad, dist_grad_to_feature_grad


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [8, 20, 40])
def test_ripser_critical_edges_equal_the_reference(n: int, seed: int) -> None:
    dist = pairwise_distances(np.random.default_rng(seed).normal(size=(n, 5)))
    ref0, ref1 = rips_persistence(dist, maxdim=1)
    pairs0, pairs1, (death0, birth1, death1) = ripser_pairs(dist)
    order0 = np.lexsort((pairs0[:, 0], pairs0[:, 1]))
    order1 = np.lexsort((pairs1[:, 0], pairs1[:, 1]))
    np.testing.assert_array_equal(pairs0[order0], ref0.pairs)
    np.testing.assert_array_equal(death0[order0], ref0.death_edges)
    np.testing.assert_array_equal(pairs1[order1], ref1.pairs)
    np.testing.assert_array_equal(birth1[order1], ref1.birth_edges)
    np.testing.assert_array_equal(death1[order1], ref1.death_edges)


@pytest.mark.parametrize("seed", range(5))
def test_python_loop_backward_equals_reference_routing(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(25, 6))
    feats = torch.tensor(x, requires_grad=True)
    p0, p1 = RipserLayer.apply(feats, 1e-12)
    g0, g1 = rng.normal(size=tuple(p0.shape)), rng.normal(size=tuple(p1.shape))
    (p0 * torch.tensor(g0)).sum().add((p1 * torch.tensor(g1)).sum()).backward()
    dist = pairwise_distances(x)
    diagrams = rips_persistence(dist, maxdim=1)
    # Same pairs in the reference's (death, birth) order: permute the random pair gradients along.
    order0 = np.lexsort((p0.detach().numpy()[:, 0], p0.detach().numpy()[:, 1]))
    order1 = np.lexsort((p1.detach().numpy()[:, 0], p1.detach().numpy()[:, 1]))
    G = diagram_grad_to_dist_grad(dist, diagrams, [g0[order0], g1[order1]])
    np.testing.assert_allclose(feats.grad.numpy(), dist_grad_to_feature_grad(x, G), rtol=1e-10, atol=1e-12)


def test_paper_topo_loss_refuses_offsets_that_do_not_cover_the_rows() -> None:
    student = torch.zeros(10, 4, requires_grad=True)
    with pytest.raises(ValueError, match="END offsets"):
        paper_topo_loss(student, torch.zeros(10, 4), [4, 8])
