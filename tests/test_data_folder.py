"""A folder of one's own scans (``--dataset folder``, train/data/lidar/folder.py): it loads like the published
sets, every kind of bad folder is one line naming the file, and a run trains, resumes and evaluates on
it. Every test builds its own small folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from test_train_support import run_killed_after_checkpoint, tiny_config
from train.runtime.checkpoint import load_checkpoint
from train.data.lidar.folder import SPEC_FILE, FolderDataset, UnmappedLabelError, read_folder_spec
from train.data.lidar.scan_files import read_scan, write_labels, write_scan
from train.data.validation import CorruptFileError, DatasetLayoutError, LabelCountError
from train.runner.datasets import class_count, prepare_splits
from train.runtime.distributed import DistInfo
from train.engine.loop import FINAL
from train.runner.stages import run

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
CLASSES = ["ground", "box", "pole"]  # raw ids 1, 2, 3; raw 0 is unlabelled (ignored)
SPEC: dict[str, Any] = {
    "classes": CLASSES, "label_map": {1: 0, 2: 1, 3: 2}, "ignore": [0], "labels": {"file": "{stem}.label"},
    "splits": {"train": ["train/*"], "val": ["val/*"], "test": ["test/*"]},
    "feature": "intensity", "feature_scale": 255.0,
}


# one format per scan: the folder mixes them
LAYOUT = {"train": ("s0.bin", "s1.ply", "s2.laz", "s3.npz"), "val": ("v0.ply",), "test": ("t0.npy",)}


def _scene(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Ground plane, a box and a pole with raw labels 1, 2, 3 and a few unlabelled (0) points."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(4, n, p=[0.05, 0.55, 0.25, 0.15])
    xyz = np.where(kind[:, None] == 1, rng.uniform([-8, -8, 0], [8, 8, 0.05], (n, 3)), 0.0)
    xyz = np.where(kind[:, None] == 2, rng.uniform([1, 1, 0], [3, 3, 1.5], (n, 3)), xyz)
    xyz = np.where(kind[:, None] == 3, rng.uniform([-3, -3, 0], [-2.8, -2.8, 4], (n, 3)), xyz)
    xyz = np.where(kind[:, None] == 0, rng.uniform(-8, 8, (n, 3)), xyz)
    intensity = (40 + 60 * kind + rng.integers(0, 20, n)).astype(np.float64)[:, None]
    return np.hstack([xyz, intensity]), kind


def build_folder(root: Path, spec: dict[str, Any] = SPEC) -> Path:
    """A scan folder of LAYOUT with .label files beside the scans and ``spec`` as dataset.yaml."""
    for i, (split, names) in enumerate(LAYOUT.items()):
        for j, name in enumerate(names):
            points, raw = _scene(10 * i + j)
            path = root / split / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write_scan(path, points)
            write_labels(path.with_suffix(".label"), raw)
    (root / SPEC_FILE).write_text(yaml.safe_dump(spec))
    return root


def test_folder_loads_every_format_with_mapped_labels_and_scaled_feature(tmp_path: Path) -> None:
    root = build_folder(tmp_path)
    train = FolderDataset(root, "train")
    assert train.class_names == tuple(CLASSES) and train.num_classes == 3 and len(train) == 4
    for index, name in enumerate(LAYOUT["train"]):
        points, raw = _scene(index)
        sample = train.load(index)
        assert sample["name"] == f"train/{Path(name).stem}"
        origin = np.floor(points[:, :3].min(axis=0)) if name.endswith(".laz") else 0.0  # the LAS header offset
        np.testing.assert_allclose(sample["coord"], points[:, :3] - origin, atol=1e-3)  # .laz keeps millimetres
        np.testing.assert_allclose(sample["strength"][:, 0], points[:, 3] / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(sample["segment"], raw - 1)  # 1, 2, 3 -> 0, 1, 2; 0 -> ignore (-1)
    assert len(FolderDataset(root, "test")) == 1


def test_label_field_inside_the_scans_and_no_feature(tmp_path: Path) -> None:
    points, raw = _scene(5)
    (tmp_path / "train").mkdir()
    write_scan(tmp_path / "train" / "a.ply", points, labels=raw, label_field="class")
    write_scan(tmp_path / "train" / "b.las", points, labels=raw, label_field="classification")
    spec = {**SPEC, "labels": {"field": "class"}, "feature": None, "splits": {"train": ["train/b.las"],
                                                                            "val": ["train/a.ply"]}}
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(spec))
    sample = FolderDataset(tmp_path, "val").load(0)
    np.testing.assert_array_equal(sample["segment"], raw - 1)
    np.testing.assert_array_equal(sample["strength"], 0.0)


def test_a_nan_in_a_column_the_model_does_not_read_leaves_the_scan_readable(tmp_path: Path) -> None:
    points, raw = _scene(6)
    curvature = np.full((len(points), 1), np.nan)  # a column an export may leave empty; feature: intensity
    write_scan(tmp_path / "train" / "a.ply", np.hstack([points, curvature]), ("x", "y", "z", "intensity", "curvature"))
    write_labels(tmp_path / "train" / "a.label", raw)
    for name in ("b.ply", "b.label"):  # a validation scan of its own: splits may not share one
        (tmp_path / "val").mkdir(exist_ok=True)
        (tmp_path / "val" / name).write_bytes((tmp_path / "train" / name.replace("b.", "a.")).read_bytes())
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump({**SPEC, "splits": {"train": ["train/*"], "val": ["val/*"]}}))
    sample = FolderDataset(tmp_path, "train").load(0)
    np.testing.assert_allclose(sample["strength"][:, 0], points[:, 3] / 255.0, rtol=1e-6)
    spec = {**SPEC, "feature": "curvature", "splits": {"train": ["train/*"], "val": ["val/*"]}}
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(spec))
    with pytest.raises(CorruptFileError, match=r"a\.ply.*column 'curvature'"):
        FolderDataset(tmp_path, "train").load(0)


def test_a_tile_folder_reads_each_scan_from_its_own_centre_and_keeps_the_origin(tmp_path: Path) -> None:
    points, raw = _scene(4)
    points[:, :3] += (512_000.0, 5_000_000.0, 300.0)  # a LAS tile in UTM, written with offset floor(min)
    write_scan(tmp_path / "train" / "a.las", points, labels=raw, label_field="classification")
    write_scan(tmp_path / "val" / "b.las", points, labels=raw, label_field="classification")
    spec = {**SPEC, "labels": {"field": "classification"}, "frame": "tile",
            "splits": {"train": ["train/*"], "val": ["val/*"]}}
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(spec))
    sample = FolderDataset(tmp_path, "train").load(0)
    centre = (points[:, :2].min(axis=0) + points[:, :2].max(axis=0)) / 2  # the tile's centre, its lowest z
    np.testing.assert_array_equal(sample["origin"], [*np.round(centre), np.floor(points[:, 2].min())])
    np.testing.assert_allclose(sample["coord"] + sample["origin"], points[:, :3], rtol=0, atol=0.0005 + 1e-6)
    np.testing.assert_array_equal(sample["xyz"], read_scan(tmp_path / "train" / "a.las").xyz)  # what outputs write
    seen_by_transform = FolderDataset(tmp_path, "train", transform=lambda s, rng: s)[0]
    assert "xyz" not in seen_by_transform and "origin" in seen_by_transform  # the exact points stay with the read


def test_npy_labels_beside_npy_scans_are_not_scans_and_negative_raw_ids_map(tmp_path: Path) -> None:
    points, raw = _scene(7)
    raw = raw - 1  # raw ids -1 (unlabelled), 0, 1, 2
    for name in ("scans/a", "scans/b", "val/c"):
        write_scan(tmp_path / f"{name}.npy", points)
        write_labels(tmp_path / f"{name}_label.npy", raw)
    spec = {**SPEC, "label_map": {0: 0, 1: 1, 2: 2}, "ignore": [-1], "labels": {"file": "{stem}_label.npy"},
            "splits": {"train": ["scans/*.npy"], "val": ["val/c.npy"]}}
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(spec))
    train = FolderDataset(tmp_path, "train")
    assert [p.name for p in train.scan_paths] == ["a.npy", "b.npy"]
    np.testing.assert_array_equal(train.load(0)["segment"], raw)


def test_runs_see_the_folder_classes_and_its_labelled_test_split(tmp_path: Path) -> None:
    root = build_folder(tmp_path / "data")
    cfg = tiny_config(tmp_path, dataset="folder", data_root=str(root))
    assert class_count(cfg) == 3
    data = prepare_splits(cfg, CPU)
    assert data.class_names == tuple(CLASSES) and data.has_test
    batch = data.collate([data.train[0], data.train[1]])
    assert batch["feat"].shape[1] == 4 and int((batch["segment"] >= 0).sum()) > 0
    assert len(data.eval_views("test", False)[0]) == 1
    no_test = build_folder(tmp_path / "no_test", {**SPEC, "splits": {"train": ["train/*"], "val": ["val/*"]}})
    assert not prepare_splits(tiny_config(tmp_path, dataset="folder", data_root=str(no_test)), CPU).has_test


def test_a_run_trains_two_steps_resumes_and_evaluates_on_a_folder(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after its first step (an every-step checkpoint), the run resumes, takes the second step,
    evaluates on the folder's validation scan and draws the pictures."""
    root = build_folder(tmp_path / "data")
    common = dict(dataset="folder", data_root=str(root), out=str(tmp_path / "out"), stage="student", epochs=1,
                  iters_per_epoch=2, batch_size=2, checkpoint_every=1, eval_every_epochs=1)
    run_killed_after_checkpoint(monkeypatch, 1, lambda: run(tiny_config(tmp_path, **common), CPU))
    out = tmp_path / "out"
    assert load_checkpoint(out / "student" / "checkpoint_last.pt")["step"] == 1
    results = run(tiny_config(tmp_path, resume=True, **common), CPU)
    log = (out / "student" / "train_log.csv").read_text().split()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2"]  # step 1 before the kill, step 2 after
    assert load_checkpoint(out / "student" / FINAL)["step"] == 2
    (result,) = results.values()
    assert 0.0 <= result["miou"] <= 1.0 and len(result["iou"]) == len(CLASSES)
    report = (out / "results.md").read_text()
    assert all(name in report for name in CLASSES)
    assert {"bev.png", "curves.png", "per_class_iou.png"} <= {p.name for p in out.iterdir()}


# ----------------------------------------------------------------------------- bad folders
def _spec_error(tmp_path: Path, spec: Any) -> str:
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(spec))
    with pytest.raises((ValueError, DatasetLayoutError)) as err:
        read_folder_spec(tmp_path)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_dataset_yaml_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=f"no {SPEC_FILE}"):
        read_folder_spec(tmp_path)
    assert "unknown key(s) ['clases']" in _spec_error(tmp_path, {**SPEC, "clases": CLASSES})
    assert "missing key(s) ['splits']" in _spec_error(tmp_path, {k: v for k, v in SPEC.items() if k != "splits"})
    assert "raw id 3 -> 5" in _spec_error(tmp_path, {**SPEC, "label_map": {1: 0, 3: 5}})
    assert "raw id 1 is mapped twice" in _spec_error(tmp_path, {**SPEC, "ignore": [1]})
    assert "'feature' is one column name" in _spec_error(tmp_path, {**SPEC, "feature": ["intensity", "red"]})
    assert "'frame' is sensor or tile" in _spec_error(tmp_path, {**SPEC, "frame": "utm"})
    assert "'splits' must map train and val" in _spec_error(tmp_path, {**SPEC, "splits": {"train": ["a"]}})
    assert "split pattern '../other/*.bin' reaches outside the folder" in _spec_error(
        tmp_path, {**SPEC, "splits": {"train": ["train/*"], "val": ["../other/*.bin"]}})


def test_a_label_file_template_other_than_stem_is_one_line_naming_dataset_yaml(tmp_path: Path) -> None:
    # {name} ended the reading in a bare KeyError: 'name'; without {stem} every scan shares one file
    for template in ("{name}.label", "{0}.label", "labels.label", "{stem"):
        assert f"{tmp_path / SPEC_FILE}: 'labels' must be" in _spec_error(tmp_path, {**SPEC, "labels": {"file": template}})


def test_a_root_and_scan_names_holding_wildcard_characters_are_read_as_they_are(tmp_path: Path) -> None:
    root = build_folder(tmp_path / "site [A]")  # its [A] matched no scan: glob took it for a wildcard
    (root / "train" / "s1.ply").rename(root / "train" / "s[1].ply")
    (root / "train" / "s1.label").rename(root / "train" / "s[1].label")
    assert [p.name for p in FolderDataset(root, "train").scan_paths] == ["s0.bin", "s2.laz", "s3.npz", "s[1].ply"]
    (root / SPEC_FILE).write_text(yaml.safe_dump({**SPEC, "splits": {**SPEC["splits"], "train": ["train/s[1].ply"]}}))
    train = FolderDataset(root, "train")  # a file list names the file, not the files s1.ply would match
    assert [p.name for p in train.scan_paths] == ["s[1].ply"] and len(train.load(0)["coord"]) == 400


def test_a_split_listing_a_file_that_does_not_exist_or_sharing_a_scan_with_another_is_refused(tmp_path: Path) -> None:
    root = build_folder(tmp_path, {**SPEC, "splits": {**SPEC["splits"], "train": ["train/s0.bin", "train/s9.ply"]}})
    with pytest.raises(DatasetLayoutError, match=r"split 'train' lists 'train/s9.ply', which does not exist"):
        FolderDataset(root, "train")  # it was dropped without a word
    (root / SPEC_FILE).write_text(yaml.safe_dump({**SPEC, "splits": {**SPEC["splits"], "val": ["*/*.ply"]}}))
    for split, other in (("train", "val"), ("val", "train")):
        with pytest.raises(DatasetLayoutError, match=rf"s1.ply' lies in split '{split}' and in split '{other}'"):
            FolderDataset(root, split)


def test_a_label_field_with_bin_scans_is_refused_at_once(tmp_path: Path) -> None:
    root = build_folder(tmp_path, {**SPEC, "labels": {"field": "label"}})
    with pytest.raises(ValueError, match=r"labels.field 'label', but '.*s0\.bin' is a \.bin scan"):
        FolderDataset(root, "train")


def test_empty_split_is_one_line(tmp_path: Path) -> None:
    root = build_folder(tmp_path, {**SPEC, "splits": {"train": ["train/*"], "val": ["validation/*.ply"]}})
    with pytest.raises(DatasetLayoutError, match=r"split 'val' \(\['validation/\*\.ply'\]\) matches no scan file"):
        FolderDataset(root, "val")


def test_label_file_with_another_point_count_names_it(tmp_path: Path) -> None:
    root = build_folder(tmp_path)
    write_labels(root / "train" / "s1.label", np.ones(7, dtype=np.int64))
    with pytest.raises(LabelCountError, match=r"s1\.label.*7 labels.*400 points"):
        FolderDataset(root, "train").load(1)


def test_label_outside_the_map_names_the_file_and_the_ids(tmp_path: Path) -> None:
    root = build_folder(tmp_path)
    _, raw = _scene(2)
    raw[[3, 9]] = [7, 99]
    write_labels(root / "train" / "s2.label", raw)
    with pytest.raises(UnmappedLabelError, match=r"s2\.label.*2 point\(s\) carry raw label id\(s\) 7, 99"):
        FolderDataset(root, "train").load(2)


def test_unreadable_scan_is_named_and_skipped_with_skip_bad_scans(tmp_path: Path) -> None:
    root = build_folder(tmp_path)
    path = root / "train" / "s1.ply"
    path.write_bytes(path.read_bytes()[:-5])
    train = FolderDataset(root, "train")
    with pytest.raises(CorruptFileError, match=r"s1\.ply"):
        train[1]
    train.skip_bad_scans = True
    sample = train[1]
    assert sample["name"] == "train/s2" and "s1.ply" in sample["skipped"][0]
