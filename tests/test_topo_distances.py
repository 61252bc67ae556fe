"""The alternatives to PWCD: Sinkhorn OT (paper Table 11, decision 31) and TopKD's persistence
images (decision 32), and the gradient-entropy diagnostic (decision 33).

Fast equals reference on random inputs in tests/test_twins.py (rows ``sinkhorn_distance``,
``persistence_image_distance`` and the ``distances`` kind of ``topo_loss``). Here: the reference
gradients against central differences, gradcheck of the torch versions (alone and through the
critical-edge routing of ``fast.topo_loss``), properties of each distance, the entropy, bad input.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fast
from fast.topo_loss import TopoLossJob, _normalized_entropy
from reference.persistence_image import persistence_image_distance
from reference.sinkhorn import sinkhorn_distance
from reference.topo_loss import topo_loss as reference_topo_loss
from strategies import student_teacher_batch


def _diagram(rng: np.random.Generator, k: int) -> np.ndarray:
    return np.sort(rng.random((k, 2)), axis=1)


def _central_differences(fn, Q: np.ndarray, h: float = 1e-6) -> np.ndarray:
    out = np.zeros_like(Q)
    for idx in np.ndindex(Q.shape):
        up, down = Q.copy(), Q.copy()
        up[idx] += h
        down[idx] -= h
        out[idx] = (fn(up) - fn(down)) / (2 * h)
    return out


@pytest.mark.parametrize("eps", [0.02, 0.1, 0.2])
@pytest.mark.parametrize(("m", "k"), [(5, 7), (0, 3), (4, 1), (1, 1)])
def test_sinkhorn_gradient_is_the_envelope_gradient_of_the_optimal_value(eps: float, m: int, k: int) -> None:
    rng = np.random.default_rng(m * 10 + k)
    P, Q = _diagram(rng, m), _diagram(rng, k)
    _, grad = sinkhorn_distance(P, Q, eps)
    numeric = _central_differences(lambda q: sinkhorn_distance(P, q, eps)[0], Q)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)


@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize(("m", "k"), [(5, 7), (1, 1), (3, 2), (8, 4)])
def test_persistence_image_gradient_matches_central_differences(norm: str, m: int, k: int) -> None:
    rng = np.random.default_rng(m * 10 + k)
    P, Q = _diagram(rng, m), _diagram(rng, k)
    loss, grad = persistence_image_distance(P, Q, norm)
    numeric = _central_differences(lambda q: persistence_image_distance(P, q, norm)[0], Q)
    np.testing.assert_allclose(grad, numeric, atol=1e-7 * max(1.0, np.abs(numeric).max()))
    assert loss > 0


def test_torch_distances_pass_gradcheck() -> None:
    rng = np.random.default_rng(3)
    P = torch.tensor(_diagram(rng, 5))
    Q = torch.tensor(_diagram(rng, 6), requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: fast.sinkhorn_distance(P, q, 0.1), (Q,), eps=1e-7, atol=1e-6)
    for norm in ("l2", "l1"):
        assert torch.autograd.gradcheck(lambda q: fast.persistence_image_distance(P, q, norm), (Q,), eps=1e-7,
                                        atol=1e-6)


@pytest.mark.parametrize(("distance", "options"), [("sinkhorn", {"sinkhorn_eps": 0.2}),
                                                   ("persistence-image", {"pi_norm": "l2"}),
                                                   ("persistence-image", {"pi_norm": "l1"})])
def test_topo_loss_with_an_alternative_distance_passes_gradcheck(distance: str, options: dict) -> None:
    """The gradient reaches the features through the critical edges (Theorem 1) for every distance."""
    rng = np.random.default_rng(8)
    S, T, offsets = student_teacher_batch(rng, [6, 5], 5, "scale", seed=0)
    t, off = torch.tensor(T), torch.from_numpy(offsets)
    s = torch.tensor(S, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: fast.topo_loss(x, t, off, m=5, distance=distance, **options), (s,),
                                    eps=1e-7, atol=1e-6)


def test_reference_topo_loss_with_sinkhorn_matches_central_differences_of_the_features() -> None:
    rng = np.random.default_rng(2)
    S, T, offsets = student_teacher_batch(rng, [7, 6], 6, "scale", seed=0)
    _, grad = reference_topo_loss(S, T, offsets, m=6, distance="sinkhorn", sinkhorn_eps=0.2)
    numeric = _central_differences(
        lambda x: reference_topo_loss(x, T, offsets, m=6, distance="sinkhorn", sinkhorn_eps=0.2)[0], S)
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_persistence_image_distance_of_a_diagram_to_itself_is_zero() -> None:
    P = _diagram(np.random.default_rng(0), 9)
    loss, grad = persistence_image_distance(P, P.copy(), "l2")
    assert loss == 0.0 and np.all(grad == 0.0)


def test_sinkhorn_prefers_the_teacher_diagram_to_a_shifted_one() -> None:
    P = _diagram(np.random.default_rng(1), 6)
    same, _ = sinkhorn_distance(P, P.copy(), 0.05)
    shifted, _ = sinkhorn_distance(P, P + [0.0, 0.3], 0.05)
    assert same < shifted


def test_normalized_entropy_is_one_for_a_uniform_spread_and_zero_on_one_point() -> None:
    assert float(_normalized_entropy(torch.ones(8, dtype=torch.float64))) == pytest.approx(1.0)
    assert float(_normalized_entropy(torch.tensor([0.0, 3.0, 0.0], dtype=torch.float64))) == 0.0
    assert _normalized_entropy(torch.zeros(4, dtype=torch.float64)) == 0.0
    p = np.array([0.5, 0.25, 0.25])
    assert _normalized_entropy(torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)) == pytest.approx(
        -(p * np.log(p)).sum() / np.log(3))


def test_sinkhorn_spreads_its_gradient_more_than_pwcd_on_a_noisy_student() -> None:
    """Paper Table 11: soft matching diffuses the gradient (higher entropy) where PWCD's hard
    nearest-neighbour matching with the diagonal fallback localises it."""
    rng = np.random.default_rng(0)
    S, T, offsets = student_teacher_batch(rng, [20, 20], 20, "scale", seed=0)
    entropies = {}
    for distance in ("pwcd", "sinkhorn"):
        job = TopoLossJob(torch.tensor(T), offsets, m=20, distance=distance)
        job.submit_student(torch.tensor(S, requires_grad=True)).loss()
        entropies[distance] = float(job.grad_entropy())
        assert 0.0 <= entropies[distance] <= 1.0
    assert entropies["sinkhorn"] > entropies["pwcd"]


def test_grad_entropy_before_loss_is_an_error() -> None:
    job = TopoLossJob(torch.randn(6, 3, dtype=torch.float64), [6], m=6)
    with pytest.raises(RuntimeError, match="call loss"):
        job.grad_entropy()


@pytest.mark.parametrize(("options", "message"), [
    ({"distance": "wasserstein"}, "distance must be one of"),
    ({"distance": "sinkhorn", "sinkhorn_eps": 0.0}, "sinkhorn_eps"),
    ({"sinkhorn_eps": float("nan")}, "sinkhorn_eps"),
    ({"distance": "persistence-image", "pi_norm": "l3"}, "norm"),
])
def test_bad_distance_options_are_rejected_by_both_twins(options: dict, message: str) -> None:
    S = np.random.default_rng(0).normal(size=(6, 3))
    with pytest.raises(ValueError, match=message):
        reference_topo_loss(S, S, [6], m=6, **options)
    with pytest.raises(ValueError, match=message):
        fast.topo_loss(torch.tensor(S), torch.tensor(S), [6], m=6, **options)


def test_negative_births_are_rejected_by_the_persistence_image() -> None:
    with pytest.raises(ValueError, match="births >= 0"):
        persistence_image_distance(np.array([[-0.5, 0.2]]), np.array([[0.1, 0.2]]))
    with pytest.raises(ValueError, match="births >= 0"):
        fast.persistence_image_distance(torch.tensor([[-0.5, 0.2]]), torch.tensor([[0.1, 0.2]]))
