"""Gradient, distribution and trajectory matching on explicit clouds (decisions 78-80, 93) on tiny
data (tests/condensation_tiny.py): the matching losses on fixed probe networks, or on every expert
and start epoch of TM, before and after; the clouds' optimiser and the loss history in the file;
checkpoints and an exact resume; the command's refusals."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.condensation_tiny import CLASSES, CPU, probe, stop_after_second_checkpoint, tiny_set
from train.condense.cli.command import main
from train.condense.files.condensed_file import read_condensed
from train.condense.methods.explicit import CLOUD_STEPS, cloud_optimizer, distill_explicit, initial_clouds
from train.condense.matching.matching_loops import DistillSpec, fresh_network
from train.condense.methods.trajectory import TrajectorySpec, distill_trajectories, expert_trajectories, trajectory_loss
from train.data.objects import ObjectSet


@pytest.fixture(scope="module")
def tiny() -> ObjectSet:
    return tiny_set()


def test_gm_moves_the_synthetic_set_and_its_matching_distance_falls(tiny: ObjectSet) -> None:
    spec = DistillSpec(iterations=8, init="noise", cloud_optimizer="adam", cloud_lr=1e-2)
    start, labels, _ = initial_clouds(tiny, 1, 0, "noise")
    points, out_labels, _, history = distill_explicit(tiny, 1, 0, spec, CPU, "gm")
    assert np.array_equal(out_labels, labels) and len(history) == 8
    assert np.abs(points - start).max() > 0.05
    before, after = probe(tiny, start, labels, "gm"), probe(tiny, points, labels, "gm")
    assert after < 0.95 * before, (before, after)


def test_dm_matches_the_class_means_of_random_networks(tiny: ObjectSet) -> None:
    spec = DistillSpec(iterations=8, cloud_optimizer="adam", cloud_lr=1e-2)
    start, labels, _ = initial_clouds(tiny, 1, 0, "real")
    points, _, _, history = distill_explicit(tiny, 1, 0, spec, CPU, "dm")
    before, after = probe(tiny, start, labels, "dm"), probe(tiny, points, labels, "dm")
    assert after < 0.8 * before, (before, after)
    assert np.mean(history[-3:]) < np.mean(history[:3])


def test_tm_brings_the_students_closer_to_the_experts_weights(tiny: ObjectSet) -> None:
    # a tiny set takes one expert step an epoch: the student takes as many steps as the M = 2 epochs
    tm = TrajectorySpec(experts=2, max_start_epoch=2, synthetic_steps=2)
    start, labels, _ = initial_clouds(tiny, 1, 0, "real")
    spec = DistillSpec(iterations=10, cloud_optimizer="adam", cloud_lr=1e-2)
    points, _, history = distill_trajectories(tiny, 1, 0, spec, CPU, tm=tm)
    torch.manual_seed(0)  # the experts of the run: the same seed, drawn first
    experts = expert_trajectories(tiny, tm, torch.Generator().manual_seed(0), CPU.device)
    net, log_lr = fresh_network(len(CLASSES), CPU.device), torch.tensor(np.log(tm.teacher_lr), dtype=torch.float32)

    def mean_loss(clouds: np.ndarray) -> float:
        return float(np.mean([trajectory_loss(net, weights[t], weights[t + tm.expert_epochs], torch.from_numpy(clouds),
                                              torch.from_numpy(labels), log_lr, tm.synthetic_steps).item()
                              for weights in experts for t in range(tm.max_start_epoch)]))
    assert len(history) == 10 and len(experts[0]) == tm.epochs + 1
    before, after = mean_loss(start), mean_loss(points)
    assert after < 0.9 * before, (before, after)


def test_real_initialisation_starts_from_training_clouds_and_noise_from_the_unit_ball(tiny: ObjectSet) -> None:
    real, labels, parts = initial_clouds(tiny, 2, 0, "real")
    assert np.bincount(labels).tolist() == [2, 2, 2] and parts is None
    for cloud, label in zip(real, labels):
        assert any(np.array_equal(cloud, t) and y == label for t, y in zip(tiny.points, tiny.labels))
    noise, noise_labels, _ = initial_clouds(tiny, 2, 0, "noise")
    assert noise.shape == real.shape and np.array_equal(noise_labels, labels)
    assert np.linalg.norm(noise, axis=-1).max() <= 1.0
    with pytest.raises(ValueError, match="init 'zeros' is not one of real, noise"):
        initial_clouds(tiny, 1, 0, "zeros")


TINY = ["--dataset", "shapes", "--size", "2", "--points", "32", "--device", "cpu", "--cpc", "1", "--iterations", "1"]


def test_a_fixed_seed_gives_the_same_gm_file(tmp_path: Path) -> None:
    files = []
    for name in ("a", "b"):
        assert main([*TINY, "--method", "gm", "--out", str(tmp_path / name)]) == 0
        files.append((tmp_path / name / "condensed.npz").read_bytes())
    assert files[0] == files[1]


def test_distillation_options_are_refused_for_a_coreset_and_parts_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([*TINY, "--method", "random", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ("python -m train.condense: error: --iterations is an option of gm, dm, "
                                               "tm, dd3d, not of random")
    assert main([*TINY, "--rotator", "learned", "--method", "gm", "--out", str(tmp_path)]) == 2
    assert "the learned sign is trained by dd3d; gm takes the rotator none, pca or fixed" in capsys.readouterr().err
    assert main([*TINY[:-2], "--iterations", "0", "--method", "gm", "--out", str(tmp_path)]) == 2
    assert "--iterations must be a positive integer, got 0" in capsys.readouterr().err
    assert main([*TINY, "--task", "parts", "--method", "dm", "--out", str(tmp_path)]) == 2
    assert "dm distils classification sets only" in capsys.readouterr().err


@pytest.mark.parametrize("method, init, lr, fall", [("dm", "real", None, 0.9), ("gm", "noise", 1e-2, 0.97)])
def test_the_matching_loss_falls_over_the_iterations_with_the_default_optimiser(
        tiny: ObjectSet, method: str, init: str, lr: float | None, fall: float) -> None:
    # DM at its default rate (28% down); GM with its default optimiser (Adam) at a rate that moves D on this tiny
    # set (about 5% down: its default 1e-3 barely does, and from real clouds D falls at no rate: decision 93).
    # Each iteration draws a fresh network, so the first and the last three iterations are compared.
    start, labels, _ = initial_clouds(tiny, 1, 0, init)
    spec = DistillSpec(iterations=8, init=init, cloud_lr=lr)
    points, _, _, history = distill_explicit(tiny, 1, 0, spec, CPU, method)
    assert np.mean(history[-3:]) < fall * np.mean(history[:3]), history
    before, after = probe(tiny, start, labels, method), probe(tiny, points, labels, method)
    assert after < fall * before, (before, after)


@pytest.mark.parametrize("method", list(CLOUD_STEPS))
def test_the_clouds_take_sgd_with_momentum_or_adam_at_the_methods_validated_rate_unless_given(method: str) -> None:
    clouds = torch.zeros(2, 3, requires_grad=True)
    default, rates = CLOUD_STEPS[method]
    chosen = cloud_optimizer(method, DistillSpec(), clouds)
    assert type(chosen).__name__.lower() == default and chosen.defaults["lr"] == rates[default]
    sgd = cloud_optimizer(method, DistillSpec(cloud_optimizer="sgd", cloud_lr=rates.get("sgd", 3.0)), clouds)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.5
    assert sgd.defaults["lr"] == rates.get("sgd", 3.0) and sgd.defaults["weight_decay"] == 0
    adam = cloud_optimizer(method, DistillSpec(cloud_optimizer="adam", cloud_lr=0.25), clouds)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 0.25 and adam.defaults["weight_decay"] == 0


def test_the_file_records_the_clouds_optimiser_and_every_iterations_loss_and_the_log_says_it(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = [*TINY[:-1], "2", "--method", "dm", "--cloud-optimizer", "sgd", "--cloud-lr", "1e-4"]
    assert main([*run, "--out", str(tmp_path)]) == 0
    record = read_condensed(tmp_path / "condensed.npz").provenance["distill"]
    assert {k: v for k, v in record.items() if k != "loss"} == {"iterations": 2, "real_batch": 32, "net_lr": 1e-3,
                                                                "init": "real", "optimizer": "sgd", "lr": 1e-4}
    assert len(record["loss"]) == 2 and all(v > 0 for v in record["loss"])
    assert "matching loss" in capsys.readouterr().out
    assert read_condensed(condense_random(tmp_path / "random")).provenance["distill"] is None


def condense_random(out: Path) -> Path:
    assert main([*TINY[:-2], "--method", "random", "--out", str(out)]) == 0
    return out / "condensed.npz"


@pytest.mark.parametrize("argv, words", [
    (["--method", "random", "--cloud-lr", "0.1"], "--cloud-lr is an option of gm, dm, tm, not of random"),
    (["--method", "dd3d", "--cloud-optimizer", "sgd"], "--cloud-optimizer is an option of gm, dm, tm, not of dd3d"),
    (["--method", "gm", "--cloud-lr", "0"], "the clouds' learning rate (--cloud-lr) must be positive, got 0.0"),
    (["--method", "tm", "--cloud-optimizer", "sgd"], "tm has no sgd learning rate chosen on validation: give one "
                                                      "(--cloud-lr)"),
])
def test_the_clouds_optimiser_options_are_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                              argv: list[str], words: str) -> None:
    assert main([*TINY[:-2], *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err



@pytest.mark.parametrize("method", ["gm", "dm", "tm", "dd3d"])
def test_a_resumed_run_writes_the_uninterrupted_runs_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture, method: str) -> None:
    run = ["--dataset", "shapes", "--size", "2", "--points", "16", "--device", "cpu", "--cpc", "1", "--iterations",
           "3", "--method", method]
    assert main([*run, "--out", str(tmp_path / "whole")]) == 0
    stop_after_second_checkpoint([*run, "--out", str(tmp_path / "cut")], monkeypatch)
    assert not (tmp_path / "cut" / "condensed.npz").exists()
    assert main([*run, "--resume", "--out", str(tmp_path / "cut")]) == 0
    assert (tmp_path / "cut" / "condensed.npz").read_bytes() == (tmp_path / "whole" / "condensed.npz").read_bytes()
    assert main([*run[:-1], "dm" if method != "dm" else "gm", "--resume", "--out", str(tmp_path / "cut")]) == 2
    assert main([*run, "--data-seed", "1", "--resume", "--out", str(tmp_path / "cut")]) == 2  # other clouds
    refused = 2
    if method != "dd3d":  # another rate of the clouds' optimiser (the default's, named, is the same run)
        assert main([*run, "--cloud-lr", "0.5", "--resume", "--out", str(tmp_path / "cut")]) == 2
        refused += 1
    assert capsys.readouterr().err.count("distill.pt: written by another run") == refused


@pytest.mark.parametrize("method", ["gm", "dd3d"])
def test_a_stopped_classification_run_is_not_resumed_as_part_segmentation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, method: str) -> None:
    # shapes' clouds and labels at 16 points are the same for both tasks; the loops and DD3D's Adam are not
    run = ["--dataset", "shapes", "--size", "2", "--points", "16", "--device", "cpu", "--cpc", "1", "--iterations",
           "3", "--method", method, "--out", str(tmp_path)]
    stop_after_second_checkpoint(run, monkeypatch)
    capsys.readouterr()
    assert main([*run, "--task", "parts", "--resume"]) == 2
    assert "distill.pt: written by another run" in capsys.readouterr().err
