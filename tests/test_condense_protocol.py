"""The condensation protocol (train.condense: augment, training, metrics, protocol; decisions 72 and
73): the scores by hand, the interval against scipy, the augmentation's bounds, a seed giving the
same model, the last step's model scored (never a choice on the test split), parts predicted
among their category's parts only; the two-level and paired intervals of a study's cells by hand
(decision 94)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from train.condense.evaluation.augment import ANGLE_CLIP, JITTER_CLIP, SCALE_HIGH, SCALE_LOW, augment, rotations
from train.condense.evaluation.metrics import classification_scores, paired_gain, part_scores, summarise, two_level
from train.condense.evaluation.protocol import choose_recipe, evaluate_runs, format_summary, score
from train.condense.evaluation.training import Clouds, TrainSpec, batch_stream, predict, train_backbone
from train.runtime.distributed import DistInfo

ONE = DistInfo(0, 1, 0, torch.device("cpu"))


def test_overall_and_mean_class_accuracy_by_hand() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1])
    predicted = np.array([0, 0, 0, 1, 0, 1])
    scores = classification_scores(predicted, labels)
    assert scores["oa"] == pytest.approx(4 / 6) and scores["macc"] == pytest.approx((3 / 4 + 1 / 2) / 2)


def test_instance_miou_counts_a_part_neither_present_nor_predicted_as_one() -> None:
    part_classes = np.array([0, 0, 1, 1, 1])  # parts 0, 1 of class 0; 2, 3, 4 of class 1
    labels = np.array([0, 1])
    parts = np.array([[0, 0, 1, 1], [2, 2, 3, 3]])
    predicted = np.array([[0, 1, 1, 1], [2, 2, 3, 3]])
    # cloud 0: part 0 IoU 1/2, part 1 IoU 2/3; cloud 1: parts 2, 3 right, part 4 absent in both: 1
    got = part_scores(predicted, parts, labels, part_classes)
    assert got["instance_miou"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1.0) / 2)
    assert got["class_miou"] == pytest.approx(got["instance_miou"])  # one cloud a class


def test_summary_is_the_mean_and_students_t_half_width_in_percent() -> None:
    runs = [{"oa": a, "macc": a - 0.1} for a in (0.5, 0.6, 0.8, 0.7, 0.65)]
    x = np.array([r["oa"] for r in runs])
    half = stats.t.ppf(0.975, 4) * x.std(ddof=1) / math.sqrt(5)
    mean, got = summarise(runs)["oa"]
    assert mean == pytest.approx(100 * x.mean()) and got == pytest.approx(100 * half)
    assert format_summary(summarise(runs), "classification") == f"65.0 ± {100 * half:.1f} (mAcc 55.0 ± {100 * half:.1f})"


def test_rotations_are_proper_and_augmentation_stays_within_its_bounds() -> None:
    angles = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0]], dtype=torch.float64)
    r = rotations(angles)
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    assert torch.allclose(torch.linalg.det(r), torch.ones(2, dtype=torch.float64))
    assert torch.equal(r[1], torch.eye(3, dtype=torch.float64))
    # the origin moves by its jitter only; a unit axis by a rotation of at most ~0.3 rad and a scale
    cloud = torch.cat([torch.zeros(1, 3), torch.eye(3)]).expand(400, 4, 3).contiguous()
    out = augment(cloud, torch.Generator().manual_seed(0))
    assert out[:, 0].abs().max() <= JITTER_CLIP
    axis = out[:, 1:] - out[:, :1]
    lengths = axis.norm(dim=2)
    assert lengths.min() >= SCALE_LOW - 2 * JITTER_CLIP and lengths.max() <= SCALE_HIGH + 2 * JITTER_CLIP
    cos = (axis * torch.eye(3)).sum(2) / lengths
    assert cos.min() >= math.cos(math.sqrt(2) * ANGLE_CLIP + 0.2)  # small rotations only
    assert lengths.std() > 0.1  # the scales do vary
    assert torch.equal(out, augment(cloud, torch.Generator().manual_seed(0)))


def test_batch_stream_reads_each_cloud_once_per_pass() -> None:
    stream = batch_stream(7, 3, torch.Generator().manual_seed(0))
    drawn = torch.cat([next(stream) for _ in range(7)])  # 21 = 3 passes of 7
    assert sorted(drawn.tolist()) == sorted(list(range(7)) * 3)
    for first in range(0, 21, 7):
        assert sorted(drawn[first:first + 7].tolist()) == list(range(7))


def blobs(count: int, points: int, seed: int) -> Clouds:
    """Two classes told apart by shape: a flat disc or a thin stick, each at a random scale."""
    rng = np.random.default_rng(seed)
    clouds, labels = [], []
    for i in range(count):
        label = i % 2
        base = rng.normal(size=(points, 3)) * ([1.0, 1.0, 0.05] if label == 0 else [0.05, 0.05, 1.0])
        clouds.append(base * rng.uniform(0.5, 1.0))
        labels.append(label)
    return Clouds(np.asarray(clouds, np.float32), np.asarray(labels, np.int64), 2)


def test_the_protocol_scores_each_seeds_last_step_model_and_learns() -> None:
    train, test = blobs(12, 32, 0), blobs(40, 32, 1)
    spec = TrainSpec(steps=25, lr=3e-3, batch_size=8)
    runs = evaluate_runs(train, test, spec, 2, seed=4, info=ONE)
    for r, run in enumerate(runs):  # run r is the model of seed 4 + r after exactly spec.steps steps
        model = train_backbone(train, spec, 4 + r, ONE, show=False)
        assert run == score(predict(model, test, ONE), test)
    assert all(run["oa"] >= 0.9 for run in runs), runs
    a = train_backbone(train, spec, 4, ONE, show=False).state_dict()
    b = train_backbone(train, spec, 5, ONE, show=False).state_dict()
    shorter = train_backbone(train, TrainSpec(steps=24, lr=3e-3, batch_size=8), 4, ONE, show=False).state_dict()
    again = train_backbone(train, spec, 4, ONE, show=False).state_dict()
    assert all(torch.equal(a[k], again[k]) for k in a)
    assert not all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], shorter[k]) for k in a)


def test_the_test_labels_change_the_scores_never_the_trained_model() -> None:
    train, test = blobs(8, 32, 0), blobs(10, 32, 1)
    flipped = Clouds(test.points, 1 - test.labels, 2)
    spec = TrainSpec(steps=6, batch_size=4)
    a, b = evaluate_runs(train, test, spec, 1, 0, ONE)[0], evaluate_runs(train, flipped, spec, 1, 0, ONE)[0]
    assert a["oa"] == pytest.approx(1.0 - b["oa"])


def test_part_predictions_stay_among_their_categorys_parts() -> None:
    rng = np.random.default_rng(0)
    part_classes = np.array([0, 0, 1, 1, 1])
    labels = np.array([0, 1, 0, 1, 1, 0])
    parts = np.stack([rng.choice(np.flatnonzero(part_classes == c), 24) for c in labels])
    data = Clouds(rng.normal(size=(6, 24, 3)).astype(np.float32), labels, 2, parts, part_classes)
    model = train_backbone(data, TrainSpec(steps=3, batch_size=3), 0, ONE, show=False)
    predicted = predict(model, data, ONE)
    assert predicted.shape == (6, 24)
    assert all(np.isin(predicted[i], np.flatnonzero(part_classes == labels[i])).all() for i in range(6))
    assert 0.0 <= score(predicted, data)["instance_miou"] <= 1.0


def test_a_run_count_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="runs must be a positive integer, got 0"):
        evaluate_runs(blobs(4, 8, 0), blobs(4, 8, 1), TrainSpec(steps=1), 0, 0, ONE)


def test_choose_recipe_keeps_the_best_validation_mean_and_the_first_on_a_tie() -> None:
    train, val = blobs(12, 32, 0), blobs(20, 32, 2)
    frozen = TrainSpec(steps=1, lr=1e-12, batch_size=8)  # one step that moves nothing: chance
    learns = TrainSpec(steps=25, lr=3e-3, batch_size=8)
    chosen, tried = choose_recipe(train, val, [frozen, learns], 2, 0, ONE)
    assert chosen is learns and [spec for spec, _ in tried] == [frozen, learns]
    assert tried[1][1]["oa"][0] > tried[0][1]["oa"][0]
    twin = TrainSpec(steps=25, lr=3e-3, batch_size=8)
    chosen, tried = choose_recipe(train, val, [learns, twin], 1, 0, ONE)
    assert tried[0][1]["oa"][0] == tried[1][1]["oa"][0] and chosen is learns


def test_two_levels_take_the_t_interval_over_the_distillations_means() -> None:
    # means 61 and 68: grand mean 64.5, sd 7 / sqrt(2), half t(0.975, 1) * sd / sqrt(2) = 12.7062 * 3.5
    cell = two_level([[60.0, 62.0], [70.0, 66.0, 68.0]])
    assert (cell.mean, cell.groups, cell.runs) == (64.5, (61.0, 68.0), 2)
    assert cell.half == pytest.approx(12.7062047 * 3.5)
    alone = two_level([[60.0, 62.0, 64.0]])  # one distillation: no interval over distillations
    assert alone.mean == 62.0 and math.isnan(alone.half) and alone.groups == (62.0,)
    with pytest.raises(ValueError, match="one or more groups"):
        two_level([[1.0], []])


def test_the_paired_gain_is_per_seed_then_its_t_interval_over_the_common_seeds() -> None:
    gain = paired_gain({0: [65.0, 67.0], 1: [70.0]}, {0: [60.0, 62.0], 1: [66.0], 2: [50.0]})
    assert gain.by_seed == {0: 5.0, 1: 4.0} and gain.mean == 4.5
    assert gain.half == pytest.approx(12.7062047 * 0.5)  # sd 1 / sqrt(2) over 2 seeds, divided by sqrt(2)
    three = paired_gain({0: [1.0], 1: [2.0], 2: [6.0]}, {0: [0.0], 1: [0.0], 2: [0.0]})
    assert three.mean == 3.0 and three.half == pytest.approx(4.3026527 * math.sqrt(7.0) / math.sqrt(3.0))
    with pytest.raises(ValueError, match="no common seed"):
        paired_gain({0: [1.0]}, {1: [1.0]})


def test_the_summary_leaves_the_best_test_epoch_out() -> None:
    runs = [{"oa": 0.5, "macc": 0.4, "best_test_epoch": {"epoch": 3, "oa": 0.9, "macc": 0.8}},
            {"oa": 0.7, "macc": 0.6, "best_test_epoch": {"epoch": 5, "oa": 0.9, "macc": 0.8}}]
    assert set(summarise(runs)) == {"oa", "macc"} and summarise(runs)["oa"][0] == pytest.approx(60.0)
