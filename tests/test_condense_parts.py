"""Part segmentation distillation, DD3D Eq. (11) and Sec. 4.3 (decision 81): gm keeps its real
clouds' parts, dd3d draws each point's part from the interval its noise falls in (each part as wide
as its share of the class's real points), local matching looks at one part's points at a time,
and ``sample`` draws the parts with the points."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from train.condense.cli.command import main
from train.condense.files.condensed_file import read_condensed
from train.condense.methods.dd3d import draw_set, part_partition
from train.condense.methods.explicit import initial_clouds
from train.condense.matching.generator import PointGenerator
from fast import gradient_match_distance
from train.condense.matching.matching_loops import fresh_network, gradient_match_loss
from train.condense.files.rotator import Rotator
from train.data.objects import load_objects

TINY = ["--dataset", "shapes", "--task", "parts", "--size", "4", "--points", "16", "--device", "cpu", "--cpc", "1",
        "--iterations", "1"]


@pytest.fixture(scope="module")
def train() -> object:
    return load_objects("shapes", split="train", points=16, size=4, task="parts")


def test_gm_keeps_the_parts_of_its_real_clouds(tmp_path: Path, train: object) -> None:
    assert main([*TINY, "--method", "gm", "--out", str(tmp_path)]) == 0
    cset = read_condensed(tmp_path / "condensed.npz")
    _, labels, parts = initial_clouds(train, 1, 0, "real")
    assert np.array_equal(cset.labels, labels) and np.array_equal(cset.parts, parts)
    assert (train.part_classes[cset.parts] == cset.labels[:, None]).all()


def test_dd3d_draws_each_part_in_its_share_of_the_noise(train: object) -> None:
    labels = np.unique(train.labels)
    partition = part_partition(train, labels)
    torch.manual_seed(0)
    _, parts = draw_set(PointGenerator(len(labels), 100.0, width=16), Rotator("none"), 20000, 0, partition)
    for row, k in enumerate(labels):
        own = np.flatnonzero(train.part_classes == k)
        real = train.parts[train.labels == k]
        assert set(np.unique(parts[row])) <= set(own.tolist())
        for p in own:
            assert abs((parts[row] == p).mean() - (real == p).mean()) < 0.02


def test_local_matching_is_the_sum_of_each_common_parts_distance_on_its_points_alone(train: object) -> None:
    torch.manual_seed(1)
    net = fresh_network(len(train.class_names), torch.device("cpu"), len(train.part_classes))
    k = int(train.labels[0])
    clouds = torch.from_numpy(train.points[train.labels == k])
    parts = torch.from_numpy(train.parts[train.labels == k])
    other = clouds[:1] * 0.8 + 0.05, parts[:1]  # a synthetic batch of one cloud with some of the parts
    category = torch.nn.functional.one_hot(torch.full((len(clouds),), k), len(train.class_names))

    def part_gradients(points: torch.Tensor, labels: torch.Tensor, part: int) -> list[torch.Tensor]:
        logits = net(points, category[:len(points)])  # the whole clouds through the network, the loss on part's points
        loss = torch.nn.functional.cross_entropy(logits[labels == part], labels[labels == part])
        return list(torch.autograd.grad(loss, list(net.parameters())))

    common = sorted(set(parts.unique().tolist()) & set(other[1].unique().tolist()))
    want = sum(gradient_match_distance(part_gradients(*other, p), part_gradients(clouds, parts, p)).item()
               for p in common)
    got = gradient_match_loss(net, [k], lambda _: (clouds, parts), lambda _: other, local=True).item()
    assert len(common) >= 2 and got == pytest.approx(want, rel=1e-5)


def test_sample_draws_the_parts_with_the_points(tmp_path: Path, train: object) -> None:
    assert main([*TINY, "--method", "dd3d", "--out", str(tmp_path / "run")]) == 0
    distilled = read_condensed(tmp_path / "run" / "condensed.npz")
    assert distilled.parts.shape == (len(distilled), 16)
    assert main(["sample", "--from", str(tmp_path / "run"), "--points", "64", "--out", str(tmp_path / "s.npz")]) == 0
    drawn = read_condensed(tmp_path / "s.npz")
    assert drawn.parts.shape == (len(drawn), 64)
    assert (train.part_classes[drawn.parts] == drawn.labels[:, None]).all()
    assert main(["evaluate", "--from", str(tmp_path / "s.npz"), "--steps", "2", "--runs", "1", "--device", "cpu"]) == 0


def test_dm_and_tm_refuse_part_segmentation(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for method in ("dm", "tm"):
        assert main([*TINY, "--method", method, "--out", str(tmp_path)]) == 2
        assert f"{method} distils classification sets only (part segmentation: gm, dd3d)" in capsys.readouterr().err
