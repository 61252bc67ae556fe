"""Full-resolution evaluation (train/evaluation/evaluate.py): predictions reach every original point through
the grid-sampling inverse, and test-time augmentation sums the views per original point."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torch.utils.data import Subset

from test_train_support import tiny_config, tiny_data
from train.evaluation.evaluate import evaluate, results_table
from train.evaluation.metrics import IoUAccumulator

BUILDING, ROAD, CAR = 13, 17, 0


class RuleModel(nn.Module):
    """Predicts from point heights (rotation- and flip-invariant) or, with ``use_x``, from x."""

    def __init__(self, use_x: bool = False) -> None:
        super().__init__()
        self.use_x = use_x
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict[str, torch.Tensor]) -> SimpleNamespace:
        c = batch["coord"]
        key = c[:, 0] if self.use_x else c[:, 2]
        pred = torch.where(key > 0.3, BUILDING, torch.where(key > -1.5, CAR, ROAD))
        return SimpleNamespace(logits=torch.nn.functional.one_hot(pred, 22).float() * 5.0)


def _expected(model: RuleModel, dataset) -> IoUAccumulator:  # type: ignore[no-untyped-def]
    acc = IoUAccumulator(22)
    for i in range(len(dataset)):
        s = dataset[i]
        logits = model({"coord": torch.from_numpy(s["coord"])}).logits
        acc.update(logits.argmax(1)[torch.from_numpy(s["inverse"])], torch.from_numpy(s["origin_segment"]))
    return acc


def test_evaluation_scores_every_original_point_through_the_inverse_map(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, synthetic_scenes=6, synthetic_val_fraction=0.5)
    data = tiny_data(cfg)
    val = data.val_views(False)
    acc = evaluate(RuleModel(), val, 22, torch.device("cpu"), data.collate)
    expected = _expected(RuleModel(), val[0])
    assert torch.equal(acc.state(), expected.state())
    # every labelled original point was counted, not just the voxel representatives
    n_labelled = sum(int((val[0][i]["origin_segment"] >= 0).sum()) for i in range(len(val[0])))
    n_original = sum(len(val[0][i]["inverse"]) for i in range(len(val[0])))
    n_kept = sum(len(val[0][i]["coord"]) for i in range(len(val[0])))
    assert acc.target_count.sum() == n_labelled > 0
    assert n_original > n_kept  # grid sampling merged points, so full resolution is a real difference


def test_evaluation_keeps_each_scans_own_counts_in_the_splits_order(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, synthetic_scenes=6, synthetic_val_fraction=0.5)
    data = tiny_data(cfg)
    val = data.val_views(False)
    acc = evaluate(RuleModel(), val, 22, torch.device("cpu"), data.collate)
    assert acc.scans.shape == (len(val[0]), 3, 22)
    for i in range(len(val[0])):
        one = _expected(RuleModel(), Subset(val[0], [i]))
        assert torch.equal(acc.scans[i], one.state()), i
    assert torch.equal(acc.scans.sum(0), acc.state())
    counts = acc.scan_counts()
    assert counts["union"] == acc.scans[:, 1].long().tolist() and len(counts["target_count"]) == len(val[0])
    limited = evaluate(RuleModel(), val, 22, torch.device("cpu"), data.collate, max_scans=2)
    assert torch.equal(limited.scans, acc.scans[:2])


def test_tta_of_a_rotation_invariant_model_changes_nothing_and_of_a_x_model_something(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, synthetic_scenes=6, synthetic_val_fraction=0.5)
    data = tiny_data(cfg)
    plain = evaluate(RuleModel(), data.val_views(False), 22, torch.device("cpu"), data.collate)
    tta = evaluate(RuleModel(), data.val_views(True), 22, torch.device("cpu"), data.collate)
    assert len(data.val_views(True)) > 1
    assert torch.equal(plain.state(), tta.state())
    plain_x = evaluate(RuleModel(use_x=True), data.val_views(False), 22, torch.device("cpu"), data.collate)
    tta_x = evaluate(RuleModel(use_x=True), data.val_views(True), 22, torch.device("cpu"), data.collate)
    assert not torch.equal(plain_x.state(), tta_x.state())


def test_results_table_lists_present_classes_miou_parameters_and_latency() -> None:
    names = ["car", "truck", "road"]
    res = {m: {"iou": [0.5, math.nan, 0.25], "miou": 0.375, "class_frequency": [0.4, 0.0, 0.6],
               "parameters": 1234, "latency_ms": 12.34} for m in ("teacher", "student seg")}
    table = results_table(res, names).splitlines()
    assert table[0] == "| class | val points % | teacher | student seg |"
    assert table[2] == "| car | 40.00 | 50.0 | 50.0 |"
    assert not any(line.startswith("| truck") for line in table)  # absent from the labels
    assert table[-3:] == ["| **mIoU** | | **37.5** | **37.5** |", "| parameters | | 1,234 | 1,234 |",
                          "| latency ms/scan | | 12.3 | 12.3 |"]
