"""The scores of the condensation protocol: overall and mean class accuracy for
classification, instance and class mIoU for part segmentation (DD3D Sec. 5, "Metrics"; PointNet's
part-segmentation rule), and their mean over runs with a 95% interval (decision 73).

- overall accuracy (OA): the share of test clouds whose class is right;
- mean class accuracy (mAcc): the mean over the classes present in the test split of each one's accuracy;
- instance mIoU: for every test cloud, the mean over the parts of its category of the part's IoU
  (1 where the part is neither predicted nor present), averaged over the clouds; class mIoU the
  mean over categories of their clouds' mean.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from train.study.report import mean_ci

SCORES = {"classification": ("oa", "macc"), "parts": ("instance_miou", "class_miou")}


def classification_scores(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``oa`` and ``macc`` (fractions) of class predictions (S,) against ``labels`` (S,)."""
    right = predicted == labels
    per_class = [right[labels == c].mean() for c in np.unique(labels)]
    return {"oa": float(right.mean()), "macc": float(np.mean(per_class))}


def part_scores(predicted: np.ndarray, parts: np.ndarray, labels: np.ndarray, part_classes: np.ndarray
                ) -> dict[str, float]:
    """``instance_miou`` and ``class_miou`` (fractions) of per-point parts (S, N) against ``parts``."""
    ious = np.empty(len(labels))
    for i, (pred, true, label) in enumerate(zip(predicted, parts, labels)):
        per_part = []
        for part in np.flatnonzero(part_classes == label):
            union = np.count_nonzero((pred == part) | (true == part))
            per_part.append(1.0 if union == 0 else np.count_nonzero((pred == part) & (true == part)) / union)
        ious[i] = np.mean(per_part)
    per_class = [ious[labels == c].mean() for c in np.unique(labels)]
    return {"instance_miou": float(ious.mean()), "class_miou": float(np.mean(per_class))}


def summarise(runs: Sequence[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Each score's (mean, half-width of its 95% Student-t interval) over ``runs``, in percent."""
    return {key: tuple(100.0 * v for v in mean_ci([run[key] for run in runs])) for key in runs[0]}
