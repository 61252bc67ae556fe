"""``build_object_model``: the object backbones by name, for classification or part segmentation.

One door to the package's networks (``train.models.objects``' docstring lists them and their
inputs); each network is a plain module of its own, this table only names it.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from train.models.objects.dgcnn import DGCNNClassifier
from train.models.objects.pct import PCTClassifier
from train.models.objects.pointmlp import PointMLPClassifier
from train.models.objects.pointnet import PointNetClassifier, PointNetPartSegmenter
from train.models.objects.pointnet2 import PointNet2Classifier, PointNet2PartSegmenter
from train.models.objects.pointnext import PointNeXtClassifier
from train.models.objects.ptv3_classifier import PTv3StudentClassifier

CLASSIFIERS: dict[str, Callable[[int], nn.Module]] = {
    "pointnet": PointNetClassifier, "pointnet2": PointNet2Classifier, "dgcnn": DGCNNClassifier,
    "pct": PCTClassifier, "pointmlp": PointMLPClassifier, "pointnext": PointNeXtClassifier,
    "ptv3_student": PTv3StudentClassifier,
}
PART_SEGMENTERS: dict[str, Callable[[int, int], nn.Module]] = {
    "pointnet": PointNetPartSegmenter, "pointnet2": PointNet2PartSegmenter,
}
TASKS = ("classification", "parts")


def build_object_model(name: str, num_classes: int, task: str = "classification",
                       num_parts: int | None = None) -> nn.Module:
    """The backbone ``name`` for ``task``.

    classification: ``model(points)`` maps (B, N, 3) float points to (B, num_classes) logits.
    parts: ``num_classes`` is the number of object categories K and ``num_parts`` the number of
    part labels P; ``model(points, category)`` maps (B, N, 3) points and their (B, K) one-hot
    categories to (B, N, P) logits.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: choose one of {list(TASKS)}")
    table: dict[str, Callable[..., nn.Module]] = CLASSIFIERS if task == "classification" else PART_SEGMENTERS
    if name not in table:
        raise ValueError(f"no {task} backbone named {name!r}: choose one of {sorted(table)}")
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if task == "classification":
        if num_parts is not None:
            raise ValueError(f"num_parts is for task='parts' only, got num_parts={num_parts!r} for classification")
        return table[name](int(num_classes))
    if isinstance(num_parts, bool) or num_parts is None or int(num_parts) != num_parts or num_parts < 1:
        raise ValueError(f"task='parts' needs num_parts, an integer >= 1, got {num_parts!r}")
    return table[name](int(num_classes), int(num_parts))
