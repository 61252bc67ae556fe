"""The evaluation protocol of condensed sets (decision 73): a backbone trained from
scratch on the set ``runs`` times with the seeds ``seed, seed + 1, ...``, each run scored on the
evaluation split (``test``, or ``val`` where a choice is being made) with the model of its last
step, the runs summarised as mean and 95% interval (:func:`train.condense.metrics.summarise`).
:func:`choose_recipe` chooses among recipes (steps, learning rate) on the validation split.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from train.condense.metrics import SCORES, classification_scores, part_scores, summarise
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


def choose_recipe(train: Clouds, val: Clouds, candidates: Sequence[TrainSpec], runs: int, seed: int, info: DistInfo
                  ) -> tuple[TrainSpec, list[tuple[TrainSpec, dict[str, tuple[float, float]]]]]:
    """The candidate recipe whose ``runs`` score best on the validation split ``val`` (the mean of
    the task's first score; the earliest candidate on a tie), and every candidate's summary. The
    test split takes no part: only ``train`` and ``val`` are given."""
    tried = []
    for spec in candidates:
        runs_on_val = evaluate_runs(train, val, spec, runs, seed, info, desc=f"val: {spec.steps} steps, lr {spec.lr}")
        tried.append((spec, summarise(runs_on_val)))
    first = SCORES[val.task][0]
    best = max(range(len(tried)), key=lambda i: (tried[i][1][first][0], -i))
    return tried[best][0], tried
