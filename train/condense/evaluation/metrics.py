"""The scores of the condensation protocol: overall and mean class accuracy for
classification, instance and class mIoU for part segmentation (DD3D Sec. 5, "Metrics"; PointNet's
part-segmentation rule), their mean over runs with a 95% interval (decision 73), and the
intervals of a study's cells (decision 94): over several distillations of a method, each set
trained several times, and of a method's gain over Random's draw of the same seed.

- overall accuracy (OA): the share of test clouds whose class is right;
- mean class accuracy (mAcc): the mean over the classes present in the test split of each one's accuracy;
- instance mIoU: for every test cloud, the mean over the parts of its category of the part's IoU
  (1 where the part is neither predicted nor present), averaged over the clouds; class mIoU the
  mean over categories of their clouds' mean.

Two levels (:func:`two_level`): a cell's scores come in groups, one per distillation (its set's
training runs). The runs of one set share the set, so they are not independent draws of the
method: the interval is Student's t over the groups' means (g - 1 degrees of freedom), which
holds the training variance inside each mean; the groups' means are shown beside it (the
between-distillation spread). Paired (:func:`paired_gain`): a method's group mean minus Random's
of the same seed, the t interval over those differences.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

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


SCORE_KEYS = tuple(key for pair in SCORES.values() for key in pair)


def summarise(runs: Sequence[Mapping[str, object]]) -> dict[str, tuple[float, float]]:
    """Each score's (mean, half-width of its 95% Student-t interval) over ``runs``, in percent
    (the scores of :data:`SCORES` a run holds; other entries, such as the best test epoch's, left)."""
    return {key: tuple(100.0 * v for v in mean_ci([float(run[key]) for run in runs]))
            for key in SCORE_KEYS if key in runs[0]}


@dataclass(frozen=True)
class TwoLevel:
    """A cell's score over groups (module docstring): ``mean`` of the groups' means, ``half`` the
    95% t half-width over them (NaN for one group), ``groups`` each group's mean, ``runs`` the
    scores a group (the fewest where they differ). Same unit as the scores given."""

    mean: float
    half: float
    groups: tuple[float, ...]
    runs: int


def two_level(groups: Sequence[Sequence[float]]) -> TwoLevel:
    """:class:`TwoLevel` of ``groups`` (one sequence of scores per distillation, none empty)."""
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("two_level needs one or more groups, each with a score")
    means = [float(np.mean(g)) for g in groups]
    mean, half = mean_ci(means)
    return TwoLevel(mean, half, tuple(means), min(len(g) for g in groups))


@dataclass(frozen=True)
class PairedGain:
    """A method's gain over a reference distilled with the same seeds: ``by_seed`` each common
    seed's difference of group means, ``mean`` their mean and ``half`` its 95% t half-width (NaN
    for one seed)."""

    mean: float
    half: float
    by_seed: dict[int, float]


def common_seeds(method: Iterable[int], reference: Iterable[int], names: tuple[str, str] = ("method", "reference")
                 ) -> list[int]:
    """The seeds both sides have, sorted; ValueError in one line naming each side (``names``) and its
    seeds when there is none: a gain is paired by seed."""
    ours, theirs = sorted(set(method)), sorted(set(reference))
    seeds = sorted(set(ours) & set(theirs))
    if not seeds:
        raise ValueError(f"no common seed: {names[0]} {ours}, {names[1]} {theirs}; a gain is paired by seed, so "
                         f"{names[1]} must hold draws of some of {names[0]}'s seeds")
    return seeds


def paired_gain(method: Mapping[int, Sequence[float]], reference: Mapping[int, Sequence[float]]) -> PairedGain:
    """``method``'s mean minus ``reference``'s mean per seed (their scores by seed), over the seeds
    both have (one or more, :func:`common_seeds`)."""
    seeds = common_seeds(method, reference)
    by_seed = {s: float(np.mean(method[s]) - np.mean(reference[s])) for s in seeds}
    mean, half = mean_ci(list(by_seed.values()))
    return PairedGain(mean, half, by_seed)
