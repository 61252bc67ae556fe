"""fast.saliency_loss and fast.kld: the special cases next to the twin table.

Their comparison with reference.saliency_loss / reference.kld on fresh random inputs (several
clouds of very different sizes, several layers, labels with ignored points, several temperatures,
float64 and float32, CUDA) is in tests/test_twins.py. Here: exact min/max ties of the saliency map
(autograd's scatter_reduce split equals the reference's uniform split), gradcheck on small float64
inputs, offsets given as a sequence, the all-ignored KL, and bad inputs raising ValueError.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_reference_saliency import random_saliency_inputs
from test_twins import BY_NAME, compare, to_torch

# Imported from the defining modules: after ``import reference.kld`` the package attribute
# ``reference.kld`` is the submodule, not the function (same for fast.kld).
from fast.kld import kld as fast_kld
from fast.saliency import saliency_loss as fast_saliency_loss
from reference.saliency import saliency_loss as reference_saliency_loss

DEVICES = [
    pytest.param("cpu"),
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")],
    ),
]


def _to_torch(inp: dict, dtype: torch.dtype, device: str) -> dict:
    return {k: to_torch(v, dtype, device, requires_grad=k == "student_acts") for k, v in inp.items()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fast_saliency_matches_reference_at_exact_min_max_ties(device: str, dtype: torch.dtype) -> None:
    inp = random_saliency_inputs(11, (40, 5, 200), 2)
    for A, g, s_off in zip(inp["student_acts"], inp["student_grads"], inp["student_stage_offsets"]):
        # Inside every cloud, copy (sign-flipped) the extremal rows: exact map ties at min and max.
        for lo, hi in zip(np.concatenate([[0], s_off[:-1]]), s_off):
            rows = np.arange(lo, hi)
            order = rows[np.argsort(np.abs(A[rows]).dot(np.abs(g[rows]).mean(0)))]
            A[order[1:3]] = A[order[0]]
            A[order[-3:-1]] = -A[order[-1]]
        A[::7] = 0.0  # zero activations: |F| has derivative sign(0) = 0 in both
    compare(BY_NAME["saliency_loss"], inp, dtype, device, np.random.default_rng(0))


def test_fast_saliency_gradcheck_float64() -> None:
    inp = random_saliency_inputs(2, (4, 7, 3), 2)
    t = _to_torch(inp, torch.float64, "cpu")

    def f(*acts: torch.Tensor) -> torch.Tensor:
        return fast_saliency_loss(**{**t, "student_acts": list(acts)})

    assert torch.autograd.gradcheck(f, tuple(t["student_acts"]), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_fast_saliency_accepts_offsets_as_a_sequence_and_ignores_given_grad_graph() -> None:
    inp = random_saliency_inputs(4, (6, 9), 2)
    t = _to_torch(inp, torch.float64, "cpu")
    t["student_grads"] = [g.requires_grad_(True) for g in t["student_grads"]]
    loss = fast_saliency_loss(**{**t, "offsets": [int(x) for x in inp["offsets"]]})
    loss.backward()
    assert all(g.grad is None for g in t["student_grads"])  # Eq. (4) weights are constants
    assert loss.item() == pytest.approx(reference_saliency_loss(**inp)[0], rel=1e-12)


def _bad_saliency(mutate) -> dict:
    t = _to_torch(random_saliency_inputs(3, (4, 6), 2), torch.float64, "cpu")
    mutate(t)
    return t


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d["teacher_acts"].pop(), "one entry per layer"),
        (lambda d: d["student_acts"][0].data.__setitem__((0, 0), float("nan")), "student_acts contains"),
        (lambda d: d["teacher_grads"][1].__setitem__((1, 1), float("inf")), "teacher_grads contains"),
        (lambda d: d.update(offsets=torch.tensor([4, 9])), "offsets"),
        (lambda d: d.update(offsets=torch.tensor([4.0, 10.0])), "offsets"),
        (lambda d: d.update(offsets=torch.tensor([6, 4])), "offsets"),
        (lambda d: d["student_stage_offsets"].__setitem__(1, torch.tensor([1, 2, 5])), "student_stage_offsets"),
        (lambda d: d["teacher_index"].__setitem__(0, d["teacher_index"][0][:-1]), "teacher_index"),
        (lambda d: d["student_index"][0].__setitem__(0, int(d["student_stage_offsets"][0][-1]) - 1), "outside their own cloud"),
        (lambda d: d["student_grads"].__setitem__(0, d["student_grads"][0][:, :1]), "student_grads"),
    ],
)
def test_fast_saliency_bad_input_raises_value_error(mutate, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fast_saliency_loss(**_bad_saliency(mutate))


def test_fast_kld_gradcheck_float64() -> None:
    rng = np.random.default_rng(0)
    zs = torch.tensor(rng.normal(size=(6, 4)), requires_grad=True)
    zt = torch.tensor(rng.normal(size=(6, 4)))
    labels = torch.tensor([0, -1, 2, 3, -1, 1])
    assert torch.autograd.gradcheck(lambda z: fast_kld(z, zt, labels, temperature=2.0), (zs,))


def test_fast_kld_all_ignored_is_zero_with_zero_gradient() -> None:
    zs = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    loss = fast_kld(zs, torch.randn(5, 3, dtype=torch.float64), torch.full((5,), -1))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(zs.grad == 0)


@pytest.mark.parametrize(
    "zs, zt, labels, T, match",
    [
        (torch.zeros(3, 2), torch.zeros(3, 3), None, 1.0, "same shape"),
        (torch.tensor([[float("nan"), 0.0]]), torch.zeros(1, 2), None, 1.0, "student_logits"),
        (torch.zeros(1, 2), torch.tensor([[float("inf"), 0.0]]), None, 1.0, "teacher_logits"),
        (torch.zeros(2, 2), torch.zeros(2, 2), None, 0.0, "temperature"),
        (torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(3, dtype=torch.long), 1.0, "labels"),
        (torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2), 1.0, "labels"),
    ],
)
def test_fast_kld_bad_input_raises_value_error(zs, zt, labels, T, match) -> None:
    with pytest.raises(ValueError, match=match):
        fast_kld(zs, zt, labels, temperature=T)


def test_fast_kld_zero_class_weights_give_zero_with_zero_gradient() -> None:
    zs = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    loss = fast_kld(zs, torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, -1, 1, 0]),
                    class_weight=torch.tensor([0.0, 0.0, 2.0]))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(zs.grad == 0)


@pytest.mark.parametrize(
    "labels, w, match",
    [
        (None, torch.ones(2), "pass labels"),
        (torch.tensor([0, 1]), torch.ones(3), r"class_weight must be a \(2,\) tensor"),
        (torch.tensor([0, 1]), torch.tensor([1.0, -1.0]), "finite weights >= 0"),
        (torch.tensor([0, 1]), torch.tensor([1.0, float("nan")]), "finite weights >= 0"),
        (torch.tensor([0, 5]), torch.ones(2), r"labels must lie in \[0, 2\)"),
    ],
)
def test_fast_kld_bad_class_weight_raises_value_error(labels, w, match) -> None:
    with pytest.raises(ValueError, match=match):
        fast_kld(torch.zeros(2, 2), torch.zeros(2, 2), labels, class_weight=w)
