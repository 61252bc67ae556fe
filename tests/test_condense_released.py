"""DD3D as its released code runs it (decision 92): the loops, iterations and optimisers by task,
setting and data set; inner epochs over the whole synthetic set with the network's learning rate
cut at half; generated clouds in the unit sphere for the inner loop and the written set; the
generator's released layers and scale; part segmentation's batch-norm statistics and perturbed real
clouds; the provenance records what ran."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import train.condense.methods.dd3d as dd3d
import train.condense.matching.matching_loops as matching_loops
from tests.condensation_tiny import CPU, tiny_set
from train.condense.evaluation.augment import released_augment
from train.condense.cli.command import main
from train.condense.files.condensed_file import read_condensed
from train.condense.methods.dd3d import distill_dd3d, draw_set, part_partition, unit_sphere
from train.condense.matching.generator import PointGenerator
from train.condense.matching.matching_loops import (DistillSpec, freeze_batch_norm, fresh_network, match_gradients,
                                                    real_sampler)
from train.condense.matching.released import FAMILIES, Loops, generator_adam, iterations_for, loops_for
from train.condense.methods.resample import generator_source
from train.condense.files.rotator import Rotator
from train.data.objects import load_objects
from train.data.objects.load import OBJECT_SETS


def _radii(clouds: np.ndarray | torch.Tensor) -> np.ndarray:
    clouds = torch.as_tensor(clouds, dtype=torch.float64)
    return (clouds - clouds.mean(dim=1, keepdim=True)).norm(dim=-1).amax(dim=1).numpy()


def test_loops_are_the_released_code_s_by_setting_and_data_set() -> None:
    def outer_inner(dataset: str, setting: str, task: str = "classification") -> list[tuple[int, int]]:
        return [(lo.outer, lo.inner) for lo in (loops_for(dataset, setting, task, c) for c in (1, 5, 10, 20, 50, 80))]
    # gm_inr.py: ModelNet40 and ScanObjectNN without --pca, both with --pca; shapes and the LiDAR cuts take them
    for dataset in ("modelnet40", "shapes"):
        assert outer_inner(dataset, "aligned") == [(10, 1), (10, 1), (20, 1), (20, 1), (40, 5), (40, 5)]
    for dataset in ("scanobjectnn", "scanobjectnn_pb_t50_rs", "lidar_objects", "semantic_kitti_objects"):
        assert outer_inner(dataset, "aligned") == [(10, 1), (10, 1), (20, 10), (20, 10), (30, 5), (30, 5)]
    for dataset in ("modelnet40", "shapes", "scanobjectnn", "lidar_objects"):
        for setting in ("rotated", "rotated_raw"):
            assert outer_inner(dataset, setting) == [(5, 5), (5, 5), (20, 10), (20, 10), (40, 5), (40, 5)]
    # seg_inr.py, any data set and setting
    assert outer_inner("shapenet_part", "aligned", "parts") == [(10, 1), (10, 1), (10, 2), (10, 2), (10, 2), (10, 2)]
    assert outer_inner("shapes", "rotated", "parts") == outer_inner("shapenet_part", "aligned", "parts")
    assert loops_for("shapes", "aligned", "classification", 1) == Loops(10, 1, batch=256, net_decay=True, decay=True)
    assert loops_for("shapes", "aligned", "parts", 1) == Loops(10, 1, batch=32, net_decay=False, decay=False)
    assert [iterations_for(d, "classification") for d in ("modelnet40", "shapes", "scanobjectnn", "lidar_objects")] \
        == [400, 400, 200, 200]
    assert iterations_for("shapenet_part", "parts") == iterations_for("shapes", "parts") == 400
    assert dataclasses.astuple(generator_adam("classification")) == (1e-3, 5e-4)
    assert dataclasses.astuple(generator_adam("parts")) == (5e-4, 1e-5)
    assert set(FAMILIES) == set(OBJECT_SETS)  # every object data set takes a released family
    with pytest.raises(ValueError, match="has no released settings"):
        loops_for("cifar10", "aligned", "classification", 1)


def _spy_epochs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, list[int]]]:
    """Every inner epoch's network learning rate and the batch sizes of its steps."""
    seen: list[tuple[float, list[int]]] = []
    epoch, loss = matching_loops.train_epoch, matching_loops.task_backward

    def spied_epoch(net, net_step, *rest):  # type: ignore[no-untyped-def]
        seen.append((net_step.param_groups[0]["lr"], []))
        return epoch(net, net_step, *rest)

    def spied_loss(net, points, *rest):  # type: ignore[no-untyped-def]
        seen[-1][1].append(len(points))
        return loss(net, points, *rest)
    monkeypatch.setattr(matching_loops, "train_epoch", spied_epoch)
    monkeypatch.setattr(matching_loops, "task_backward", spied_loss)
    return seen


def _gm_on(clouds: torch.Tensor, labels: np.ndarray, loops: Loops) -> None:
    """Gradient matching of explicit ``clouds`` against themselves with ``loops``, one iteration."""
    synthetic = torch.nn.Parameter(clouds.clone())
    rows = {int(k): torch.from_numpy(np.flatnonzero(labels == k)) for k in np.unique(labels)}
    draws = torch.Generator().manual_seed(0)
    real = real_sampler(clouds, labels, 32, draws)
    torch.manual_seed(0)
    match_gradients(torch.optim.Adam([synthetic], lr=1e-3), sorted(rows), 3, loops, real,
                    lambda k: (synthetic[rows[k]], None), DistillSpec(iterations=1), draws, CPU)


def test_the_inner_loop_trains_epochs_over_the_whole_synthetic_set(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _spy_epochs(monkeypatch)
    labels = np.repeat(np.arange(3), 100)  # 300 clouds: more than a batch of 256
    clouds = torch.from_numpy(np.random.default_rng(0).normal(size=(300, 8, 3)).astype(np.float32))
    _gm_on(clouds, labels, Loops(outer=3, inner=2, batch=256, net_decay=True, decay=True))
    assert [steps for _, steps in seen] == [[256, 44]] * 4  # (outer - 1) x inner epochs, each every cloud once


@pytest.mark.parametrize("net_decay", [True, False])
def test_the_network_s_learning_rate_is_cut_by_ten_after_half_its_inner_epochs(monkeypatch: pytest.MonkeyPatch,
                                                                             net_decay: bool) -> None:
    seen = _spy_epochs(monkeypatch)
    labels = np.repeat(np.arange(3), 2)
    clouds = torch.from_numpy(np.random.default_rng(1).normal(size=(6, 8, 3)).astype(np.float32))
    _gm_on(clouds, labels, Loops(outer=3, inner=2, batch=256, net_decay=net_decay, decay=True))
    # gm_inr.py: StepLR(step_size = (outer x inner) // 2 = 3 epochs) over the (outer - 1) x inner = 4 epochs run
    want = [1e-3, 1e-3, 1e-3, 1e-4] if net_decay else [1e-3] * 4
    assert [lr for lr, _ in seen] == pytest.approx(want)


def test_unit_sphere_recentres_and_scales_each_cloud() -> None:
    clouds = torch.randn(4, 50, 3, dtype=torch.float64) * torch.tensor([0.1, 2.0, 0.5, 7.0])[:, None, None] + 3.0
    out = unit_sphere(clouds)
    np.testing.assert_allclose(out.mean(dim=1).numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(_radii(out), 1.0 / (1.0 + 1e-4 / _radii(clouds)), rtol=1e-12)


def test_dd3d_trains_on_and_writes_clouds_in_the_unit_sphere_and_matches_them_as_drawn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {"inner": [], "matched": []}
    epoch, distances = matching_loops.train_epoch, matching_loops.class_distances

    def spied_epoch(net, net_step, points, *rest):  # type: ignore[no-untyped-def]
        seen["inner"].append(_radii(points))
        return epoch(net, net_step, points, *rest)

    def spied_distances(net, classes, real, synthetic, *rest):  # type: ignore[no-untyped-def]
        def recorded(k: int):  # type: ignore[no-untyped-def]
            batch = synthetic(k)
            seen["matched"].append(_radii(batch[0].detach()))
            return batch
        return distances(net, classes, real, recorded, *rest)
    monkeypatch.setattr(matching_loops, "train_epoch", spied_epoch)
    monkeypatch.setattr(matching_loops, "class_distances", spied_distances)
    points, _, _, _ = distill_dd3d(tiny_set(), 1, 0, DistillSpec(iterations=2), CPU, tmp_path, Rotator("none"))
    assert len(seen["inner"]) == 2 * 9  # (10, 1) loops: 9 inner epochs an iteration
    np.testing.assert_allclose(np.concatenate(seen["inner"]), 1.0, atol=1e-3)
    assert np.abs(np.concatenate(seen["matched"]) - 1.0).max() > 0.05  # the generator's own scale
    np.testing.assert_allclose(_radii(points), 1.0, atol=1e-3)
    np.testing.assert_allclose(points.mean(axis=1), 0.0, atol=1e-5)
    generator, rotator, _, partition = dd3d.load_generator(tmp_path / dd3d.GENERATOR_NAME)
    np.testing.assert_array_equal(draw_set(generator, rotator, 32, 0, partition)[0], points)  # sample --seed 0
    clouds, _ = generator_source(generator, rotator, partition, 50)(torch.arange(3), torch.Generator().manual_seed(1))
    np.testing.assert_allclose(_radii(clouds), 1.0, atol=1e-3)  # evaluate --resample


def test_a_part_set_is_drawn_as_generated() -> None:
    train = load_objects("shapes", split="train", points=16, task="parts", size=2)
    labels = np.unique(train.labels)
    torch.manual_seed(0)
    generator = PointGenerator(len(labels), 100.0, width=16)
    drawn, _ = draw_set(generator, Rotator("none"), 40, 0, part_partition(train, labels))
    with torch.no_grad():
        noise = torch.rand(len(labels), 40, generator=torch.Generator().manual_seed(0))
        raw = generator(noise, torch.arange(len(labels)))
    np.testing.assert_allclose(drawn, raw.numpy(), atol=1e-6)  # seg_inr.py evaluates its draws unnormalised


def test_the_generator_is_the_released_one_and_draws_at_its_scale() -> None:
    torch.manual_seed(0)
    generator = PointGenerator(40, 100.0)
    assert len(generator.modulators) == 1 and generator.out.bias is None  # CINR.py: ReLU(code), one 256 x 256 layer
    with torch.no_grad():
        clouds = generator(torch.rand(40, 1024), torch.arange(40))
    assert 0.5 < float(np.mean(_radii(clouds))) < 1.0  # the extra layer and Linear's bounds gave ~0.16


def test_freeze_batch_norm_moves_the_running_statistics_towards_real_clouds_then_freezes_them() -> None:
    torch.manual_seed(0)
    net = fresh_network(2, CPU.device, num_parts=4)
    clouds = torch.randn(6, 20, 3) * 3.0 + 1.0
    parts = torch.zeros(6, 20, dtype=torch.long)
    freeze_batch_norm(net, [0, 1], lambda k: (clouds[3 * k:3 * k + 3], parts[3 * k:3 * k + 3]))
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms)
    first = norms[0]
    with torch.no_grad():  # the first layer's input: momentum 0.1 from the fresh (0, 1)
        features = torch.nn.functional.linear(clouds.reshape(-1, 3), net.trunk.layers[0][0].weight)
    np.testing.assert_allclose(first.running_mean.numpy(), 0.1 * features.mean(dim=0).numpy(), rtol=1e-4, atol=1e-5)


def test_part_segmentation_matches_with_frozen_statistics_and_perturbed_real_clouds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    modes, perturbed = [], []
    distances = matching_loops.class_distances

    def spied_distances(net, *rest):  # type: ignore[no-untyped-def]
        modes.extend(m.training for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
        return distances(net, *rest)

    def spied_perturb(points, generator):  # type: ignore[no-untyped-def]
        perturbed.append(len(points))
        return released_augment(points, generator)
    monkeypatch.setattr(matching_loops, "class_distances", spied_distances)
    monkeypatch.setattr(dd3d, "released_augment", spied_perturb)
    train = load_objects("shapes", split="train", points=16, task="parts", size=2)
    distill_dd3d(train, 1, 0, DistillSpec(iterations=1), CPU, tmp_path, Rotator("none"))
    assert modes and not any(modes)
    assert len(perturbed) == 10 * len(np.unique(train.labels))  # every real batch of the (10, 1) loops
    perturbed.clear()
    distill_dd3d(tiny_set(), 1, 0, DistillSpec(iterations=1), CPU, tmp_path, Rotator("none"))
    assert not perturbed  # gm_inr.py matches its real clouds as they are


def test_the_file_records_the_loops_iterations_and_learning_rates_it_ran(tmp_path: Path) -> None:
    run = ["--dataset", "shapes", "--size", "4", "--points", "16", "--device", "cpu", "--cpc", "1"]
    assert main([*run, "--method", "dd3d", "--iterations", "1", "--out", str(tmp_path / "dd3d")]) == 0
    record = read_condensed(tmp_path / "dd3d" / "condensed.npz").provenance["distill"]
    assert len(record.pop("loss")) == 1  # each iteration's matching loss (decision 93)
    assert record == {"iterations": 1, "real_batch": 32, "net_lr": 1e-3,
                      "loops": {"outer": 10, "inner": 1, "batch": 256, "net_decay": True, "decay": True},
                      "adam": {"lr": 1e-3, "weight_decay": 5e-4}}
    assert main([*run, "--method", "random", "--out", str(tmp_path / "random")]) == 0
    assert read_condensed(tmp_path / "random" / "condensed.npz").provenance["distill"] is None
