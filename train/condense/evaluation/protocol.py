"""The evaluation protocol of condensed sets (decisions 73 and 94): a backbone trained from
scratch on the set ``runs`` times with the seeds ``seed, seed + 1, ...``, each run scored on the
evaluation split (``test``, or ``val`` where a choice is being made) with the model of its last
step, the runs summarised as mean and 95% interval (:func:`train.condense.evaluation.metrics.summarise`).
A recipe with ``test_every`` (the ``paper`` recipe) also scores the split after every
``test_every`` th pass and keeps, apart, the best pass's scores (:func:`best_epoch`: the released
code's number, for a comparison with the paper only; it costs a prediction of the whole split per
scored pass). :func:`choose_recipe` chooses among recipes (steps, learning rate) on the
validation split.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from train.condense.evaluation.metrics import (SCORES, PairedGain, TwoLevel, classification_scores, part_scores,
                                               summarise)
from train.condense.evaluation.training import Clouds, TrainSpec, predict, train_backbone
from train.runtime.distributed import DistInfo
from torch import nn

LABELS = {"oa": "OA", "macc": "mAcc", "instance_miou": "instance mIoU", "class_miou": "class mIoU"}


def score(predicted: np.ndarray, test: Clouds) -> dict[str, float]:
    """The task's scores (:data:`train.condense.evaluation.metrics.SCORES`) of ``predicted`` on ``test``."""
    if test.parts is None:
        return classification_scores(predicted, test.labels)
    return part_scores(predicted, test.parts, test.labels, test.part_classes)


BEST = "best_test_epoch"  # a run's key of the best-test-epoch scores
VAL = "val"  # a run's key of its last step's scores on the validation split


def best_epoch(scored: Sequence[tuple[int, dict[str, float]]], task: str) -> dict[str, float]:
    """The scores of the earliest pass with the highest first score of ``task`` among ``scored``
    (passes done, scores), with ``epoch`` the passes done (the released code keeps the first
    strict maximum of OA and the mAcc of that pass)."""
    if not scored:
        raise ValueError("no scored pass to choose from")
    first = SCORES[task][0]
    epoch, scores = max(scored, key=lambda item: (item[1][first], -item[0]))
    return {"epoch": epoch, **scores}


def evaluate_runs(train: Clouds, test: Clouds, spec: TrainSpec, runs: int, seed: int, info: DistInfo,
                  desc: str = "evaluate", val: Clouds | None = None) -> list[dict[str, Any]]:
    """The scores of ``runs`` backbones trained on ``train`` (seeds ``seed + r``), each on ``test``
    (its last step's model), with :data:`BEST` the best pass's scores where ``spec.test_every`` and,
    given the validation split ``val``, :data:`VAL` the same model's scores on it."""
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be a positive integer, got {runs!r}")
    scores: list[dict[str, Any]] = []
    for r in range(runs):
        scored: list[tuple[int, dict[str, float]]] = []

        def watch(model: nn.Module, epoch: int) -> None:
            scored.append((epoch, score(predict(model, test, info), test)))
        model = train_backbone(train, spec, seed + r, info, desc=f"{desc} run {r + 1}/{runs}",
                               watch=watch if spec.test_every else None)
        run: dict[str, Any] = score(predict(model, test, info), test)
        if scored:
            run[BEST] = best_epoch(scored, test.task)
        if val is not None:
            run[VAL] = score(predict(model, val, info), val)
        scores.append(run)
    return scores


def format_mean(mean: float, half: float, sign: str = "") -> str:
    """``"82.3 ± 1.1"`` (``sign`` "+" to sign the mean), the mean alone where there is no interval."""
    return f"{mean:{sign}.1f}" if math.isnan(half) else f"{mean:{sign}.1f} ± {half:.1f}"


def format_summary(summary: dict[str, tuple[float, float]], task: str) -> str:
    """``"82.3 ± 1.1 (mAcc 80.0 ± 1.4)"``: the first score, the second beside it (percent)."""
    first, second = SCORES[task]
    return f"{format_mean(*summary[first])} ({LABELS[second]} {format_mean(*summary[second])})"


def format_two_level(cell: TwoLevel) -> str:
    """``"64.5 ± 52.8 [60.4 / 68.7]"``: the mean, the t interval over the distillations' means, each mean."""
    return f"{format_mean(cell.mean, cell.half)} [{' / '.join(f'{m:.1f}' for m in cell.groups)}]"


def format_gain(gain: PairedGain) -> str:
    """``"+3.5 ± 5.9 (s0 +4.0, s1 +3.0)"``: the paired gain's mean and interval, each seed's."""
    return f"{format_mean(gain.mean, gain.half, '+')} ({', '.join(f's{s} {d:+.1f}' for s, d in gain.by_seed.items())})"


def choose_recipe(train: Clouds, val: Clouds, candidates: Sequence[TrainSpec], runs: int, seed: int, info: DistInfo
                  ) -> tuple[TrainSpec, list[tuple[TrainSpec, dict[str, tuple[float, float]]]]]:
    """The candidate recipe whose ``runs`` score best on the validation split ``val`` (the mean of
    the task's first score, last step; the earliest candidate on a tie), and every candidate's
    summary (callers keep them in their result files). The test split takes no part: only
    ``train`` and ``val`` are given, and no pass is scored on the way (``test_every`` off)."""
    tried = []
    for spec in candidates:
        runs_on_val = evaluate_runs(train, val, replace(spec, test_every=0), runs, seed, info,
                                    desc=f"val: {spec.describe()}")
        tried.append((spec, summarise(runs_on_val)))
    first = SCORES[val.task][0]
    best = max(range(len(tried)), key=lambda i: (tried[i][1][first][0], -i))
    return tried[best][0], tried


def validation_record(tried: Sequence[tuple[TrainSpec, dict[str, tuple[float, float]]]]) -> list[dict[str, Any]]:
    """:func:`choose_recipe`'s candidates as a result file keeps them: each recipe's values and its
    validation summary (each score's mean and 95% half-width, percent)."""
    return [{"recipe": spec.record(), "val": {k: list(v) for k, v in summary.items()}} for spec, summary in tried]
