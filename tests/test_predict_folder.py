"""``python -m train.predict`` with a model trained on a folder of one's own scans (decisions 50, 51):
the checkpoint keeps the folder's classes and feature, so new scans are labelled without the
training folder, as files or as the folder's splits, scored as ``train.evaluation.evaluate`` scores
them; scans or folders the model does not fit are refused in one line."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from test_data_folder import CLASSES, SPEC, _scene, build_folder
from test_data_scan_files import NORTHING, write_float64_ply
from test_train_support import tiny_config
from train.data.lidar.folder import SPEC_FILE, FolderDataset, read_folder_spec
from train.data.lidar.scan_files import read_scan, write_labels, write_scan
from train.engine.loop import FINAL, load_frozen_teacher, model_spec, train_stage
from train.evaluation.evaluate import evaluate
from train.evaluation.metrics import IoUAccumulator
from train.predict import main
from train.prediction.inputs import FileSource
from train.runner.datasets import eval_pipeline
from train.runner.datasets import prepare_splits
from train.runtime.checkpoint import load_checkpoint, save_checkpoint
from train.runtime.distributed import DistInfo

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def train_then_move_the_folder(tmp: Path, folder_spec: dict[str, Any]) -> dict[str, Any]:
    """A student trained two steps on a scan folder described by ``folder_spec``, whose folder is
    then moved away: every prediction below runs without the folder the checkpoint was trained on."""
    cfg = tiny_config(tmp, dataset="folder", data_root=str(build_folder(tmp / "data", folder_spec)), stage="student")
    data = prepare_splits(cfg, CPU)
    spec = model_spec(cfg, "student", data.num_classes, CPU.device)
    train_stage(cfg, "student", tmp / "out", data.train, data.collate, spec, CPU)
    moved = tmp / "moved"
    shutil.move(tmp / "data", moved)
    return {"tmp": tmp, "checkpoint": tmp / "out" / FINAL, "root": moved}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return train_then_move_the_folder(tmp_path_factory.mktemp("predict_folder"), SPEC)


@pytest.fixture(scope="module")
def trained_tile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """As ``trained``, with ``frame: tile``: each scan is read from its own centre (decision 53)."""
    return train_then_move_the_folder(tmp_path_factory.mktemp("predict_tile"), {**SPEC, "frame": "tile"})


def survey_pair(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """One scene written twice as float64 PLY, ``near.ply`` around 0 and ``far.ply`` at northing
    5,000,000 m (on a 1/4096 m lattice: the shift is exact); returns (far x, y, z, raw labels)."""
    points, raw = _scene(20)
    near = np.round(points[:, :3] * 4096) / 4096
    write_float64_ply(folder / "near.ply", near, points[:, 3])
    write_float64_ply(folder / "far.ply", near + NORTHING, points[:, 3])
    return near + NORTHING, raw


def run(*argv: Any) -> int:
    return main([str(a) for a in argv] + ["--no-progress"])


def predict_val_split(t: dict[str, Any], out: Path, *more: Any) -> int:
    return run("--checkpoint", t["checkpoint"], "--dataset", "folder", "--data-root", t["root"], "--split", "val",
               "--out", out, *more)


def test_the_checkpoint_keeps_the_folder_classes_feature_and_label_map_as_plain_values(
        trained: dict[str, Any]) -> None:
    stored = load_checkpoint(trained["checkpoint"])["extra"]["folder"]  # read with weights_only=True
    assert stored == {"classes": CLASSES, "label_map": {0: -1, 1: 0, 2: 1, 3: 2}, "feature": "intensity",
                      "feature_scale": 255.0, "frame": "sensor"}
    assert not (trained["tmp"] / "data").exists()  # the training folder is gone


def test_the_val_split_and_the_same_scans_as_files_get_the_same_labels_without_the_training_folder(
        trained: dict[str, Any], tmp_path: Path) -> None:
    assert predict_val_split(trained, tmp_path / "split") == 0
    assert run("--checkpoint", trained["checkpoint"], "--input", trained["root"] / "val",
               "--out", tmp_path / "files") == 0
    split = FolderDataset(trained["root"], "val")
    for i, path in enumerate(split.scan_paths):
        from_split = np.load(tmp_path / "split" / f"{split.load(i)['name']}.npy")
        np.testing.assert_array_equal(from_split, np.load(tmp_path / "files" / f"{path.stem}.npy"))
        assert len(from_split) == len(read_scan(path).xyz)


def test_predicted_labels_of_the_val_split_score_what_evaluate_scores(trained: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    assert predict_val_split(trained, tmp_path / "out") == 0
    cfg = tiny_config(trained["tmp"], dataset="folder", data_root=str(trained["root"]))
    data = prepare_splits(cfg, CPU)
    split = data.val_views(False)[0]
    acc = IoUAccumulator(len(CLASSES))
    for i in range(len(split)):
        sample = split.load(i)
        acc.update(torch.from_numpy(np.load(tmp_path / "out" / f"{sample['name']}.npy")),
                   torch.from_numpy(sample["segment"]))
    model, _ = load_frozen_teacher(trained["checkpoint"], CPU.device)
    expected = evaluate(model, data.val_views(False), len(CLASSES), CPU.device, data.collate)
    assert int(acc.state().sum()) > 0
    assert torch.equal(acc.state(), expected.state())  # the same confusion counts, class by class


def test_the_ply_output_is_coloured_in_the_folder_classes_palette(trained: dict[str, Any], tmp_path: Path) -> None:
    from train.evaluation.plots import class_colours

    assert predict_val_split(trained, tmp_path / "npy") == 0
    assert predict_val_split(trained, tmp_path / "ply", "--format", "ply") == 0
    scan = read_scan(tmp_path / "ply" / "val" / "v0.ply", label_field="label")
    labels = np.load(tmp_path / "npy" / "val" / "v0.npy")
    np.testing.assert_array_equal(scan.labels, labels)
    palette = np.round(class_colours(len(CLASSES))[:len(CLASSES)] * 255).astype(np.uint8)
    np.testing.assert_array_equal(scan.features(("red", "green", "blue")), palette[labels])


def test_a_split_is_labelled_without_its_label_files_and_two_scans_of_one_name_are_refused_in_one_line(
        trained: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "root"
    shutil.copytree(trained["root"], root)
    (root / "test" / "t0.label").unlink()  # prediction needs no labels: the scan was "bad"
    (root / "test" / "t1.npy").write_bytes((root / "test" / "t0.npy").read_bytes())
    scan = read_scan(root / "test" / "t0.npy")
    write_scan(root / "test" / "t1.ply", np.hstack([scan.xyz, scan.values]), ("x", "y", "z", *scan.columns))
    args = ["--checkpoint", trained["checkpoint"], "--dataset", "folder", "--data-root", root, "--split", "test"]
    capsys.readouterr()
    assert run(*args, "--out", tmp_path / "out") == 2  # one of the two was lost: "labelled 2 scans", 1 file
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "t1.npy' and '" in err[0] and "t1.ply', two scans of one name" in err[0]
    (root / "test" / "t1.ply").unlink()
    assert run(*args, "--out", tmp_path / "out") == 0
    assert "labelled 2 scans (0 already labelled, 0 unreadable skipped)" in capsys.readouterr().out
    assert len(np.load(tmp_path / "out" / "test" / "t0.npy")) == len(scan.xyz)


def test_a_file_without_the_feature_column_the_folder_names_is_refused_in_one_line(
        trained: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scan = read_scan(trained["root"] / "val" / "v0.ply")
    write_scan(tmp_path / "in" / "colour.ply", np.hstack([scan.xyz, scan.features(("intensity",))]),
               ("x", "y", "z", "red"))
    capsys.readouterr()
    assert run("--checkpoint", trained["checkpoint"], "--input", tmp_path / "in", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "colour.ply" in err[0] and "'intensity'" in err[0]


def test_a_folder_described_otherwise_than_the_checkpoint_is_refused_in_one_line(
        trained: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "other"
    shutil.copytree(trained["root"], other)
    (other / SPEC_FILE).write_text(yaml.safe_dump({**SPEC, "feature_scale": 1.0}))
    capsys.readouterr()
    assert run("--checkpoint", trained["checkpoint"], "--dataset", "folder", "--data-root", other, "--split", "val",
               "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "feature_scale 1.0 (not 255.0)" in err[0] and str(other) in err[0]
    assert not (tmp_path / "out").exists()


def test_an_older_checkpoint_without_the_description_needs_the_folder_and_reads_its_dataset_yaml(
        trained: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = load_checkpoint(trained["checkpoint"])
    extra = {k: v for k, v in state["extra"].items() if k != "folder"}
    older = tmp_path / "older.pt"
    model, _ = load_frozen_teacher(trained["checkpoint"], CPU.device)
    save_checkpoint(older, model, None, None, None, state["step"], state["epoch"], state["config"], extra)
    files = ["--input", trained["root"] / "val"]
    capsys.readouterr()
    assert run("--checkpoint", older, *files, "--out", tmp_path / "refused") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dataset folder --data-root" in err[0] and str(older) in err[0]
    assert run("--checkpoint", older, "--dataset", "folder", "--data-root", trained["root"], *files,
               "--out", tmp_path / "older") == 0
    assert run("--checkpoint", trained["checkpoint"], *files, "--out", tmp_path / "kept") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "older" / "v0.npy"), np.load(tmp_path / "kept" / "v0.npy"))


# ----------------------------------------------------------------------------- frames (decision 53)
def test_a_tile_model_keeps_its_frame_and_labels_a_survey_tile_as_the_same_scan_near_the_origin(
        trained_tile: dict[str, Any], tmp_path: Path) -> None:
    assert load_checkpoint(trained_tile["checkpoint"])["extra"]["folder"]["frame"] == "tile"
    assert not (trained_tile["tmp"] / "data").exists()  # no dataset.yaml tells predict the frame
    far, _ = survey_pair(tmp_path / "in")
    for fmt in ("npy", "ply"):
        assert run("--checkpoint", trained_tile["checkpoint"], "--input", tmp_path / "in", "--out", tmp_path / fmt,
                   "--format", fmt) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "npy" / "far.npy"), np.load(tmp_path / "npy" / "near.npy"))
    written = read_scan(tmp_path / "ply" / "far.ply", label_field="label").xyz
    assert np.abs(written - far).max() < 1e-3 and len(np.unique(written[:, 1])) == len(np.unique(far[:, 1]))
    np.testing.assert_array_equal(read_scan(tmp_path / "ply" / "far.ply", label_field="label").labels,
                                  np.load(tmp_path / "npy" / "far.npy"))


def test_the_ply_output_of_a_float64_survey_tile_holds_its_points_bit_for_bit(
        trained_tile: dict[str, Any], tmp_path: Path) -> None:
    far = np.random.default_rng(8).uniform([0.0, 0.0, 0.0], [20.0, 20.0, 5.0], (300, 3)) + NORTHING  # no lattice
    write_float64_ply(tmp_path / "in" / "far.ply", far, np.ones(len(far)))
    assert run("--checkpoint", trained_tile["checkpoint"], "--input", tmp_path / "in", "--out", tmp_path / "out",
               "--format", "ply") == 0
    np.testing.assert_array_equal(read_scan(tmp_path / "out" / "far.ply").xyz, far)  # coord + origin: 5e-7 m off


def test_training_and_prediction_give_a_survey_tile_the_voxels_of_the_same_scan_near_the_origin(
        tmp_path: Path) -> None:
    _, raw = survey_pair(tmp_path / "train")
    for name in ("near", "far"):
        write_labels(tmp_path / "train" / f"{name}.label", raw)
    (tmp_path / "val").mkdir()
    for suffix in (".ply", ".label"):  # a validation scan of its own: splits may not share one
        (tmp_path / "val" / f"v{suffix}").write_bytes((tmp_path / "train" / f"near{suffix}").read_bytes())
    spec = {**SPEC, "frame": "tile", "splits": {"train": ["train/*.ply"], "val": ["val/*.ply"]}}
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(spec))
    training = FolderDataset(tmp_path, "train")
    assert [p.name for p in training.scan_paths] == ["far.ply", "near.ply"]
    files = FileSource(tuple(training.scan_paths), ("far", "near"), "folder", read_folder_spec(tmp_path).description)
    pipeline = eval_pipeline("folder", 0.05)
    loaded = [source.load(i) for source in (training, files) for i in range(2)]
    np.testing.assert_array_equal(loaded[0]["origin"] - loaded[1]["origin"], NORTHING)
    voxels = [pipeline(sample, np.random.default_rng(0)) for sample in loaded]
    for sample, voxelised in zip(loaded[1:], voxels[1:]):
        np.testing.assert_array_equal(sample["coord"], loaded[0]["coord"])
        for key in ("grid_coord", "inverse", "feat"):
            np.testing.assert_array_equal(voxelised[key], voxels[0][key])


def test_a_sensor_model_refuses_a_survey_tile_in_one_line_naming_the_tile_frame(
        trained: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    survey_pair(tmp_path / "in")
    capsys.readouterr()
    assert run("--checkpoint", trained["checkpoint"], "--input", tmp_path / "in" / "far.ply",
               "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "far.ply" in err[0] and "frame 'sensor'" in err[0] and "frame: tile" in err[0]
