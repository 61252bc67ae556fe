"""``--score``: the labels a run left in ``--out`` scored against a labelled split (decision 77).

The counts are those of :class:`train.evaluation.metrics.IoUAccumulator` (intersection, union and
target count per class over every point whose label is not ignored), in integers and NumPy so
the labelling through onnxruntime scores without torch. Each process counts the scans of its
shard from their label files, those of earlier runs into the same ``--out`` included; the run's
figure sums the shards' counts before any division, so it equals one process's exactly.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from train.data.labels import IGNORE_INDEX
from train.prediction.inputs import ScanSource
from train.prediction.layouts import Layout


def score_scans(layout: Layout, source: ScanSource, indices: Sequence[int], num_classes: int) -> np.ndarray:
    """(3, K) int64 [intersection, union, target count] of the scans ``indices`` of ``source`` that
    have a labels file in ``layout`` (a skipped unreadable scan has none), against their ``segment``."""
    counts = np.zeros((3, num_classes), dtype=np.int64)
    for index in indices:
        path = layout.label_file(source.scan_name(index))
        if not path.is_file():
            continue
        truth = np.asarray(source.load(index)["segment"], dtype=np.int64)
        pred = layout.read_labels(path)
        keep = truth != IGNORE_INDEX
        truth, pred = truth[keep], pred[keep]
        inter = np.bincount(truth[pred == truth], minlength=num_classes)
        area_pred, area_truth = np.bincount(pred, minlength=num_classes), np.bincount(truth, minlength=num_classes)
        counts += np.stack([inter, area_pred + area_truth - inter, area_truth])
    return counts


def score_lines(counts: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """The mIoU over the classes present in the labels and each class's IoU, as evaluation reads
    them (:meth:`IoUAccumulator.miou`), in %."""
    inter, union, present = counts
    iou = {name: 100.0 * i / u for name, i, u, n in zip(class_names, inter, union, present) if n > 0}
    if not iou:
        return ["score: the split holds no labelled point"]
    points = int(present.sum())
    return [f"score: mIoU {sum(iou.values()) / len(iou):.2f} % over {points:,} labelled points, {len(iou)} classes",
            "score: IoU % " + ", ".join(f"{name} {value:.2f}" for name, value in iou.items())]
