"""The evaluation protocol of condensed sets (decision 73): a backbone trained from
scratch on the set ``runs`` times with the seeds ``seed, seed + 1, ...``, each run scored on the
evaluation split (``test``, or ``val`` where a choice is being made) with the model of its last
step, the runs summarised as mean and 95% interval (:func:`train.condense.metrics.summarise`).
"""
from __future__ import annotations

import math

import numpy as np

from train.condense.metrics import SCORES, classification_scores, part_scores
from train.condense.training import Clouds, TrainSpec, predict, train_backbone
from train.runtime.distributed import DistInfo

LABELS = {"oa": "OA", "macc": "mAcc", "instance_miou": "instance mIoU", "class_miou": "class mIoU"}


def score(predicted: np.ndarray, test: Clouds) -> dict[str, float]:
    """The task's scores (:data:`train.condense.metrics.SCORES`) of ``predicted`` on ``test``."""
    if test.parts is None:
        return classification_scores(predicted, test.labels)
    return part_scores(predicted, test.parts, test.labels, test.part_classes)


def evaluate_runs(train: Clouds, test: Clouds, spec: TrainSpec, runs: int, seed: int, info: DistInfo,
                  desc: str = "evaluate") -> list[dict[str, float]]:
    """The scores of ``runs`` backbones trained on ``train`` (seeds ``seed + r``), each on ``test``."""
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be a positive integer, got {runs!r}")
    scores = []
    for r in range(runs):
        model = train_backbone(train, spec, seed + r, info, desc=f"{desc} run {r + 1}/{runs}")
        scores.append(score(predict(model, test, info), test))
    return scores


def format_summary(summary: dict[str, tuple[float, float]], task: str) -> str:
    """``"82.3 ± 1.1 (mAcc 80.0 ± 1.4)"``: the first score, the second beside it (percent)."""
    def cell(mean: float, half: float) -> str:
        return f"{mean:.1f}" if math.isnan(half) else f"{mean:.1f} ± {half:.1f}"
    first, second = SCORES[task]
    return f"{cell(*summary[first])} ({LABELS[second]} {cell(*summary[second])})"
