"""Semantic-segmentation IoU accumulated over a whole split (spec D "Validation").

Intersection and union per class are summed over every point of every scan (at full resolution,
ignore label -1) and only divided at the end: IoU_c = I_c / U_c, mIoU = the mean over the classes
that occur in the split's labels. A class that never occurs in the labels has no meaningful IoU
(it is 0 as soon as one point is predicted as it, NaN otherwise) and is left out of the mean; its
false positives still lower the IoU of the true classes of those points. Real splits hold every
class; the synthetic set holds a subset of the Waymo classes. Summing per-scan IoUs instead would
weight small scans like big ones.
"""
from __future__ import annotations

import math

import torch


class IoUAccumulator:
    """Running per-class intersection and union; mergeable across processes with all-reduce."""

    def __init__(self, num_classes: int, ignore_index: int = -1) -> None:
        if num_classes < 1:
            raise ValueError(f"IoUAccumulator: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.intersection = torch.zeros(num_classes, dtype=torch.float64)
        self.union = torch.zeros(num_classes, dtype=torch.float64)
        self.target_count = torch.zeros(num_classes, dtype=torch.float64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of predicted and true labels (same shape, integer)."""
        if pred.shape != target.shape:
            raise ValueError(f"IoUAccumulator.update: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        pred = pred.reshape(-1).long().cpu()
        target = target.reshape(-1).long().cpu()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= self.num_classes):
            raise ValueError(
                f"IoUAccumulator.update: target labels must lie in [0, {self.num_classes}) or be "
                f"{self.ignore_index}, got range [{int(target.min())}, {int(target.max())}]"
            )
        if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= self.num_classes):
            raise ValueError(f"IoUAccumulator.update: predictions must lie in [0, {self.num_classes})")
        k = self.num_classes
        inter = torch.bincount(target[pred == target], minlength=k).double()
        area_pred = torch.bincount(pred, minlength=k).double()
        area_target = torch.bincount(target, minlength=k).double()
        self.intersection += inter
        self.union += area_pred + area_target - inter
        self.target_count += area_target

    def merge_(self, other: "IoUAccumulator") -> None:
        self.intersection += other.intersection
        self.union += other.union
        self.target_count += other.target_count

    def state(self) -> torch.Tensor:
        """(3,K) tensor [intersection, union, target_count] for all-reduce."""
        return torch.stack([self.intersection, self.union, self.target_count])

    def load_state(self, state: torch.Tensor) -> None:
        self.intersection, self.union, self.target_count = (t.clone().double().cpu() for t in state)

    def iou(self) -> list[float]:
        """Per-class IoU; NaN for a class with an empty union."""
        return [
            float(i / u) if u > 0 else math.nan for i, u in zip(self.intersection.tolist(), self.union.tolist())
        ]

    def miou(self) -> float:
        """Mean IoU over the classes present in the labels (see the module docstring)."""
        present = self.target_count.tolist()
        vals = [v for v, n in zip(self.iou(), present) if n > 0]
        return float(sum(vals) / len(vals)) if vals else math.nan

    def accuracy(self) -> float:
        total = float(self.target_count.sum())
        return float(self.intersection.sum()) / total if total > 0 else math.nan


class ScanIoU(IoUAccumulator):
    """A split's IoU that keeps every scan's own counts: ``scans`` (S, 3, K) float64, row s the
    ``state()`` of scan s alone (intersection, union, target count; counts of points, so their sums
    are exact), in the split's order; the totals are their sum. What a scene bootstrap resamples
    (``train.study.report.scene_bootstrap_difference``)."""

    def __init__(self, scans: torch.Tensor, ignore_index: int = -1) -> None:
        if scans.ndim != 3 or scans.shape[1] != 3:
            raise ValueError(f"ScanIoU: scans must be (S, 3, K), got {tuple(scans.shape)}")
        super().__init__(scans.shape[2], ignore_index)
        self.scans = scans.double().cpu()
        self.load_state(self.scans.sum(0))

    def scan_counts(self) -> dict[str, list[list[int]]]:
        """The per-scan counts as integer lists (JSON): intersection, union, target_count, each (S, K)."""
        names = ("intersection", "union", "target_count")
        return {name: self.scans[:, i].long().tolist() for i, name in enumerate(names)}
