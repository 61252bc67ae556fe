"""The pieces of fast.topo_loss against their reference twins: TPS (Algorithm 5), PWCD
(Eq. 2-3, Algorithms 2/4), per-cloud normalisation (decision 13) and the critical-edge length
Function (Algorithm 3 lines 29-37, decision 5), on fresh random inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fast
from fast.routing import EdgeLengths
from reference.normalize import normalize_cloud, normalize_cloud_backward
from reference.pwcd import pwcd as reference_pwcd
from reference.tps import tps_cloud

FEW = max(settings.default.max_examples // 10, 10)
SEEDS = st.integers(0, 2**32 - 1)


def _clouds(rng: np.random.Generator, sizes: list[int], channels: int, duplicates: bool) -> np.ndarray:
    """Concatenated Gaussian clouds; with ``duplicates`` about a quarter of each cloud's rows repeat others."""
    parts = []
    for n in sizes:
        x = rng.normal(size=(n, channels))
        if duplicates and n > 2:
            src = rng.integers(n, size=max(n // 4, 1))
            dst = rng.integers(n, size=len(src))
            x[dst] = x[src]
        parts.append(x)
    return np.concatenate(parts)


@settings(max_examples=FEW)
@given(seed=SEEDS, duplicates=st.booleans())
def test_fast_tps_selects_the_reference_indices_for_every_cloud(seed: int, duplicates: bool) -> None:
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(1, 60, size=rng.integers(1, 5))]
    m = int(rng.integers(1, 40))
    x = _clouds(rng, sizes, int(rng.integers(1, 6)), duplicates)
    offsets = np.cumsum(sizes)
    got = fast.tps(torch.from_numpy(x), offsets, m, seed=7)
    starts = np.concatenate([[0], offsets[:-1]])
    for b, (lo, hi) in enumerate(zip(starts, offsets)):
        want = tps_cloud(x[lo:hi], m, seed=7 + b)
        np.testing.assert_array_equal(got[b].numpy(), want)


def test_fast_tps_rejects_a_budget_below_one() -> None:
    with pytest.raises(ValueError, match="m must be an integer >= 1"):
        fast.tps(torch.zeros(4, 2, dtype=torch.float64), [4], 0)


@pytest.mark.parametrize("offsets, message", [([3], "end at 3"), ([2, 2, 4], "strictly increasing"), ([], "empty")])
def test_fast_tps_and_normalize_reject_offsets_that_do_not_match_the_rows(offsets: list, message: str) -> None:
    x = torch.zeros(4, 2, dtype=torch.float64)
    for call in (lambda: fast.tps(x, offsets, 2), lambda: fast.normalize(x, offsets)):
        with pytest.raises(ValueError, match=message):
            call()


def _diagram(rng: np.random.Generator, k: int, grid: bool) -> np.ndarray:
    """(k, 2) pairs with birth <= death; on a coarse grid when ``grid`` (forces exact ties)."""
    p = rng.integers(0, 4, size=(k, 2)) / 4.0 if grid else rng.random((k, 2))
    return np.sort(p, axis=1)


@settings(max_examples=FEW)
@given(seed=SEEDS, k_teacher=st.integers(0, 12), k_student=st.integers(0, 12), grid=st.booleans())
def test_fast_pwcd_matches_reference_loss_and_gradient(seed: int, k_teacher: int, k_student: int, grid: bool) -> None:
    rng = np.random.default_rng(seed)
    P, Q = _diagram(rng, k_teacher, grid), _diagram(rng, k_student, grid)
    want_loss, want_grad = reference_pwcd(P, Q, eps_w=1e-8)
    q = torch.tensor(Q, requires_grad=True)
    loss = fast.pwcd(torch.tensor(P), q, eps_w=1e-8)
    assert abs(loss.item() - want_loss) <= 1e-12 * max(1.0, abs(want_loss))
    if k_student:
        loss.backward()
        np.testing.assert_allclose(q.grad.numpy(), want_grad, rtol=1e-10, atol=1e-12)


def test_fast_pwcd_splits_the_gradient_among_tied_nearest_teachers() -> None:
    # The student point (0, 1) is equally close to the teacher points (0, 0.9) and (0, 1.1):
    # uniform sharing gives d/dd = 2/K * (1 - mean(0.9, 1.1)) = 0 from the precision term.
    P = torch.tensor([[0.0, 0.9], [0.0, 1.1]], dtype=torch.float64)
    q = torch.tensor([[0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    fast.pwcd(P, q).backward()
    _, want = reference_pwcd(P.numpy(), q.detach().numpy())
    np.testing.assert_allclose(q.grad.numpy(), want, atol=1e-15)


@pytest.mark.parametrize("mode", ["scale", "l2", "none"])
@settings(max_examples=FEW)
@given(seed=SEEDS, duplicates=st.booleans())
def test_fast_normalize_and_its_autograd_match_reference_normalize_and_backward(mode: str, seed: int,
                                                                                 duplicates: bool) -> None:
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(1, 20, size=rng.integers(1, 4))]
    x = _clouds(rng, sizes, int(rng.integers(1, 5)), duplicates)
    x[rng.integers(len(x))] = 0.0  # a zero vector (l2's non-differentiable point)
    if rng.random() < 0.3:  # a cloud of identical points (scale's non-differentiable point);
        # dyadic values keep its mean exact, as any rounding there is amplified by 1/eps = 1e12
        x[: sizes[0]] = rng.integers(-8, 8, size=x.shape[1]) / 4.0
    offsets = np.cumsum(sizes)
    g_out = rng.normal(size=x.shape)
    xt = torch.tensor(x, requires_grad=True)
    y = fast.normalize(xt, offsets, mode)
    y.backward(torch.from_numpy(g_out))
    starts = np.concatenate([[0], offsets[:-1]])
    for lo, hi in zip(starts, offsets):
        np.testing.assert_allclose(y.detach().numpy()[lo:hi], normalize_cloud(x[lo:hi], mode), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            xt.grad.numpy()[lo:hi], normalize_cloud_backward(x[lo:hi], g_out[lo:hi], mode), rtol=1e-9, atol=1e-9
        )


def test_edge_lengths_function_passes_gradcheck() -> None:
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.normal(size=(6, 3)), requires_grad=True)
    edges = torch.tensor([[0, 1], [2, 5], [0, 1], [3, 4], [1, 4]])  # (0, 1) twice: gradients add up
    assert torch.autograd.gradcheck(lambda t: EdgeLengths.apply(t, edges, 0.0), (x,))


def test_edge_lengths_backward_is_decision_5_and_zero_for_duplicated_points() -> None:
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    edges = torch.tensor([[0, 1], [1, 2]])
    lengths = fast.edge_lengths(x, edges, eps_dist=1e-12)
    np.testing.assert_allclose(lengths.detach().numpy(), [5.0, 0.0])
    lengths.backward(torch.tensor([2.0, 7.0], dtype=torch.float64))
    u = np.array([-3.0, -4.0]) / (5.0 + 1e-12)  # (h_0 - h_1) / (D_01 + eps_dist)
    np.testing.assert_allclose(x.grad.numpy(), [2.0 * u, -2.0 * u, [0.0, 0.0]], rtol=1e-15)


def test_fast_pwcd_match_wins_a_tie_with_the_diagonal() -> None:
    # ||p - q||^2 = 0.5 = dist_diag(p) = dist_diag(q) exactly: decision 10 routes both terms
    # through the match, which gives a different gradient than the diagonal would.
    P = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    q = torch.tensor([[0.5, 1.5]], dtype=torch.float64, requires_grad=True)
    fast.pwcd(P, q).backward()
    _, want = reference_pwcd(P.numpy(), q.detach().numpy())
    np.testing.assert_allclose(q.grad.numpy(), want, atol=1e-15)
    assert q.grad[0, 0] > 0  # the diagonal term would pull the birth down (negative gradient)
