"""DD3D evaluated with its generator resampled (paper Table 6's last column, decision 85): the draws
change at every use and follow the run's seed, for classification and for part segmentation (the
parts from the noise partition); a backbone trained on them is reproducible, differs from one
trained on the fixed draw, and two gloo ranks train it as one process; ``evaluate --resample``
reports it and refuses, in one line, a set without a generator."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests.test_condense_ddp import _free_port, joined_rank
from train.condense.cli.command import main
from train.condense.methods.dd3d import draw_set, part_partition
from train.condense.matching.generator import DATASET_W0, PointGenerator
from train.condense.methods.resample import generator_source
from train.condense.files.rotator import Rotator
from train.condense.evaluation.training import Clouds, TrainSpec, train_backbone
from train.data.objects import load_objects
from train.runtime.distributed import DistInfo, cleanup
from train.runtime.leaving import leave

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
SPEC = TrainSpec(steps=3, lr=3e-3, batch_size=5)  # 5 of 13 clouds a step: 3 on rank 0, 2 on rank 1
POINTS = 32


def fixed_and_resampled(task: str) -> tuple[Clouds, Clouds]:
    """An untrained generator's set of the 13 shapes classes (one cloud each, the fixed sign step): its
    draw of seed 0, and the same set drawn afresh at every use."""
    train = load_objects("shapes", split="train", points=POINTS, size=4, task=task)
    labels = np.arange(len(train.class_names), dtype=np.int64)
    torch.manual_seed(0)
    generator, rotator = PointGenerator(len(labels), DATASET_W0["shapes"], width=32), Rotator("fixed")
    partition = part_partition(train, labels)
    points, parts = draw_set(generator, rotator, POINTS, 0, partition)
    fixed = Clouds(points, labels, len(train.class_names), parts, train.part_classes)
    return fixed, dataclasses.replace(fixed, source=generator_source(generator, rotator, partition, POINTS))


@pytest.mark.parametrize("task", ["classification", "parts"])
def test_the_draws_change_at_every_use_and_follow_the_seed(task: str) -> None:
    fixed, resampled = fixed_and_resampled(task)
    index = torch.tensor([4, 0, 7])
    draws = torch.Generator().manual_seed(5)
    first, second = resampled.batch(index, draws), resampled.batch(index, draws)
    again = resampled.batch(index, torch.Generator().manual_seed(5))
    assert first[0].shape == (3, POINTS, 3) and first[0].dtype == torch.float32
    assert not torch.equal(first[0], second[0])
    torch.testing.assert_close(first[0], again[0], rtol=0, atol=0)
    rows, _ = fixed.batch(index, draws)
    np.testing.assert_array_equal(rows.numpy(), fixed.points[[4, 0, 7]])
    if task == "parts":
        assert first[1].shape == (3, POINTS) and first[1].dtype == torch.int64
        assert torch.equal(first[1], again[1]) and not torch.equal(first[1], second[1])
        for row, k in zip(first[1], fixed.labels[[4, 0, 7]]):  # every point a part of its cloud's class
            assert set(row.tolist()) <= set(np.flatnonzero(fixed.part_classes == k).tolist())
    else:
        assert first[1] is None


@pytest.mark.parametrize("task", ["classification", "parts"])
def test_training_on_the_draws_is_reproducible_and_not_the_fixed_sets(task: str) -> None:
    fixed, resampled = fixed_and_resampled(task)
    one, two, still = (train_backbone(data, SPEC, 3, CPU, show=False).state_dict()
                       for data in (resampled, resampled, fixed))
    assert all(torch.equal(one[name], two[name]) for name in one)
    assert any(not torch.equal(one[name], still[name]) for name in one)


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    info = joined_rank(rank, world, port)
    try:
        model = train_backbone(fixed_and_resampled("classification")[1], SPEC, 7, info, show=False)
        torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")
    finally:
        cleanup()
    leave(0)  # as a rank of a run ends: gloo's threads outlive the group (decision 46)


def test_two_gloo_ranks_train_on_the_draws_as_one_process(tmp_path: Path) -> None:
    single = train_backbone(fixed_and_resampled("classification")[1], SPEC, 7, CPU, show=False).state_dict()
    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name, value in single.items():
        assert torch.equal(r0[name], r1[name]), f"ranks disagree on {name}"
        # float rounding of the summed gradients, which Adam scales up where a gradient is near 0 (steps are 3e-3)
        torch.testing.assert_close(r0[name], value, rtol=1e-4, atol=1e-5, msg=f"2 ranks differ on {name}")


TINY = ["--dataset", "shapes", "--size", "4", "--points", "32", "--device", "cpu", "--cpc", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-iteration dd3d run and a random set, in ``dd3d/`` and ``random/``."""
    root = tmp_path_factory.mktemp("runs")
    assert main([*TINY, "--method", "dd3d", "--iterations", "1", "--out", str(root / "dd3d")]) == 0
    assert main([*TINY, "--method", "random", "--out", str(root / "random")]) == 0
    return root


def test_evaluate_resample_reports_the_same_scores_for_the_same_seed(runs: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    argv = ["evaluate", "--from", str(runs / "dd3d" / "condensed.npz"), "--resample", "--steps", "2", "--runs", "2",
            "--device", "cpu"]
    for name in ("a", "b"):
        assert main([*argv, "--out", str(tmp_path / f"{name}.json")]) == 0
    assert "shapes aligned, frame none, dd3d CPC 1 resampled (13 clouds), pointnet, 2 steps" in capsys.readouterr().out
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "b"))
    assert a["resample"] is True and a["runs"] == b["runs"]


@pytest.mark.parametrize("source, words", [
    ("random/condensed.npz", "a random set has no generator to resample"),
    ("moved/condensed.npz", "generator.pt: no generator here (only dd3d keeps one)"),
    ("full", "--from full has none"),
])
def test_a_set_without_a_generator_is_refused_in_one_line(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          source: str, words: str) -> None:
    moved = runs / "moved"
    moved.mkdir(exist_ok=True)
    shutil.copy(runs / "dd3d" / "condensed.npz", moved / "condensed.npz")  # a dd3d set away from its generator
    capsys.readouterr()
    path = source if source == "full" else str(runs / source)
    assert main(["evaluate", "--from", path, "--dataset", "shapes", "--resample", "--steps", "1", "--runs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("python -m train.condense: error: ") and words in err
