"""L_seg = CE + Lovasz-softmax (train/engine/losses.py) against independent definitions.

The brute-force Lovasz extension below uses the level-set (Choquet integral) form
f(m) = sum_k (v_k - v_{k-1}) Delta({i : m_i >= v_k}) with the Jaccard set function evaluated on
explicit Python sets, not the sorted-increment formula of the implementation.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from train.engine.losses import class_weights, cross_entropy, lovasz_softmax, segmentation_loss


def _jaccard_loss_of_set(mispredicted: set[int], truth: set[int]) -> float:
    union = truth | mispredicted
    return len(mispredicted) / len(union) if union else 0.0


def _brute_force_lovasz(probs: np.ndarray, labels: np.ndarray, classes: str = "present") -> float:
    keep = labels != -1
    probs, labels = probs[keep], labels[keep]
    per_class = []
    for c in range(probs.shape[1]):
        truth = {i for i in range(len(labels)) if labels[i] == c}
        if classes == "present" and not truth:
            continue
        m = np.abs((labels == c).astype(float) - probs[:, c])
        levels = np.unique(m[m > 0])
        total, prev = 0.0, 0.0
        for v in levels:
            total += (v - prev) * _jaccard_loss_of_set({i for i in range(len(m)) if m[i] >= v}, truth)
            prev = v
        per_class.append(total)
    return float(np.mean(per_class)) if per_class else 0.0


@settings(max_examples=max(settings.default.max_examples // 5, 10))
@given(
    n=st.integers(1, 7),
    k=st.integers(2, 4),
    seed=st.integers(0, 2**31 - 1),
    classes=st.sampled_from(["present", "all"]),
)
def test_lovasz_softmax_equals_brute_force_level_set_definition(n: int, k: int, seed: int, classes: str) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(-1, k, size=n)
    got = lovasz_softmax(torch.from_numpy(probs), torch.from_numpy(labels), classes=classes).item()
    assert got == pytest.approx(_brute_force_lovasz(probs, labels, classes), abs=1e-12)


def test_lovasz_softmax_of_one_hot_predictions_is_one_minus_mean_iou() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, 2, -1, 2])
    pred = torch.tensor([0, 1, 1, 1, 0, 2, 0, 1])
    probs = torch.nn.functional.one_hot(pred, 3).double()
    # class 0: I=1, U=3; class 1: I=2, U=5; class 2: I=1, U=2 (the ignored point does not count)
    expected = 1 - np.mean([1 / 3, 2 / 5, 1 / 2])
    assert lovasz_softmax(probs, labels).item() == pytest.approx(expected, abs=1e-12)


def test_lovasz_softmax_gradient_matches_finite_differences() -> None:
    torch.manual_seed(0)
    logits = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 0, -1, 1, 2, 2])

    def f(z: torch.Tensor) -> torch.Tensor:
        return lovasz_softmax(torch.softmax(z, dim=1), labels)

    assert torch.autograd.gradcheck(f, (logits,), eps=1e-6, atol=1e-7)


def test_segmentation_loss_is_cross_entropy_plus_lovasz_and_ignores_minus_one() -> None:
    torch.manual_seed(1)
    logits = torch.randn(12, 5, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, -1, -1, 1, 2, 0, 3, 4])
    total, parts = segmentation_loss(logits, labels)
    keep = labels != -1
    ce = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    lov = _brute_force_lovasz(torch.softmax(logits, 1).numpy(), labels.numpy())
    assert parts["ce"].item() == pytest.approx(ce.item(), abs=1e-12)
    assert parts["lovasz"].item() == pytest.approx(lov, abs=1e-10)
    assert total.item() == pytest.approx(ce.item() + lov, abs=1e-10)
    # changing the logits of an ignored point changes nothing
    logits2 = logits.clone()
    logits2[5] += 10.0
    assert segmentation_loss(logits2, labels)[0].item() == pytest.approx(total.item(), abs=1e-12)


def test_all_ignored_batch_gives_zero_loss_and_zero_gradient_not_nan() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    labels = torch.full((4,), -1)
    total, _ = segmentation_loss(logits, labels)
    total.backward()
    assert total.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    assert cross_entropy(logits, labels).item() == 0.0


def test_lovasz_softmax_rejects_bad_shapes_and_labels() -> None:
    with pytest.raises(ValueError, match="probs must be"):
        lovasz_softmax(torch.rand(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(RuntimeError, match="labels must lie"):  # a device-side check (no host sync)
        lovasz_softmax(torch.rand(3, 2), torch.tensor([0, 1, 5]))


def test_segmentation_loss_ce_kind_is_cross_entropy_alone_and_bad_kinds_are_refused() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(-1, 5, (40,), generator=gen)
    total, parts = segmentation_loss(logits, labels, kind="ce")
    assert set(parts) == {"ce"}
    assert total.item() == pytest.approx(cross_entropy(logits, labels, -1).item(), abs=1e-15)
    both, parts2 = segmentation_loss(logits, labels, kind="ce+lovasz")
    assert both.item() == pytest.approx((parts2["ce"] + parts2["lovasz"]).item(), abs=1e-15)
    with pytest.raises(ValueError, match="segmentation loss must be one of"):
        segmentation_loss(logits, labels, kind="focal")


def test_class_weights_inverse_sqrt_by_hand() -> None:
    counts = [600.0, 300.0, 100.0, 0.0]  # shares 0.6, 0.3, 0.1, absent
    w = class_weights(counts, "inverse-sqrt")
    raw = [0.6 ** -0.5, 0.3 ** -0.5, 0.1 ** -0.5]
    scale = sum(f * r for f, r in zip((0.6, 0.3, 0.1), raw))  # so that sum_c f_c w_c = 1
    assert w == pytest.approx([r / scale for r in raw] + [0.0], rel=1e-12)
    assert sum(f * x for f, x in zip((0.6, 0.3, 0.1, 0.0), w)) == pytest.approx(1.0, rel=1e-12)
    assert w[2] / w[0] == pytest.approx(6.0 ** 0.5, rel=1e-12)  # 6x rarer weighs sqrt(6)x more
    assert class_weights(counts, "none") is None
    with pytest.raises(ValueError, match="class weighting must be one of"):
        class_weights(counts, "inverse")
    for bad in ([], [1.0, -1.0], [0.0, 0.0], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="class frequencies"):
            class_weights(bad, "inverse-sqrt")


def test_weighted_cross_entropy_is_the_weighted_mean_over_labelled_points() -> None:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    labels = torch.randint(-1, 4, (30,), generator=gen)
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    keep = labels != -1
    per_point = -torch.log_softmax(logits[keep], dim=1).gather(1, labels[keep, None])[:, 0]
    w = weight[labels[keep]]
    expected = (w * per_point).sum() / w.sum()
    got = cross_entropy(logits, labels, -1, weight)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    total, parts = segmentation_loss(logits, labels, kind="ce+lovasz", class_weight=weight)
    assert parts["ce"].item() == pytest.approx(expected.item(), rel=1e-12)
    assert total.item() == pytest.approx((parts["ce"] + lovasz_softmax(torch.softmax(logits, 1), labels)).item(),
                                         rel=1e-12)


@pytest.mark.parametrize("kind", ["ce", "ce+lovasz"])
def test_segmentation_loss_and_its_backward_never_wait_for_the_device(kind: str) -> None:
    """No host synchronisation (decision 39): no boolean indexing, no .item() in L_seg or its backward."""
    from train.engine.op_count import count_ops

    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(64, 6, generator=gen, requires_grad=True)
    labels = torch.randint(-1, 6, (64,), generator=gen)
    weight = torch.rand(6, generator=gen)
    count = count_ops(lambda: segmentation_loss(logits, labels, kind=kind, class_weight=weight)[0].backward())
    assert count.syncs == 0, count.by_sync
    assert count.ops < 80, count.top()  # all classes at once: no per-class loop
