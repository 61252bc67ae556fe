"""nuScenes as shipped (spec section G): the official scene lists, the version flag, the tables
indexed once per process, Pointcept's info files and the restricted unpickler that reads them."""
from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import train.data.lidar.nuscenes_index as nuscenes_index
from test_data_loaders import MINI_SCENES, random_points, write_nuscenes
from train.data.labels import NUSCENES_LEARNING_MAP
from train.data.lidar.nuscenes import NuScenesDataset
from train.data.lidar.nuscenes_index import official_splits, table_index
from train.data.restricted_pickle import UnsafePickleError, load_data_pickle
from train.data.validation import CorruptFileError, DatasetLayoutError
from train.options.resolve import finalize
from train.runner.datasets import prepare_splits
from train.runtime.distributed import DistInfo


# ----------------------------------------------------------------------------- official lists
def test_shipped_scene_lists_have_the_official_sizes_and_do_not_overlap() -> None:
    lists = official_splits()
    assert {k: len(v) for k, v in lists.items()} == {
        "train": 700, "val": 150, "test": 150, "mini_train": 8, "mini_val": 2}
    every = lists["train"] + lists["val"] + lists["test"]
    assert len(set(every)) == 1000  # the 850 trainval + 150 test scenes, each in one split
    assert set(lists["mini_train"] + lists["mini_val"]) == set(MINI_SCENES)
    assert set(MINI_SCENES) <= set(lists["train"] + lists["val"])  # v1.0-mini is part of trainval


def test_shipped_scene_lists_equal_the_devkits_when_it_is_installed() -> None:
    # the devkit's module imports the whole devkit (OpenCV, Shapely, ...): skipped without it
    splits = pytest.importorskip("nuscenes.utils.splits", reason="nuscenes-devkit not installed")
    shipped = official_splits()
    for name in shipped:
        assert list(shipped[name]) == list(getattr(splits, name)), name


# ----------------------------------------------------------------------------- the tables
def scan(rng: np.random.Generator, token: str, scene: str, **kw: object) -> dict:
    n = 20
    return {"token": token, "scene": scene, "points": random_points(rng, n, 5),
            "raw": rng.choice(np.array(sorted(NUSCENES_LEARNING_MAP)), n), **kw}


def write_mini(root: Path) -> list[dict]:
    """v1.0-mini with one keyframe in each of its ten scenes and a few records to skip."""
    rng = np.random.default_rng(5)
    scans = [scan(rng, f"k{i}", name) for i, name in enumerate(MINI_SCENES)]
    scans += [scan(rng, "sweep", MINI_SCENES[0], key=False),
              scan(rng, "radar", MINI_SCENES[1], channel="RADAR_FRONT")]
    write_nuscenes(root, "v1.0-mini", scans)
    return scans


def test_streamed_sample_data_gives_the_keyframes_a_full_json_parse_gives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mini(tmp_path)
    table = tmp_path / "v1.0-mini" / "sample_data.json"
    rows = json.loads(table.read_text())
    expected = [r for r in rows if r["is_key_frame"] and r["filename"].startswith("samples/LIDAR_TOP/")]
    # pieces shorter than a record: every record crosses a piece boundary somewhere
    monkeypatch.setattr(nuscenes_index, "_CHUNK_BYTES", 7)
    for text in (json.dumps(rows), json.dumps(rows, indent=0), "\n " + json.dumps(rows, indent=4) + "\n"):
        table.write_text(text)
        got = nuscenes_index.sample_data_rows(table, nuscenes_index.LIDAR_KEYFRAME_PREFIX)
        assert [r["token"] for r in got if r["is_key_frame"]] == [r["token"] for r in expected]
    ds = NuScenesDataset(tmp_path, "all", version="v1.0-mini")
    assert [k.token for k in ds.keyframes] == [f"k{i}" for i in range(10)]
    assert {k.scene for k in ds.keyframes} == set(MINI_SCENES)


def test_truncated_or_malformed_sample_data_is_refused_with_the_file_named(tmp_path: Path) -> None:
    write_mini(tmp_path)
    table = tmp_path / "v1.0-mini" / "sample_data.json"
    text = table.read_text()
    table.write_text(text[: len(text) // 2])
    with pytest.raises(CorruptFileError, match=r"sample_data.json.*truncated"):
        NuScenesDataset(tmp_path, "all", version="v1.0-mini")
    table.write_text(text.replace('"is_key_frame"', '"key_frame"', 1))
    with pytest.raises(CorruptFileError, match=r"sample_data.json.*'is_key_frame'"):
        NuScenesDataset(tmp_path, "all", version="v1.0-mini")
    table.write_text('{"records": []}')
    with pytest.raises(CorruptFileError, match=r"does not start with '\['"):
        NuScenesDataset(tmp_path, "all", version="v1.0-mini")


def test_one_index_serves_every_split_and_view_and_an_edited_table_is_read_again(tmp_path: Path) -> None:
    write_mini(tmp_path)
    first = table_index(tmp_path, "v1.0-mini")
    views = [NuScenesDataset(tmp_path, split, version="v1.0-mini") for split in ("train", "val", "val")]
    assert table_index(tmp_path, "v1.0-mini") is first
    assert [len(v) for v in views] == [8, 2, 2]
    scene_json = tmp_path / "v1.0-mini" / "scene.json"
    scenes = json.loads(scene_json.read_text())
    scene_json.write_text(json.dumps([s for s in scenes if s["name"] != "scene-0103"]))
    with pytest.raises(DatasetLayoutError, match="belongs to no scene"):
        NuScenesDataset(tmp_path, "val", version="v1.0-mini")


def test_run_config_version_picks_the_tables_and_the_official_splits(tmp_path: Path) -> None:
    write_mini(tmp_path)
    cfg = finalize({"dataset": "nuscenes", "data_root": str(tmp_path), "nuscenes_version": "v1.0-mini"})
    data = prepare_splits(cfg, DistInfo(0, 1, 0, torch.device("cpu")))
    assert len(data.train) == 8 and [len(v) for v in data.val_views(True)] == [2] * len(data.val_views(True))
    assert all(v.version == "v1.0-mini" for v in [data.train, *data.val_views(True)])
    with pytest.raises(ValueError, match=r"v1.0-test holds only the unlabelled test scenes"):
        finalize({"dataset": "nuscenes", "nuscenes_version": "v1.0-test"})
    with pytest.raises(ValueError, match=r"--nuscenes-version must be one of"):
        finalize({"dataset": "nuscenes", "nuscenes_version": "v1.0"})


# ----------------------------------------------------------------------------- Pointcept info files
def pointcept_info(token: str, labelled: bool) -> dict:
    """One record as Pointcept's preprocess_nuscenes_info.py writes it (paths relative to raw/)."""
    sweep = {"lidar_path": f"sweeps/LIDAR_TOP/{token}_s.pcd.bin", "sample_data_token": token + "s",
             "transform_matrix": np.eye(4), "global_from_car": np.eye(4),
             "car_from_current": np.eye(4), "time_lag": 0.05}
    info = {"lidar_path": f"samples/LIDAR_TOP/{token}.pcd.bin", "lidar_token": token,
            "cam_front_path": f"samples/CAM_FRONT/{token}.jpg", "cam_intrinsic": np.eye(3),
            "token": "sample-" + token, "sweeps": [sweep] * 9, "ref_from_car": np.eye(4),
            "car_from_global": np.eye(4), "timestamp": 1532402927.647951}
    if labelled:
        info.update(gt_boxes=np.zeros((2, 9)), gt_boxes_velocity=np.zeros((2, 3)),
                    gt_names=np.array(["car", "pedestrian"]), gt_boxes_token=np.array(["a", "b"]),
                    num_lidar_pts=np.array([3, 4]), num_radar_pts=np.array([0, 1]),
                    gt_segment_path=f"lidarseg/v1.0-trainval/{token}_lidarseg.bin")
    return info


def write_pointcept(root: Path, protocol: int) -> dict[str, list[dict]]:
    rng = np.random.default_rng(9)
    splits = {"train": ["b", "a"], "val": ["c"], "test": ["d"]}
    written = {}
    for split, tokens in splits.items():
        infos = [pointcept_info(t, labelled=split != "test") for t in tokens]
        for info in infos:
            s = scan(rng, info["lidar_token"], "")
            (root / "raw" / info["lidar_path"]).parent.mkdir(parents=True, exist_ok=True)
            s["points"].tofile(root / "raw" / info["lidar_path"])
            if "gt_segment_path" in info:
                (root / "raw" / info["gt_segment_path"]).parent.mkdir(parents=True, exist_ok=True)
                s["raw"].astype(np.uint8).tofile(root / "raw" / info["gt_segment_path"])
            info["scan"] = s
        (root / "info").mkdir(parents=True, exist_ok=True)
        with (root / "info" / f"nuscenes_infos_10sweeps_{split}.pkl").open("wb") as fh:
            pickle.dump([{k: v for k, v in i.items() if k != "scan"} for i in infos], fh, protocol=protocol)
        written[split] = infos
    return written


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pointcept_info_layout_loads_its_splits_through_the_restricted_unpickler(
        tmp_path: Path, protocol: int) -> None:
    written = write_pointcept(tmp_path, protocol)
    train = NuScenesDataset(tmp_path, "train")
    assert [k.token for k in train.keyframes] == ["a", "b"]  # sorted by point file
    for i, ref in enumerate(sorted(written["train"], key=lambda r: r["lidar_path"])):
        s = train[i]
        np.testing.assert_array_equal(s["coord"], ref["scan"]["points"][:, :3])
        np.testing.assert_array_equal(s["segment"], [NUSCENES_LEARNING_MAP[r] for r in ref["scan"]["raw"]])
    assert len(NuScenesDataset(tmp_path, "val")) == 1
    test = NuScenesDataset(tmp_path, "test")
    assert not test.labelled and (test[0]["segment"] == -1).all()
    records = load_data_pickle(tmp_path / "info" / "nuscenes_infos_10sweeps_train.pkl", "info")
    np.testing.assert_array_equal(records[0]["gt_names"], ["car", "pedestrian"])
    assert records[0]["sweeps"][0]["transform_matrix"].shape == (4, 4)
    with pytest.raises(ValueError, match=r"info layout, which holds the splits train, val, test only"):
        NuScenesDataset(tmp_path, "train", scenes=["scene-0001"])


def test_restricted_unpickler_reads_arrays_pickled_by_numpy_1_and_2(tmp_path: Path) -> None:
    data = {"m": np.arange(12.0).reshape(3, 4), "names": np.array(["car", "bus"]), "n": np.int64(7),
            "t": (1, "a", None, True), "s": {1, 2}, "b": b"\x00\xff"}
    text = pickle.dumps(data, protocol=0)  # text opcodes: module names can be swapped in place
    assert b"numpy._core.multiarray" in text or b"numpy.core.multiarray" in text
    for core in (b"numpy._core.", b"numpy.core."):  # numpy 2 writes the first, numpy 1 the second
        path = tmp_path / "data.pkl"
        path.write_bytes(text.replace(b"numpy._core.", core).replace(b"numpy.core.", core))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy 2 warns when numpy.core is imported
            got = load_data_pickle(path, "test pickle")
        np.testing.assert_array_equal(got["m"], data["m"])
        np.testing.assert_array_equal(got["names"], data["names"])
        assert got["n"] == 7 and got["t"] == data["t"] and got["s"] == {1, 2} and got["b"] == data["b"]


class _Payload:
    """Pickles as a call of ``target(*args)``: what a malicious data file does."""

    def __init__(self, target: object, *args: object) -> None:
        self.target, self.args = target, args

    def __reduce__(self) -> tuple:
        return self.target, self.args


@pytest.mark.parametrize("how", ["builtins.exec", "os.system"])
def test_a_pickle_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "ran"
    payload = (_Payload(exec, f"open({str(marker)!r}, 'w').write('ran')") if how == "builtins.exec"
               else _Payload(os.system, f"touch {marker}"))
    (tmp_path / "info").mkdir()
    path = tmp_path / "info" / "nuscenes_infos_10sweeps_train.pkl"
    path.write_bytes(pickle.dumps([pointcept_info("a", True), {"lidar_path": payload}]))
    module = "builtins" if how == "builtins.exec" else os.system.__module__
    with pytest.raises(UnsafePickleError, match=rf"nuscenes_infos_10sweeps_train.pkl.*{module}\.") as err:
        NuScenesDataset(tmp_path, "train")
    assert "refused without running it" in str(err.value)
    assert not marker.exists()


def test_a_truncated_or_wrong_info_file_names_the_file(tmp_path: Path) -> None:
    write_pointcept(tmp_path, 4)
    path = tmp_path / "info" / "nuscenes_infos_10sweeps_val.pkl"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptFileError, match=r"nuscenes_infos_10sweeps_val.pkl.*not a readable pickle"):
        NuScenesDataset(tmp_path, "val")
    path.write_bytes(pickle.dumps({"infos": []}))
    with pytest.raises(CorruptFileError, match=r"must hold a list of sample dicts"):
        NuScenesDataset(tmp_path, "val")
    path.write_bytes(pickle.dumps([{"lidar_path": "x.bin"}]))
    with pytest.raises(CorruptFileError, match=r"record 0 lacks the text fields \['lidar_token'\]"):
        NuScenesDataset(tmp_path, "val")
