"""The evaluation recipes by name (train.condense.evaluation.recipes, decision 94): the paper recipe's values
against DD3D's released evaluation, its schedule (learning rate at the first and last pass, the
passes and batches the training really takes), the released augmentation's ranges, the
best-test-epoch bookkeeping kept apart from the last step's score, and a recipe's one validation;
on the tiny shapes of tests/condensation_tiny.py, in seconds."""
from __future__ import annotations

import math

import pytest
import torch

from tests.condensation_tiny import CPU, tiny_set
from train.condense.evaluation.augment import (ANGLE_CLIP, ANGLE_SIGMA, JITTER_CLIP, JITTER_SIGMA, RELEASED_SCALE_HIGH,
                                    RELEASED_SCALE_LOW, released_augment, rotations)
from train.condense.files.data import clouds_of
from train.condense.evaluation.protocol import BEST, best_epoch, evaluate_runs
from train.condense.evaluation.recipes import named_recipe
from train.condense.evaluation.training import Clouds, TrainSpec, epoch_lr, train_backbone


def test_the_paper_recipe_is_the_released_evaluation_for_each_task() -> None:
    paper = named_recipe("paper", "classification", "dgcnn")
    assert (paper.model, paper.epochs, paper.steps, paper.batch_size, paper.optimizer) == ("dgcnn", 201, None, 256,
                                                                                          "adam")
    assert (paper.lr, paper.weight_decay, paper.lr_end, paper.augmentation, paper.test_every) == (
        1e-3, 5e-4, 1e-4, "released", 1)
    parts = named_recipe("paper", "parts")
    assert (parts.epochs, parts.batch_size, parts.optimizer, parts.lr, parts.weight_decay, parts.lr_end,
            parts.augmentation, parts.test_every) == (1001, 32, "sgd", 1e-2, 1e-2, 1e-3, "none", 0)
    cpu = named_recipe("cpu", "parts")
    assert cpu == TrainSpec() and cpu.record()["recipe"] == "cpu" and cpu.record()["steps"] == 300
    with pytest.raises(ValueError, match="recipe 'gpu' is not one of cpu, paper"):
        named_recipe("gpu", "classification")


def test_the_paper_schedule_starts_at_its_rate_and_ends_at_1e_4_on_a_cosine() -> None:
    paper = named_recipe("paper", "classification")
    assert epoch_lr(paper, 0) == pytest.approx(1e-3) and epoch_lr(paper, 200) == pytest.approx(1e-4)
    assert epoch_lr(paper, 100) == pytest.approx((1e-3 + 1e-4) / 2)
    # the released CosineAnnealingLR(T_max=200, eta_min=1e-4), stepped after each pass: pass e's rate
    assert epoch_lr(paper, 50) == pytest.approx(1e-4 + 0.9e-3 * (1 + math.cos(math.pi / 4)) / 2)
    with pytest.raises(ValueError, match="epoch 201 is not a pass"):
        epoch_lr(paper, 201)


def test_an_epochs_recipe_takes_every_cloud_once_a_pass_in_batches_at_each_pass_rate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = clouds_of(tiny_set())  # 12 clouds: batches of 5, 5 and 2 a pass
    seen: list[torch.Tensor] = []

    def source(index: torch.Tensor, draws: torch.Generator) -> tuple[torch.Tensor, None]:
        seen.append(index.clone())
        return torch.from_numpy(data.points[index.numpy()]), None
    rates: list[tuple[float, float]] = []
    adam_step = torch.optim.Adam.step

    def step(self: torch.optim.Adam, *args: object, **kwargs: object) -> object:
        rates.append((self.param_groups[0]["lr"], self.param_groups[0]["weight_decay"]))
        return adam_step(self, *args, **kwargs)
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    spec = TrainSpec(steps=None, epochs=3, lr=1e-3, lr_end=1e-4, batch_size=5, weight_decay=5e-4,
                     augmentation="released")
    train_backbone(Clouds(data.points, data.labels, data.num_classes, source=source), spec, 0, CPU, show=False)
    assert len(data) == 12 and [len(i) for i in seen] == [5, 5, 2] * 3
    for p in range(3):
        assert sorted(torch.cat(seen[3 * p:3 * p + 3]).tolist()) == list(range(12))
    assert [r for r, _ in rates] == pytest.approx([1e-3] * 3 + [5.5e-4] * 3 + [1e-4] * 3)
    assert {wd for _, wd in rates} == {5e-4}
    seen.clear()
    train_backbone(Clouds(data.points, data.labels, data.num_classes, source=source),
                   TrainSpec(steps=None, epochs=2, batch_size=256), 0, CPU, show=False)
    assert [len(i) for i in seen] == [12, 12]  # batch 256 is the whole set when smaller


def test_the_released_augmentation_scales_jitters_then_rotates_within_its_ranges() -> None:
    clouds = torch.randn(2000, 5, 3, generator=torch.Generator().manual_seed(1))
    out = released_augment(clouds, torch.Generator().manual_seed(0))
    draws = torch.Generator().manual_seed(0)  # the same draws, in the order the module docstring gives
    scale = torch.empty(2000, 1, 1).uniform_(RELEASED_SCALE_LOW, RELEASED_SCALE_HIGH, generator=draws)
    jitter = (torch.randn(clouds.shape, generator=draws) * JITTER_SIGMA).clamp(-JITTER_CLIP, JITTER_CLIP)
    angles = (torch.randn(2000, 3, generator=draws) * ANGLE_SIGMA).clamp(-ANGLE_CLIP, ANGLE_CLIP)
    torch.testing.assert_close(out, (clouds * scale + jitter) @ rotations(angles))
    assert (RELEASED_SCALE_LOW, RELEASED_SCALE_HIGH, JITTER_SIGMA, JITTER_CLIP, ANGLE_SIGMA, ANGLE_CLIP) == (
        0.8, 1.25, 0.01, 0.05, 0.06, 0.18)
    assert 0.8 <= scale.min() < 0.81 and 1.24 < scale.max() <= 1.25  # one factor a cloud, the whole range
    assert jitter.abs().max() <= JITTER_CLIP and angles.abs().max() == ANGLE_CLIP  # 3 sigma: reached


def test_best_epoch_keeps_the_earliest_highest_first_score_and_that_pass_second_score() -> None:
    scored = [(1, {"oa": 0.5, "macc": 0.6}), (2, {"oa": 0.7, "macc": 0.3}), (3, {"oa": 0.7, "macc": 0.9}),
              (4, {"oa": 0.6, "macc": 0.95})]
    assert best_epoch(scored, "classification") == {"epoch": 2, "oa": 0.7, "macc": 0.3}
    with pytest.raises(ValueError, match="no scored pass"):
        best_epoch([], "classification")


def test_the_best_test_epoch_is_kept_apart_and_leaves_the_last_step_model_unchanged() -> None:
    data = clouds_of(tiny_set())
    spec = TrainSpec(steps=None, epochs=5, batch_size=4, lr=3e-3, test_every=2)
    passes: list[int] = []
    watched = train_backbone(data, spec, 3, CPU, show=False, watch=lambda model, epoch: passes.append(epoch))
    assert passes == [2, 4, 5]  # every 2nd pass and the last
    plain = train_backbone(data, TrainSpec(steps=None, epochs=5, batch_size=4, lr=3e-3), 3, CPU, show=False)
    assert all(torch.equal(a, b) for a, b in zip(watched.state_dict().values(), plain.state_dict().values()))
    run, = evaluate_runs(data, data, spec, 1, 3, CPU)
    last, = evaluate_runs(data, data, TrainSpec(steps=None, epochs=5, batch_size=4, lr=3e-3), 1, 3, CPU)
    assert {k: run[k] for k in ("oa", "macc")} == last  # the score is the last step's
    assert run[BEST]["epoch"] in (2, 4, 5) and run[BEST]["oa"] >= run["oa"]


def test_a_recipe_counts_steps_or_epochs_and_scores_passes_only_with_epochs() -> None:
    for bad, message in (({"epochs": 3}, "exactly one"), ({"steps": None}, "exactly one"),
                         ({"steps": 0}, "steps must be a positive integer"),
                         ({"test_every": 1}, "test_every must be 0 or, with epochs"),
                         ({"lr_end": 1.0}, "end between 0 and itself"), ({"optimizer": "lbfgs"}, "not among"),
                         ({"weight_decay": -1.0}, "weight_decay must be 0 or more")):
        with pytest.raises(ValueError, match=message):
            TrainSpec(**bad)
    with pytest.raises(ValueError, match="a watch needs test_every"):
        train_backbone(clouds_of(tiny_set()), TrainSpec(steps=1), 0, CPU, show=False, watch=lambda m, e: None)
