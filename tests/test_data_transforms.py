"""Transforms and collate (spec sections A1, D): labels stay aligned, grid sampling's inverse reaches
every point, seeded reproducibility, the batch layout the model takes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from train.data.base import PointCloudDataset, label_frequencies
from train.data.collate import collate
from train.data.validation import BadScanError, TooFewPointsError
from train.models.serialization import serialized_depth
from train.data.transforms import (
    WAYMO_CLAMP_BOX,
    AssembleFeatures,
    ClampBox,
    Compose,
    SERIALIZED_SPAN,
    GridSample,
    RandomFlip,
    RandomJitter,
    RandomRotateZ,
    RandomScale,
    build_transforms,
)

FEW = max(10, settings.default.max_examples // 5)


@st.composite
def clouds(draw: st.DrawFn, max_points: int = 200, extent: float = 3.0) -> dict:
    """A loader-style sample whose strength is the point index, so every output row can be traced
    back to its input point; coordinates on a coarse lattice to create shared voxels."""
    n = draw(st.integers(1, max_points))
    coord = draw(arrays(np.float32, (n, 3), elements=st.floats(-extent, extent, width=32)))
    segment = draw(arrays(np.int64, (n,), elements=st.integers(-1, 21)))
    return {"coord": coord, "strength": np.arange(n, dtype=np.float32)[:, None], "segment": segment,
            "name": "cloud"}


def voxel(coord: np.ndarray, grid: float) -> np.ndarray:
    return np.floor(coord.astype(np.float64) / grid).astype(np.int64)


@given(clouds(), st.integers(0, 2**32 - 1), st.sampled_from(["waymo", "nuscenes", "semantic_kitti"]),
       st.booleans())
def test_pipeline_keeps_every_label_with_its_point(sample: dict, seed: int, dataset: str, train: bool) -> None:
    try:
        out = build_transforms(dataset, train)(sample, np.random.default_rng(seed))
    except TooFewPointsError as err:  # decision 54: training takes no scan of one voxel
        assert train and "holds one voxel" in str(err)
        return
    ids = out["feat"][:, 3].astype(np.int64)  # strength carries the input index
    np.testing.assert_array_equal(out["strength"][:, 0], ids)
    np.testing.assert_array_equal(out["segment"], sample["segment"][ids])
    np.testing.assert_array_equal(out["feat"][:, :3], out["coord"])
    np.testing.assert_array_equal(out["origin_segment"], sample["segment"])
    # inverse: one entry per input point, every row reached, each kept point maps to its own row
    assert len(out["inverse"]) == len(sample["coord"])
    assert len(np.unique(ids)) == len(ids)
    np.testing.assert_array_equal(np.sort(np.unique(out["inverse"])), np.arange(len(ids)))
    np.testing.assert_array_equal(ids[out["inverse"][ids]], ids)


@given(clouds(extent=1.0), st.integers(0, 2**32 - 1), st.sampled_from(["train", "eval"]),
       st.sampled_from([0.05, 0.1, 0.37]))
def test_grid_sample_inverse_covers_every_point_within_its_voxel(
        sample: dict, seed: int, mode: str, grid: float) -> None:
    out = GridSample(grid, mode)(sample, np.random.default_rng(seed))
    coord, kept = sample["coord"], out["coord"]
    inv = out["inverse"]
    assert inv.shape == (len(coord),) and inv.dtype == np.int64
    assert inv.min() >= 0 and inv.max() < len(kept)
    np.testing.assert_array_equal(np.unique(inv), np.arange(len(kept)))  # every kept row is reached
    np.testing.assert_array_equal(voxel(kept[inv], grid), voxel(coord, grid))
    assert len(np.unique(voxel(kept, grid), axis=0)) == len(kept)  # one point per voxel
    ids = out["strength"][:, 0].astype(np.int64)
    np.testing.assert_array_equal(kept, coord[ids])  # real points, not centroids
    full = voxel(coord, grid)
    np.testing.assert_array_equal(out["grid_coord"], voxel(kept, grid) - full.min(axis=0))
    assert out["grid_coord"].min() == 0 and out["grid_coord"].dtype == np.int64


@settings(max_examples=FEW)
@given(clouds(extent=0.5), st.integers(0, 2**32 - 1))
def test_grid_sample_eval_mode_is_deterministic_and_keeps_first_point(sample: dict, seed: int) -> None:
    a = GridSample(0.1, "eval")(sample, np.random.default_rng(seed))
    b = GridSample(0.1, "eval")(sample, np.random.default_rng(seed + 1))
    for k in ("coord", "segment", "inverse", "grid_coord"):
        np.testing.assert_array_equal(a[k], b[k])
    ids = a["strength"][:, 0].astype(np.int64)
    np.testing.assert_array_equal(ids, [np.flatnonzero(a["inverse"] == j)[0] for j in range(len(ids))])


def test_grid_sample_train_mode_picks_each_voxel_member_uniformly() -> None:
    coord = np.array([[0.01, 0.01, 0.01], [0.02, 0.02, 0.02], [0.03, 0.01, 0.02], [0.04, 0.04, 0.04],
                      [0.5, 0.5, 0.5]], np.float32)
    sample = {"coord": coord, "strength": np.arange(5, dtype=np.float32)[:, None],
              "segment": np.arange(5), "name": "u"}
    picks = np.array([GridSample(0.05, "train")(sample, np.random.default_rng(s))["segment"][0]
                      for s in range(800)])
    counts = np.bincount(picks, minlength=4)
    assert counts.sum() == 800 and (counts[:4] > 140).all() and (counts[:4] < 260).all()


@given(clouds(), st.integers(0, 2**32 - 1))
def test_geometric_transforms_move_points_without_reordering(sample: dict, seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = sample["coord"].astype(np.float64)
    rot = RandomRotateZ(p=1.0)(sample, rng)["coord"]
    np.testing.assert_allclose(np.hypot(rot[:, 0], rot[:, 1]), np.hypot(c[:, 0], c[:, 1]), atol=1e-5)
    np.testing.assert_array_equal(rot[:, 2], sample["coord"][:, 2])
    scaled = RandomScale(0.9, 1.1)(sample, rng)["coord"]
    nz = np.abs(c) > 1e-3
    if nz.any():
        ratio = scaled[nz] / c[nz]
        assert np.ptp(ratio) < 1e-5 and 0.9 - 1e-6 <= ratio[0] <= 1.1 + 1e-6
    flipped = RandomFlip(0.5)(sample, rng)["coord"]
    np.testing.assert_array_equal(np.abs(flipped), np.abs(sample["coord"]))
    np.testing.assert_array_equal(flipped[:, 2], sample["coord"][:, 2])
    jit = RandomJitter(0.005, 0.02)(sample, rng)["coord"]
    assert np.abs(jit - c).max() <= 0.02 + 1e-6
    for out in (rot, scaled, flipped, jit):
        assert out.dtype == np.float32 and out.shape == c.shape


def test_rotation_and_flip_probabilities_and_identity_branch() -> None:
    sample = {"coord": np.array([[1.0, 2.0, 3.0]], np.float32), "strength": np.zeros((1, 1), np.float32),
              "segment": np.zeros(1, np.int64), "name": "p"}
    rotated = sum(not np.array_equal(RandomRotateZ(0.5)(sample, np.random.default_rng(s))["coord"],
                                     sample["coord"]) for s in range(400))
    assert 150 < rotated < 250
    flips = np.array([RandomFlip(0.5)(sample, np.random.default_rng(s))["coord"][0, :2] < 0
                      for s in range(400)])
    assert (np.abs(flips.mean(axis=0) - 0.5) < 0.1).all()
    assert not (flips[:, 0] == flips[:, 1]).all()  # x and y flip independently


def test_clamp_box_clamps_without_dropping_points() -> None:
    coord = np.array([[100.0, -100.0, 5.0], [1.0, 2.0, -1.0], [0.0, 0.0, -9.0]], np.float32)
    sample = {"coord": coord, "strength": np.zeros((3, 1), np.float32), "segment": np.arange(3), "name": "c"}
    out = ClampBox(*WAYMO_CLAMP_BOX)(sample, np.random.default_rng(0))
    np.testing.assert_allclose(out["coord"], [[75.2, -75.2, 2.0], [1.0, 2.0, -1.0], [0.0, 0.0, -4.0]],
                               rtol=1e-6)
    np.testing.assert_array_equal(out["segment"], [0, 1, 2])
    with pytest.raises(ValueError, match="low < high"):
        ClampBox((0, 0, 0), (1, 1, 0))


@pytest.mark.parametrize("grid_size", [0.05, 0.1])
def test_a_stray_point_beyond_the_serialization_range_moves_to_the_window_edge_and_the_scan_stays(
        grid_size: float, caplog: pytest.LogCaptureFixture) -> None:
    # decision 54: one reflection 10 km away; the other points are kept as they are
    rng = np.random.default_rng(0)
    coord = np.vstack([rng.uniform(-20, 20, (500, 3)), [[10_000.0, 5.0, -3_000.0]]]).astype(np.float32)
    sample = {"coord": coord, "strength": np.zeros((501, 1), np.float32), "segment": np.arange(501),
              "name": "site/scan 7"}
    out = GridSample(grid_size, "eval")(sample, rng)
    assert serialized_depth(out["grid_coord"], 1) == 16  # was 17: "grid_coord spans ... voxels"
    assert (out["grid_coord"].max(0) + 1 <= SERIALIZED_SPAN).all()
    moved = out["coord"][out["inverse"]]  # the kept point of each point's voxel (the stray is alone in its own)
    np.testing.assert_array_equal(voxel(moved[:500], grid_size), voxel(coord[:500], grid_size))
    window = voxel(moved, grid_size).max(0) - voxel(moved, grid_size).min(0) + 1
    # the window is centred on the median voxel (about 0): the stray point lands on its far edge
    assert window[0] <= SERIALIZED_SPAN and moved[500, 0] > (SERIALIZED_SPAN // 2 - 2) * grid_size
    assert tuple(moved[500, 1:]) == (5.0, -3_000.0)
    assert "'site/scan 7'" in caplog.text and "decision 54" in caplog.text and "1 point(s)" in caplog.text
    caplog.clear()
    GridSample(grid_size, "eval")({**sample, "coord": coord[:500]}, rng)  # within the range: no warning
    assert not caplog.text


def test_build_transforms_reproduces_the_spec_d_pipeline() -> None:
    names = [type(t).__name__ for t in build_transforms("waymo", True).transforms]
    assert names == ["RandomRotateZ", "ClampBox", "RandomScale", "RandomFlip", "RandomJitter",
                     "GridSample", "TwoPoints", "AssembleFeatures"]
    names = [type(t).__name__ for t in build_transforms("nuscenes", True).transforms]
    assert "ClampBox" not in names and names[-3:] == ["GridSample", "TwoPoints", "AssembleFeatures"]
    ev = build_transforms("semantic_kitti", False).transforms
    assert [type(t).__name__ for t in ev] == ["GridSample", "AssembleFeatures"] and ev[0].mode == "eval"
    t = build_transforms("waymo", True).transforms
    assert (t[0].p, t[0].max_angle, t[2].low, t[2].high, t[3].p) == (0.5, np.pi, 0.9, 1.1, 0.5)
    assert (t[4].sigma, t[4].clip, t[5].grid_size, t[5].mode) == (0.005, 0.02, 0.05, "train")
    with pytest.raises(ValueError, match="unknown dataset"):
        build_transforms("kitti360", True)


class _ToyDataset(PointCloudDataset):
    class_names = tuple("abc")

    def __init__(self, transform) -> None:
        super().__init__(transform, seed=7)
        rng = np.random.default_rng(0)
        self.clouds = [rng.uniform(-5, 5, (300 + 50 * i, 3)).astype(np.float32) for i in range(3)]

    def __len__(self) -> int:
        return len(self.clouds)

    def load(self, index: int) -> dict:
        if self.clouds[index] is None:
            raise BadScanError(f"toy{index} is unreadable")
        n = len(self.clouds[index])
        return {"coord": self.clouds[index], "strength": np.arange(n, dtype=np.float32)[:, None],
                "segment": np.arange(n) % 3, "name": f"toy{index}"}


def test_a_scan_of_no_points_or_in_training_of_one_voxel_is_a_bad_scan_skipped_with_skip_bad_scans() -> None:
    # grid sampling's bare ValueError ("has no points to grid-sample") was a traceback even with
    # --skip-bad-scans; a scan of one voxel broke the topological term (it needs an edge per cloud)
    ds = _ToyDataset(build_transforms("nuscenes", True))
    ds.clouds[1] = ds.clouds[1][:0]
    with pytest.raises(TooFewPointsError, match="scan 'toy1' holds no points"):
        ds[1]
    ds.clouds[0] = ds.clouds[0][:1]
    with pytest.raises(TooFewPointsError, match="scan 'toy0' holds one voxel of the grid: nothing to train on"):
        ds[0]
    evaluation = _ToyDataset(build_transforms("nuscenes", False))
    evaluation.clouds[0] = ds.clouds[0]
    assert len(evaluation[0]["grid_coord"]) == 1  # evaluated and labelled as it is
    ds.skip_bad_scans = True
    assert ds[1]["skipped"] == ["scan 'toy1' holds no points: nothing to train or evaluate on; remove it from the "
                                "split"] and ds[1]["name"] == "toy2"
    ds.clouds[2] = None  # the next scan unreadable too, and the one after it of one voxel: none is left
    with pytest.raises(BadScanError, match="none of its 3 scans can be read"):
        ds[1]


def test_dataset_augmentation_depends_only_on_seed_epoch_and_index() -> None:
    ds = _ToyDataset(build_transforms("waymo", True))
    a, b = ds[1], ds[1]
    np.testing.assert_array_equal(a["coord"], b["coord"])
    ds.set_epoch(1)
    c = ds[1]
    assert not np.array_equal(a["coord"], c["coord"]) or len(a["coord"]) != len(c["coord"])
    ds.set_epoch(0)
    np.testing.assert_array_equal(ds[-2]["coord"], a["coord"])
    with pytest.raises(IndexError):
        ds[3]


def test_collate_concatenates_with_end_offsets_and_global_inverse() -> None:
    ds = _ToyDataset(build_transforms("waymo", True))
    samples = [ds[i] for i in range(3)]
    batch = collate(samples)
    counts = [len(s["coord"]) for s in samples]
    orig = [len(s["inverse"]) for s in samples]
    assert batch["offset"].tolist() == np.cumsum(counts).tolist()
    assert batch["origin_offset"].tolist() == np.cumsum(orig).tolist()
    assert batch["coord"].dtype == torch.float32 and batch["feat"].shape == (sum(counts), 4)
    assert batch["grid_coord"].dtype == torch.int64 and batch["segment"].dtype == torch.int64
    assert batch["inverse"].shape == (sum(orig),) and batch["name"] == ["toy0", "toy1", "toy2"]
    # a per-row prediction reaches every original point of the right cloud through inverse
    row_ids = batch["feat"][:, 3][batch["inverse"]].numpy()  # input index of the kept point
    starts = np.concatenate([[0], np.cumsum(orig)[:-1]])
    for b, s in enumerate(samples):
        block = row_ids[starts[b]:starts[b] + orig[b]].astype(np.int64)
        np.testing.assert_array_equal(block, s["strength"][s["inverse"], 0])
        grid_rows = batch["grid_coord"][batch["inverse"][starts[b]:starts[b] + orig[b]]].numpy()
        np.testing.assert_array_equal(grid_rows, s["grid_coord"][s["inverse"]])
    np.testing.assert_array_equal(batch["origin_segment"].numpy(),
                                  np.concatenate([np.arange(n) % 3 for n in orig]))


def test_collate_refuses_samples_without_grid_sampling_or_points() -> None:
    raw = _ToyDataset(None)[0]
    with pytest.raises(ValueError, match="lacks .*grid_coord.*build_transforms"):
        collate([raw])
    with pytest.raises(ValueError, match="empty list"):
        collate([])
    good = _ToyDataset(build_transforms("waymo", False))[0]
    with pytest.raises(ValueError, match="inverse indices outside"):
        collate([{**good, "inverse": good["inverse"] + len(good["coord"])}])
    with pytest.raises(ValueError, match="already grid-sampled"):
        GridSample()(good, np.random.default_rng(0))


def test_feature_assembly_is_xyz_then_strength() -> None:
    s = {"coord": np.ones((2, 3), np.float32), "strength": np.full((2, 1), 0.5, np.float32)}
    np.testing.assert_array_equal(AssembleFeatures()(s, np.random.default_rng(0))["feat"],
                                  [[1, 1, 1, 0.5], [1, 1, 1, 0.5]])
    assert repr(Compose([AssembleFeatures()])) == "Compose([AssembleFeatures(['coord', 'strength'])])"


def test_label_frequencies_count_untransformed_labels_of_every_or_evenly_spread_scans() -> None:
    ds = _ToyDataset(build_transforms("waymo", True))  # 300, 350, 400 points labelled i % 3
    expected = sum(np.bincount(np.arange(n) % 3, minlength=3) for n in (300, 350, 400))
    np.testing.assert_array_equal(label_frequencies(ds), expected)
    np.testing.assert_array_equal(label_frequencies(ds, max_scans=2),  # scans 0 and 2
                                  np.bincount(np.arange(300) % 3, minlength=3) + np.bincount(np.arange(400) % 3))
    ds.clouds = []
    with pytest.raises(ValueError, match="holds no scans"):
        label_frequencies(ds)
