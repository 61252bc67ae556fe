"""mIoU accumulated over a split (train/evaluation/metrics.py) against a hand-computed example."""
from __future__ import annotations

import math

import pytest
import torch

from train.evaluation.metrics import IoUAccumulator


def test_iou_is_accumulated_over_the_split_not_averaged_per_scan() -> None:
    acc = IoUAccumulator(num_classes=3)
    # scan 1: target 0 0 1 1 ; pred 0 1 1 1
    acc.update(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]))
    # scan 2: target 1 2 2 -1 ; pred 2 2 0 0  (the ignored point does not count)
    acc.update(torch.tensor([2, 2, 0, 0]), torch.tensor([1, 2, 2, -1]))
    # class 0: I = 1, U = |pred{0}|=2 + |target{0}|=2 - 1 = 3
    # class 1: I = 2, U = |pred|=3 + |target|=3 - 2 = 4
    # class 2: I = 1, U = |pred|=2 + |target|=2 - 1 = 3
    assert acc.iou() == pytest.approx([1 / 3, 2 / 4, 1 / 3])
    assert acc.miou() == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert acc.accuracy() == pytest.approx(4 / 7)
    # per-scan averaging would give a different number: scan 2 alone has class-1 IoU 0
    per_scan = IoUAccumulator(3)
    per_scan.update(torch.tensor([2, 2, 0, 0]), torch.tensor([1, 2, 2, -1]))
    assert per_scan.iou()[1] == 0.0


def test_classes_absent_from_the_labels_are_left_out_of_the_mean() -> None:
    acc = IoUAccumulator(num_classes=4)
    # class 3 is predicted once but never labelled; class 2 is neither
    acc.update(torch.tensor([0, 1, 1, 3]), torch.tensor([0, 1, 1, 1]))
    iou = acc.iou()
    assert iou[:2] == [1.0, pytest.approx(2 / 3)] and math.isnan(iou[2]) and iou[3] == 0.0
    assert acc.miou() == pytest.approx((1.0 + 2 / 3) / 2)


def test_merging_two_accumulators_equals_one_over_all_points() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 5, (200,), generator=g)
    target = torch.randint(-1, 5, (200,), generator=g)
    whole, a, b = IoUAccumulator(5), IoUAccumulator(5), IoUAccumulator(5)
    whole.update(pred, target)
    a.update(pred[:77], target[:77])
    b.update(pred[77:], target[77:])
    a.merge_(b)
    assert torch.equal(a.state(), whole.state())


def test_iou_accumulator_rejects_mismatched_or_out_of_range_labels() -> None:
    acc = IoUAccumulator(3)
    with pytest.raises(ValueError, match="differ"):
        acc.update(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="target labels"):
        acc.update(torch.tensor([0]), torch.tensor([3]))
