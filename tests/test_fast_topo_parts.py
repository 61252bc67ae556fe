"""The pieces of fast.topo_loss: the special cases next to the twin table.

TPS (Algorithm 5), PWCD (Eq. 2-3, Algorithms 2/4), the per-cloud normalisation (decision 13) and
the critical-edge lengths (``fast.routing``, Algorithm 3 lines 29-37, decision 5) equal their
reference twins on fresh random inputs in tests/test_twins.py. Here: bad budgets and offsets,
the normalisation of selected rows, exact ties of PWCD's nearest neighbours and of a match with the diagonal (decision 10), gradcheck
of the edge-length Function and its decision-5 backward at duplicated points, and the compiled TPS
kernel's indices on clouds large enough for its skips, with ties and extreme scales."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fast
from fast.persistence import tps_indices
from fast.pwcd import _nearest_ties
from fast.routing import EdgeLengths
from reference.pwcd import pwcd as reference_pwcd
from reference.tps import tps_cloud


def test_fast_tps_rejects_a_budget_below_one() -> None:
    with pytest.raises(ValueError, match="m must be an integer >= 1"):
        fast.tps(torch.zeros(4, 2, dtype=torch.float64), [4], 0)


@pytest.mark.parametrize("offsets, message", [([3], "end at 3"), ([2, 2, 4], "strictly increasing"), ([], "empty")])
def test_fast_tps_and_normalize_reject_offsets_that_do_not_match_the_rows(offsets: list, message: str) -> None:
    x = torch.zeros(4, 2, dtype=torch.float64)
    for call in (lambda: fast.tps(x, offsets, 2), lambda: fast.normalize(x, offsets)):
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("mode", ["scale", "l2", "none"])
def test_fast_normalize_of_selected_rows_equals_the_rows_of_the_whole(mode: str) -> None:
    """``rows`` (what the topological loss uses for the TPS rows) gives the same values bit for
    bit and the same gradient as selecting those rows from the whole result."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(40, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    offsets, rows = [15, 40], torch.tensor([3, 0, 14, 20, 39, 22, 20])
    weights = torch.randn(len(rows), 5, generator=gen, dtype=torch.float64)
    whole = fast.normalize(x, offsets, mode)[rows]
    picked = fast.normalize(x, offsets, mode, rows=rows)
    assert torch.equal(whole, picked)
    (g_whole,) = torch.autograd.grad((whole * weights).sum(), x)
    (g_picked,) = torch.autograd.grad((picked * weights).sum(), x)
    torch.testing.assert_close(g_picked, g_whole, rtol=1e-12, atol=1e-14)


def test_fast_pwcd_splits_the_gradient_among_tied_nearest_teachers() -> None:
    # The student point (0, 1) is equally close to the teacher points (0, 0.9) and (0, 1.1):
    # uniform sharing gives d/dd = 2/K * (1 - mean(0.9, 1.1)) = 0 from the precision term.
    P = torch.tensor([[0.0, 0.9], [0.0, 1.1]], dtype=torch.float64)
    q = torch.tensor([[0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    fast.pwcd(P, q).backward()
    _, want = reference_pwcd(P.numpy(), q.detach().numpy())
    np.testing.assert_allclose(q.grad.numpy(), want, atol=1e-15)


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


def _diagram(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    if kind == "h0":  # births all 0: every cost is decided by the deaths alone
        return np.stack([np.zeros(n), rng.random(n)], axis=1)
    if kind == "grid":  # many exactly tied costs, within and across the two diagrams
        births = rng.integers(0, 4, n) / 4.0
        return np.stack([births, births + rng.integers(0, 4, n) / 4.0], axis=1)
    births = rng.random(n)
    return np.stack([births, births + rng.random(n)], axis=1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["generic", "h0", "grid"])
def test_pwcd_nearest_neighbour_sweep_equals_the_full_cost_matrix(kind: str, dtype: type) -> None:
    """The CPU search of PWCD's nearest neighbours prunes by the death coordinate and takes all
    diagram pairs of a batch in one call; its minima and tied pairs equal, bit for bit, those read
    from each pair's whole (M, K) cost matrix, empty sides (also between others) included."""
    rng = np.random.default_rng(7)
    sizes = [(0, 5), (5, 0), (1, 1), (30, 17), (0, 0), (200, 260), (40, 40)]
    Ps = [_diagram(rng, m, kind).astype(dtype) for m, _ in sizes]
    Qs = [_diagram(rng, k, kind).astype(dtype) for _, k in sizes]
    P, Q = np.concatenate(Ps), np.concatenate(Qs)
    diag_p, diag_q = (P[:, 1] - P[:, 0]) ** 2 / dtype(2), (Q[:, 1] - Q[:, 0]) ** 2 / dtype(2)
    p_starts, q_starts = (np.cumsum([0] + [len(d) for d in ds], dtype=np.int64) for ds in (Ps, Qs))
    nn_p, nn_q, ties_p, ties_q = _nearest_ties(P[:, 0].copy(), P[:, 1].copy(), Q[:, 0].copy(), Q[:, 1].copy(),
                                               diag_p, diag_q, p_starts, q_starts)
    want = {"nn_p": [], "nn_q": [], "ties_p": [], "ties_q": []}
    for (m, k), A, B, a, b in zip(sizes, Ps, Qs, p_starts, q_starts):
        cost = (A[:, 0, None] - B[None, :, 0]) ** 2 + (A[:, 1, None] - B[None, :, 1]) ** 2
        row = cost.min(axis=1) if k else np.full(m, np.inf, dtype)
        col = cost.min(axis=0) if m else np.full(k, np.inf, dtype)
        want["nn_p"].append(row)
        want["nn_q"].append(col)
        want["ties_p"].append(np.argwhere((cost == row[:, None]) & (row <= diag_p[a : a + m])[:, None]) + (a, b))
        want["ties_q"].append(np.argwhere((cost == col[None, :]) & (col <= diag_q[b : b + k])[None, :]) + (a, b))
    np.testing.assert_array_equal(nn_p, np.concatenate(want["nn_p"]))
    np.testing.assert_array_equal(nn_q, np.concatenate(want["nn_q"]))
    np.testing.assert_array_equal(ties_p, np.concatenate(want["ties_p"]))
    # the column minima's ties in row-major order of the stacked matrices: sorted by (row, column)
    expect_q = np.concatenate(want["ties_q"])
    np.testing.assert_array_equal(ties_q, expect_q[np.lexsort((expect_q[:, 1], expect_q[:, 0]))])
    assert nn_p.dtype == nn_q.dtype == dtype and len(ties_p) and len(ties_q)
    if kind == "grid":  # rows with several ties: the second scan that writes them
        assert np.unique(ties_p[:, 0], return_counts=True)[1].max() > 1


def test_fast_pwcd_match_wins_a_tie_with_the_diagonal() -> None:
    # ||p - q||^2 = 0.5 = dist_diag(p) = dist_diag(q) exactly: decision 10 routes both terms
    # through the match, which gives a different gradient than the diagonal would.
    P = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    q = torch.tensor([[0.5, 1.5]], dtype=torch.float64, requires_grad=True)
    fast.pwcd(P, q).backward()
    _, want = reference_pwcd(P.numpy(), q.detach().numpy())
    np.testing.assert_allclose(q.grad.numpy(), want, atol=1e-15)
    assert q.grad[0, 0] > 0  # the diagonal term would pull the birth down (negative gradient)


def _tps_clouds() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(21)
    centres = rng.normal(size=(6, 64)) * 4.0
    clustered = centres[rng.integers(6, size=700)] + rng.normal(size=(700, 64))
    grid = rng.integers(-2, 3, size=(400, 5)).astype(np.float64)  # many exactly tied distances
    duplicated = rng.normal(size=(300, 8))
    duplicated[rng.integers(300, size=150)] = duplicated[rng.integers(300, size=150)]
    return [
        ("clustered 64-d (skips active)", clustered),
        ("200 channels (summation halves)", rng.normal(size=(300, 200))),
        ("300 channels (two levels of halves)", rng.normal(size=(160, 300))),
        ("13 channels (a remainder after the 8 partial sums)", rng.normal(size=(300, 13))),
        ("integer grid ties", grid),
        ("duplicated points", duplicated),
        ("tiny scale", clustered * 1e-120),
        ("huge scale", clustered * 1e120),
    ]


@pytest.mark.parametrize(("name", "cloud"), _tps_clouds(), ids=[n for n, _ in _tps_clouds()])
def test_compiled_tps_returns_the_reference_indices_bit_for_bit(name: str, cloud: np.ndarray) -> None:
    # The triangle-inequality skips must never change a running minimum (decision 14).
    for m, seed in ((1, 0), (150, 3), (len(cloud) - 1, 5)):
        np.testing.assert_array_equal(tps_indices(cloud, m, seed), tps_cloud(cloud, m, seed), err_msg=name)
