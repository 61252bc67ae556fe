"""Loaders (spec section C, ``docs/ptv3-and-datasets.md``): real fixture values, round trips through
tiny writers, bad inputs.

Real files: tiny samples of genuine nuScenes and SemanticKITTI scans, kept outside the repository
in the folder named by the environment variable ``TOPODISTILL_REAL_FIXTURES`` (``REAL``; the tests
that read them are skipped without it). Where they come from and every value checked here:
``docs/ptv3-and-datasets.md`` section C4.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from train.data.labels import NUSCENES_LEARNING_MAP, SEMANTIC_KITTI_LEARNING_MAP
from train.data.lidar.nuscenes import NuScenesDataset, read_nuscenes_scan
from train.data.lidar.nuscenes_index import official_splits
from train.data.lidar.semantic_kitti import SemanticKITTIDataset
from train.data.validation import (
    CorruptFileError,
    DatasetLayoutError,
    LabelCountError,
    NonFiniteCoordinateError,
)
from train.data.lidar.waymo import WaymoDataset

# The folder is named by the environment, never by a path outside the repository.
REAL = Path(os.environ.get("TOPODISTILL_REAL_FIXTURES", "")).expanduser()
needs_real = pytest.mark.skipif(not (os.environ.get("TOPODISTILL_REAL_FIXTURES") and REAL.is_dir()),
                                reason="set TOPODISTILL_REAL_FIXTURES to the folder of the real sample files "
                                "(docs/ptv3-and-datasets.md section C4) to run this test")
NUSC_PCD = "samples/LIDAR_TOP/n015-2018-08-02-17-16-37+0800__LIDAR_TOP__1533201470948018.pcd.bin"
NUSC_LABEL = "lidarseg/v1.0-trainval/5f6c1e0a0c3b444b97e78d2aa3fa34d2_lidarseg.bin"
MINI_SCENES = ("scene-0061", "scene-0103", "scene-0553", "scene-0655", "scene-0757", "scene-0796",
               "scene-0916", "scene-1077", "scene-1094", "scene-1100")  # the ten of v1.0-mini


# ----------------------------------------------------------------------------- tiny writers
def write_waymo(root: Path, split: str, frames: dict[str, dict]) -> None:
    """frames: "segment/timestamp" -> {coord, strength, segment (raw-1) or None}."""
    for name, f in frames.items():
        d = root / split / name
        d.mkdir(parents=True)
        np.save(d / "coord.npy", f["coord"])
        np.save(d / "strength.npy", f["strength"])
        np.save(d / "pose.npy", np.eye(4))
        if f.get("segment") is not None:
            np.save(d / "segment.npy", f["segment"])


def write_kitti(root: Path, seq: int, frame: int, points: np.ndarray, raw: np.ndarray | None) -> None:
    d = root / "sequences" / f"{seq:02d}"
    (d / "velodyne").mkdir(parents=True, exist_ok=True)
    points.astype(np.float32).tofile(d / "velodyne" / f"{frame:06d}.bin")
    if raw is not None:
        (d / "labels").mkdir(exist_ok=True)
        raw.astype(np.uint32).tofile(d / "labels" / f"{frame:06d}.label")


def write_nuscenes(root: Path, version: str, scans: list[dict], labelled: bool = True,
                   more_scenes: tuple[str, ...] = ()) -> None:
    """scans: {token, scene, points (n,5), raw (n,) uint8, key (bool, default True),
    channel (default LIDAR_TOP)}. Writes the files and the four tables; scene.json also lists
    ``more_scenes`` (scenes without samples)."""
    tables = {"sample_data": [], "lidarseg": [], "sample": [], "scene": []}
    scenes: dict[str, str] = {}
    for i, s in enumerate(scans):
        scene_token = scenes.setdefault(s["scene"], f"scene-token-{len(scenes)}")
        channel = s.get("channel", "LIDAR_TOP")
        filename = f"samples/{channel}/{s['token']}.pcd.bin"
        (root / filename).parent.mkdir(parents=True, exist_ok=True)
        s["points"].astype(np.float32).tofile(root / filename)
        tables["sample_data"].append({"token": s["token"], "sample_token": f"sample-{i}",
                                      "filename": filename, "is_key_frame": s.get("key", True)})
        tables["sample"].append({"token": f"sample-{i}", "scene_token": scene_token})
        if labelled and s.get("raw") is not None:
            label_name = f"lidarseg/{version}/{s['token']}_lidarseg.bin"
            (root / label_name).parent.mkdir(parents=True, exist_ok=True)
            s["raw"].astype(np.uint8).tofile(root / label_name)
            tables["lidarseg"].append({"token": f"ls-{i}", "sample_data_token": s["token"],
                                       "filename": label_name})
    for name in more_scenes:
        scenes.setdefault(name, f"scene-token-{len(scenes)}")
    tables["scene"] = [{"token": t, "name": n} for n, t in scenes.items()]
    (root / version).mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        if name == "lidarseg" and not labelled:
            continue
        (root / version / f"{name}.json").write_text(json.dumps(rows))


def random_points(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    pts = rng.uniform(-50, 50, size=(n, width)).astype(np.float32)
    if width == 5:
        pts[:, 3] = rng.integers(0, 256, n)
        pts[:, 4] = rng.integers(0, 32, n)
    return pts


# ----------------------------------------------------------------------------- real fixtures
@needs_real
def test_semantic_kitti_fixture_rows_and_mapped_label_counts() -> None:
    ds = SemanticKITTIDataset(REAL / "semantic_kitti", "train")
    assert len(ds) == 1
    s = ds[0]
    assert s["name"] == "00/000000"
    assert s["coord"].shape == (50, 3) and s["coord"].dtype == np.float32
    np.testing.assert_array_equal(s["coord"][0], np.float32([-5.7885814, -19.15888, 0.67275274]))
    np.testing.assert_array_equal(s["coord"][-1], np.float32([-6.070347, -18.912968, 0.66968155]))
    assert s["strength"].shape == (50, 1) and s["strength"][0, 0] == np.float32(0.27)
    assert s["strength"][-1, 0] == np.float32(0.27)
    ids, counts = np.unique(s["segment"], return_counts=True)
    assert dict(zip(ids.tolist(), counts.tolist())) == {12: 25, 14: 17, 15: 3, 17: 2, -1: 3}
    assert s["segment"].dtype == np.int64


@needs_real
def test_nuscenes_fixture_first_row_and_intensity_range() -> None:
    s = read_nuscenes_scan(REAL / "nuscenes" / NUSC_PCD)
    assert s["coord"].shape == (100, 3)
    np.testing.assert_array_equal(s["coord"][0], np.float32([-3.0878468, -0.3688294, -1.8496423]))
    assert s["strength"][0, 0] == np.float32(1.0) / np.float32(255.0)
    assert s["strength"].min() == 0.0
    assert s["strength"].max() == np.float32(234.0) / np.float32(255.0)
    assert (s["segment"] == -1).all()


@needs_real
def test_nuscenes_fixture_pair_with_mismatched_label_count_is_refused(tmp_path: Path) -> None:
    # Through the dataset: tables written here pair the real point file with the real label file.
    root = tmp_path / "nusc"
    for rel in (NUSC_PCD, NUSC_LABEL):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REAL / "nuscenes" / rel, root / rel)
    (root / "v1.0-trainval").mkdir()
    (root / "v1.0-trainval" / "sample_data.json").write_text(json.dumps([
        {"token": "5f6c1e0a0c3b444b97e78d2aa3fa34d2", "sample_token": "s0", "filename": NUSC_PCD,
         "is_key_frame": True}]))
    (root / "v1.0-trainval" / "lidarseg.json").write_text(json.dumps([
        {"token": "l0", "sample_data_token": "5f6c1e0a0c3b444b97e78d2aa3fa34d2", "filename": NUSC_LABEL}]))
    (root / "v1.0-trainval" / "sample.json").write_text(json.dumps([{"token": "s0", "scene_token": "c0"}]))
    (root / "v1.0-trainval" / "scene.json").write_text(json.dumps([{"token": "c0", "name": "scene-0001"}]))
    ds = NuScenesDataset(root, "all")
    with pytest.raises(LabelCountError, match=r"40 entries .* 100 points") as err:
        ds[0]
    assert "5f6c1e0a0c3b444b97e78d2aa3fa34d2_lidarseg.bin" in str(err.value)
    assert "LIDAR_TOP__1533201470948018.pcd.bin" in str(err.value)


@needs_real
def test_nuscenes_fixture_label_file_maps_to_documented_classes(tmp_path: Path) -> None:
    raw = np.fromfile(REAL / "nuscenes" / NUSC_LABEL, dtype=np.uint8)
    pts = np.zeros((len(raw), 5), np.float32)
    pts.tofile(tmp_path / "p.bin")
    (tmp_path / "l.bin").write_bytes(raw.tobytes())
    s = read_nuscenes_scan(tmp_path / "p.bin", tmp_path / "l.bin")
    ids, counts = np.unique(s["segment"], return_counts=True)
    # car x2, driveable_surface x15, terrain x1, manmade x12, vegetation x1, ego vehicle (ignore) x9
    assert dict(zip(ids.tolist(), counts.tolist())) == {3: 2, 10: 15, 13: 1, 14: 12, 15: 1, -1: 9}


# ----------------------------------------------------------------------------- round trips
def test_waymo_round_trip_all_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = {}
    for k in range(3):
        n = 50 + k
        frames[f"seg{k // 2}/{1000 + k}"] = {
            "coord": random_points(rng, n, 3), "strength": np.tanh(rng.random((n, 1))).astype(np.float32),
            "segment": rng.integers(-1, 22, n).astype(np.int32)}
    write_waymo(tmp_path, "training", frames)
    write_waymo(tmp_path, "testing", {k: {**v, "segment": None} for k, v in frames.items()})
    for split in ("training", "testing"):
        ds = WaymoDataset(tmp_path, split)
        assert len(ds) == 3
        for i, (name, f) in enumerate(sorted(frames.items())):
            s = ds[i]
            assert s["name"] == f"{split}/{name}"
            np.testing.assert_array_equal(s["coord"], f["coord"])
            np.testing.assert_array_equal(s["strength"], f["strength"])
            expected = f["segment"] if split == "training" else np.full(len(f["coord"]), -1)
            np.testing.assert_array_equal(s["segment"], expected)
            assert s["segment"].dtype == np.int64 and s["strength"].shape == (len(f["coord"]), 1)


def test_semantic_kitti_round_trip_maps_low_bits_and_ignores_instance_bits(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    known = np.array(sorted(SEMANTIC_KITTI_LEARNING_MAP))
    pts = random_points(rng, 64, 4)
    semantic = rng.choice(known, 64)
    words = semantic.astype(np.uint32) | (rng.integers(0, 2**16, 64).astype(np.uint32) << 16)
    write_kitti(tmp_path, 8, 3, pts, words)
    write_kitti(tmp_path, 11, 0, pts, None)
    s = SemanticKITTIDataset(tmp_path, "val")[0]
    assert s["name"] == "08/000003"
    np.testing.assert_array_equal(s["coord"], pts[:, :3])
    np.testing.assert_array_equal(s["strength"][:, 0], pts[:, 3])
    np.testing.assert_array_equal(s["segment"], [SEMANTIC_KITTI_LEARNING_MAP[r] for r in semantic])
    test = SemanticKITTIDataset(tmp_path, "test")
    assert len(test) == 1 and (test[0]["segment"] == -1).all()
    assert len(SemanticKITTIDataset(tmp_path, [8, 11])) == 2


def test_nuscenes_round_trip_keyframes_official_splits_overrides_and_unlabelled_version(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    known = np.array(sorted(NUSCENES_LEARNING_MAP))
    scans = []  # scene-0061 is in the official mini_train list, scene-0103 in mini_val
    for i, (scene, key, channel) in enumerate([("scene-0061", True, "LIDAR_TOP"),
                                              ("scene-0103", True, "LIDAR_TOP"),
                                              ("scene-0103", False, "LIDAR_TOP"),
                                              ("scene-0103", True, "RADAR_FRONT")]):
        n = 30 + i
        scans.append({"token": f"tok{i}", "scene": scene, "key": key, "channel": channel,
                      "points": random_points(rng, n, 5), "raw": rng.choice(known, n)})
    write_nuscenes(tmp_path, "v1.0-mini", scans, more_scenes=MINI_SCENES)
    ds = NuScenesDataset(tmp_path, "all", version="v1.0-mini")
    assert [ds[i]["name"] for i in range(len(ds))] == ["tok0", "tok1"]  # keyframes of LIDAR_TOP
    for i in range(2):
        s, ref = ds[i], scans[i]
        np.testing.assert_array_equal(s["coord"], ref["points"][:, :3])
        np.testing.assert_allclose(s["strength"][:, 0], ref["points"][:, 3] / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(s["segment"], [NUSCENES_LEARNING_MAP[r] for r in ref["raw"]])

    def names(split: str, **kw: object) -> list[str]:
        d = NuScenesDataset(tmp_path, split, version="v1.0-mini", **kw)
        return [k.token for k in d.keyframes]

    # the official lists, no hand work: train/val stand for mini_train/mini_val in v1.0-mini
    assert names("train") == names("mini_train") == ["tok0"]
    assert names("val") == names("mini_val") == ["tok1"]
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "mini_val.txt").write_text("# my validation scenes\nscene-0061\n")
    assert names("val") == ["tok0"]  # a list file overrides the official list
    assert names("val", scenes=["scene-0061", "scene-0103"]) == ["tok0", "tok1"]  # scenes= wins
    with pytest.raises(ValueError, match="scene-9999"):
        names("all", scenes=["scene-9999"])
    with pytest.raises(ValueError, match=r"'dev' is not an official split .*splits/dev.txt"):
        names("dev")
    with pytest.raises(DatasetLayoutError, match="v1.0-trainval"):
        NuScenesDataset(tmp_path, "train")  # the default version's tables are not there
    test_scans = [dict(scans[0], token="t0", scene="scene-0077")]  # an official test scene
    write_nuscenes(tmp_path, "v1.0-test", test_scans, labelled=False,
                   more_scenes=official_splits()["test"])
    test = NuScenesDataset(tmp_path, "test", version="v1.0-test")
    assert not test.labelled and (test[0]["segment"] == -1).all()
    with pytest.raises(ValueError, match=r"none of them is in this version .*--nuscenes-version"):
        NuScenesDataset(tmp_path, "train", version="v1.0-test")


# ----------------------------------------------------------------------------- bad inputs
LOADERS = {
    "waymo": lambda root: WaymoDataset(root, "training"),
    "semantic_kitti": lambda root: SemanticKITTIDataset(root, "train"),
    "nuscenes": lambda root: NuScenesDataset(root, "all", version="v1.0-mini"),
}


def make_valid(name: str, root: Path, n: int = 20, raw: np.ndarray | None = None,
               coord: np.ndarray | None = None) -> None:
    """One valid scan of ``name`` with ``n`` points (optionally given raw labels/coords)."""
    rng = np.random.default_rng(3)
    coord = random_points(rng, n, 3) if coord is None else coord
    if name == "waymo":
        seg = np.zeros(n, np.int32) if raw is None else raw.astype(np.int32)
        write_waymo(root, "training", {"s/1": {"coord": coord, "strength": np.zeros((n, 1), np.float32),
                                               "segment": seg}})
    elif name == "semantic_kitti":
        pts = np.concatenate([coord, np.zeros((n, 1), np.float32)], axis=1)
        write_kitti(root, 0, 0, pts, np.full(n, 40) if raw is None else raw)
    else:
        pts = np.concatenate([coord, np.zeros((n, 2), np.float32)], axis=1)
        write_nuscenes(root, "v1.0-mini", [{"token": "t0", "scene": "scene-0001", "points": pts,
                                            "raw": np.full(n, 24) if raw is None else raw}])


def point_file(name: str, root: Path) -> Path:
    return {"waymo": root / "training/s/1/coord.npy",
            "semantic_kitti": root / "sequences/00/velodyne/000000.bin",
            "nuscenes": root / "samples/LIDAR_TOP/t0.pcd.bin"}[name]


def label_file(name: str, root: Path) -> Path:
    return {"waymo": root / "training/s/1/segment.npy",
            "semantic_kitti": root / "sequences/00/labels/000000.label",
            "nuscenes": root / "lidarseg/v1.0-mini/t0_lidarseg.bin"}[name]


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_missing_root_error_shows_layout_and_data_root_flag(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError) as err:
        LOADERS[name](tmp_path / "nowhere")
    msg = str(err.value)
    assert "nowhere" in msg and "--data-root" in msg and "Expected layout" in msg
    assert isinstance(err.value, FileNotFoundError)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_truncated_point_file_is_refused_naming_the_file(name: str, tmp_path: Path) -> None:
    make_valid(name, tmp_path)
    path = point_file(name, tmp_path)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(CorruptFileError) as err:
        LOADERS[name](tmp_path)[0]
    assert str(path) in str(err.value) and "truncated" in str(err.value)


def test_truncated_or_empty_binary_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    make_valid("semantic_kitti", tmp_path)
    path = label_file("semantic_kitti", tmp_path)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CorruptFileError, match="not a multiple of the record size 4"):
        LOADERS["semantic_kitti"](tmp_path)[0]
    points = point_file("semantic_kitti", tmp_path)
    points.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="is empty") as err:
        LOADERS["semantic_kitti"](tmp_path)[0]
    assert str(points) in str(err.value)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_nan_strength_is_refused(name: str, tmp_path: Path) -> None:
    make_valid(name, tmp_path)
    if name == "waymo":
        path = tmp_path / "training/s/1/strength.npy"
        np.save(path, np.full((20, 1), np.nan, np.float32))
    else:
        path = point_file(name, tmp_path)
        width = 4 if name == "semantic_kitti" else 5
        pts = np.fromfile(path, np.float32).reshape(-1, width)
        pts[3, 3] = np.nan
        pts.tofile(path)
    with pytest.raises(CorruptFileError, match="NaN or infinite"):
        LOADERS[name](tmp_path)[0]


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_label_count_different_from_point_count_is_refused(name: str, tmp_path: Path) -> None:
    make_valid(name, tmp_path, n=20)
    path = label_file(name, tmp_path)
    if name == "waymo":
        np.save(path, np.zeros(19, np.int32))
    else:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 19 // 20])
    with pytest.raises(LabelCountError, match="19 entries but the point file") as err:
        LOADERS[name](tmp_path)[0]
    assert str(path) in str(err.value)


UNKNOWN_RAW = {"waymo": 40, "semantic_kitti": 77, "nuscenes": 32}  # ids in no learning map


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_unknown_raw_label_ids_become_ignore_with_a_warning_count(
        name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = {"waymo": np.full(20, 5), "semantic_kitti": np.full(20, 40), "nuscenes": np.full(20, 24)}[name]
    raw[[2, 7, 11]] = UNKNOWN_RAW[name]
    make_valid(name, tmp_path, raw=raw)
    with caplog.at_level(logging.WARNING, logger="train.data.labels"):
        s = LOADERS[name](tmp_path)[0]
    assert (s["segment"][[2, 7, 11]] == -1).all()
    assert (np.delete(s["segment"], [2, 7, 11]) >= 0).all()
    assert any("3 point(s)" in r.getMessage() and str(UNKNOWN_RAW[name]) in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_nan_coordinates_are_refused_naming_the_file(name: str, tmp_path: Path) -> None:
    coord = random_points(np.random.default_rng(4), 20, 3)
    coord[5, 1] = np.nan
    make_valid(name, tmp_path, coord=coord)
    with pytest.raises(NonFiniteCoordinateError, match="first at row 5") as err:
        LOADERS[name](tmp_path)[0]
    assert str(point_file(name, tmp_path)) in str(err.value)


def test_waymo_corrupt_npy_and_missing_labels_name_the_file(tmp_path: Path) -> None:
    make_valid("waymo", tmp_path)
    seg = label_file("waymo", tmp_path)
    seg.unlink()
    with pytest.raises(DatasetLayoutError, match="segment.npy"):
        WaymoDataset(tmp_path, "training")[0]
    (tmp_path / "training/s/1/strength.npy").write_bytes(b"not an npy file")
    with pytest.raises(CorruptFileError, match="strength.npy"):
        WaymoDataset(tmp_path, "training")[0]
    with pytest.raises(DatasetLayoutError, match="validation"):
        WaymoDataset(tmp_path, "validation")


def test_nuscenes_keyframe_without_lidarseg_entry_and_bad_table_are_refused(tmp_path: Path) -> None:
    make_valid("nuscenes", tmp_path)
    table = tmp_path / "v1.0-mini" / "lidarseg.json"
    table.write_text("[]")
    with pytest.raises(DatasetLayoutError, match="no entry in"):
        LOADERS["nuscenes"](tmp_path)
    table.write_text("{broken")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        LOADERS["nuscenes"](tmp_path)


def test_semantic_kitti_split_without_any_sequence_on_disk_is_refused(tmp_path: Path) -> None:
    make_valid("semantic_kitti", tmp_path)  # sequence 00 only
    with pytest.raises(DatasetLayoutError, match=r"no scans of sequences \[8\]"):
        SemanticKITTIDataset(tmp_path, "val")
    with pytest.raises(ValueError, match="split 'dev'"):
        SemanticKITTIDataset(tmp_path, "dev")


def test_learning_maps_cover_the_spec_tables_and_reject_bad_tables() -> None:
    from train.data.labels import WAYMO_LEARNING_MAP, LearningMap, class_names

    # spec C: nuScenes maps all 32 raw ids, 16 classes; SemanticKITTI 19 classes + 4 ignored ids
    assert sorted(NUSCENES_LEARNING_MAP) == list(range(32))
    assert sorted(set(NUSCENES_LEARNING_MAP.values())) == list(range(-1, 16))
    assert sorted(set(SEMANTIC_KITTI_LEARNING_MAP.values())) == list(range(-1, 19))
    assert [r for r, v in SEMANTIC_KITTI_LEARNING_MAP.items() if v == -1] == [0, 1, 52, 99]
    assert WAYMO_LEARNING_MAP[-1] == -1 and WAYMO_LEARNING_MAP[21] == 21 and len(WAYMO_LEARNING_MAP) == 23
    assert len(class_names("waymo")) == 22 and class_names("synthetic") == class_names("waymo")
    with pytest.raises(ValueError, match="train ids outside"):
        LearningMap("x", {1: 5}, num_classes=3)
    with pytest.raises(TypeError, match="labels.bin: labels must be integers"):
        LearningMap("x", {1: 0}, num_classes=3).apply(np.zeros(3, np.float32), "labels.bin")
    with pytest.raises(ValueError, match="unknown dataset"):
        class_names("kitti360")


def test_waymo_float_labels_are_refused_naming_the_file(tmp_path: Path) -> None:
    make_valid("waymo", tmp_path)
    np.save(label_file("waymo", tmp_path), np.zeros(20, np.float32))
    with pytest.raises(TypeError, match="segment.npy"):
        WaymoDataset(tmp_path, "training")[0]
