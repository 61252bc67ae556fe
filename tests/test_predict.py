"""``python -m train.predict`` (decision 50): labels at every point of every scan, scored as
``train.evaluation.evaluate`` scores them, in layouts the data sets' own conventions read back, written
whole, never overwritten, continued on a rerun; unreadable scans named, skipped and counted."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from test_data_loaders import random_points, write_kitti, write_nuscenes
from test_train_support import TINY_MODEL, tiny_config, tiny_data
from train.runtime.checkpoint import save_checkpoint
from train.data.labels import NUSCENES_CLASSES, SEMANTIC_KITTI_CLASSES, SEMANTIC_KITTI_LEARNING_MAP
from train.data.lidar.nuscenes import NuScenesDataset
from train.data.lidar.nuscenes_index import official_splits
from train.data.lidar.scan_files import read_scan, write_scan
from train.data.lidar.semantic_kitti import read_semantic_kitti_scan
from train.data.lidar.waymo import WaymoDataset
from train.evaluation.evaluate import evaluate
from train.engine.loop import ModelSpec
from train.evaluation.metrics import IoUAccumulator
from train.models.pointcept import pointcept_config, to_pointcept
from train.predict import main
from train.prediction.inputs import list_scan_files
from train.prediction.layouts import SEMANTIC_KITTI_INVERSE_MAP

# The nuScenes-lidarseg challenge's classes, index 1..16 (0: noise, never predicted).
CHALLENGE_CLASSES = ("barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
                     "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain",
                     "manmade", "vegetation")


def write_model(path: Path, num_classes: int, config: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """A randomly initialised tiny model saved as ``train.run`` saves ``model_final.pt``."""
    torch.manual_seed(seed)
    spec = ModelSpec("teacher-demo", num_classes, dict(TINY_MODEL))
    model = spec.build()
    save_checkpoint(path, model, None, None, None, 1, 1, config, {"model_spec": spec.__dict__, "stage": "teacher"})
    return model


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("predict")
    cfg = tiny_config(root, synthetic_scenes=6, synthetic_val_fraction=0.5)
    data = tiny_data(cfg)
    checkpoint = root / "model_final.pt"
    model = write_model(checkpoint, data.num_classes, cfg.to_dict())
    return {"root": root, "cfg": cfg, "data": data, "checkpoint": checkpoint, "model": model}


def run(*argv: Any) -> int:
    return main([str(a) for a in argv] + ["--no-progress"])


def split_args(s: dict[str, Any], out: Path, *more: Any) -> list[Any]:
    return ["--checkpoint", s["checkpoint"], "--split", "validation", "--data-root", s["cfg"].data_root,
            "--out", out, *more]


def predicted(out: Path, names: list[str]) -> list[np.ndarray]:
    return [np.load(out / f"{name}.npy") for name in names]


def validation(s: dict[str, Any]) -> WaymoDataset:
    return WaymoDataset(s["cfg"].data_root, "validation")


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_predicted_labels_of_a_labelled_split_score_what_evaluate_scores(
        synthetic: dict[str, Any], tmp_path: Path, tta: bool, batch_size: int) -> None:
    out = tmp_path / "out"
    assert run(*split_args(synthetic, out, "--batch-size", batch_size, *(["--tta"] if tta else []))) == 0
    split = validation(synthetic)
    acc = IoUAccumulator(22)
    for i, labels in enumerate(predicted(out, [split.scan_name(i) for i in range(len(split))])):
        truth = split.load(i)["segment"]
        assert labels.shape == truth.shape  # every point of the scan as read, not the voxels
        acc.update(torch.from_numpy(labels), torch.from_numpy(truth))
    data = synthetic["data"]
    expected = evaluate(synthetic["model"], data.val_views(tta), 22, torch.device("cpu"), data.collate)
    assert torch.equal(acc.state(), expected.state())  # the same confusion counts, class by class


def test_tta_changes_the_labels_of_a_model_that_is_not_rotation_invariant(synthetic: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    """The TTA test above compares against evaluate's TTA: this checks the flag does something."""
    assert run(*split_args(synthetic, tmp_path / "plain")) == 0
    assert run(*split_args(synthetic, tmp_path / "tta", "--tta")) == 0
    split = validation(synthetic)
    names = [split.scan_name(i) for i in range(len(split))]
    assert any(not np.array_equal(a, b) for a, b in zip(predicted(tmp_path / "plain", names),
                                                       predicted(tmp_path / "tta", names)))


@pytest.mark.parametrize("suffix", [".bin", ".npy", ".npz", ".ply"])
def test_a_scan_written_out_as_a_file_gets_the_labels_it_gets_in_its_split(
        synthetic: dict[str, Any], tmp_path: Path, suffix: str) -> None:
    split = validation(synthetic)
    files = tmp_path / "scans"
    for i in range(len(split)):
        sample = split.load(i)
        points = np.concatenate([sample["coord"], sample["strength"]], axis=1)
        write_scan(files / f"{split.scan_name(i)}{suffix}", points, ("x", "y", "z", "intensity"))
    assert run(*split_args(synthetic, tmp_path / "from_split")) == 0
    assert run("--checkpoint", synthetic["checkpoint"], "--input", files, "--out", tmp_path / "from_files") == 0
    names = [split.scan_name(i) for i in range(len(split))]
    for a, b in zip(predicted(tmp_path / "from_split", names), predicted(tmp_path / "from_files", names)):
        np.testing.assert_array_equal(a, b)


def test_a_wildcard_and_a_single_file_are_named_from_the_folder_before_the_wildcard(
        synthetic: dict[str, Any], tmp_path: Path) -> None:
    sample = validation(synthetic).load(0)
    points = np.concatenate([sample["coord"], sample["strength"]], axis=1)
    for name in ("a/one.bin", "b/two.bin"):
        write_scan(tmp_path / "in" / name, points)
    assert run("--checkpoint", synthetic["checkpoint"], "--input", f"{tmp_path}/in/*/*.bin",
               tmp_path / "in" / "a" / "one.bin", "--out", tmp_path / "out") == 0
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.npy")) == \
        ["a/one.npy", "b/two.npy", "one.npy"]


def test_npy_label_files_beside_npy_scans_in_a_folder_are_not_taken_for_scans(tmp_path: Path) -> None:
    points = np.random.default_rng(5).normal(size=(50, 4)).astype(np.float32)
    for stem in ("s0", "s1"):
        write_scan(tmp_path / "in" / f"{stem}.npy", points)
        np.save(tmp_path / "in" / f"{stem}_labels.npy", np.zeros(50, dtype=np.int64))
    expected = (tmp_path / "in" / "s0.npy", tmp_path / "in" / "s1.npy")
    out = tmp_path / "out"
    assert list_scan_files([str(tmp_path / "in")], out)[0] == expected
    assert list_scan_files([f"{tmp_path}/in/*.npy"], out)[0] == expected
    named = tmp_path / "in" / "s0_labels.npy"  # named on its own, a file is always read (and refused there)
    assert list_scan_files([str(named)], out)[0] == (named,)


def test_a_rerun_labels_only_what_is_missing_and_overwrites_only_when_asked(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert run(*split_args(synthetic, out, "--save-probs")) == 0
    split = validation(synthetic)
    names = [split.scan_name(i) for i in range(len(split))]
    probs = np.load(out / f"{names[0]}.probs.npy")
    assert probs.dtype == np.float16 and probs.shape == (len(split.load(0)["coord"]), 22)
    np.testing.assert_array_equal(probs.argmax(1), np.load(out / f"{names[0]}.npy"))
    (out / f"{names[1]}.npy").unlink()
    marked = out / f"{names[2]}.npy"
    np.save(marked, np.zeros(3, np.int64))  # a file the rerun must keep ...
    (out / f"{names[2]}.probs.npy").unlink()  # ... though its scan is labelled again for the missing file
    capsys.readouterr()
    assert run(*split_args(synthetic, out, "--save-probs")) == 0
    assert f"labelled 2 scans ({len(names) - 2} already labelled" in capsys.readouterr().out
    assert (out / f"{names[2]}.probs.npy").is_file()
    assert (out / f"{names[1]}.npy").is_file() and np.load(marked).shape == (3,)
    assert run(*split_args(synthetic, out, "--save-probs", "--overwrite")) == 0
    assert np.load(marked).shape == (len(split.load(2)["coord"]),)
    assert not list(out.rglob("*.tmp"))  # no temporary file left behind


def test_an_unreadable_scan_stops_the_run_in_one_line_or_is_skipped_and_counted(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sample = validation(synthetic).load(0)
    points = np.concatenate([sample["coord"], sample["strength"]], axis=1)
    for name in ("a", "c"):
        write_scan(tmp_path / "in" / f"{name}.bin", points)
    (tmp_path / "in" / "b.bin").write_bytes(b"\x00" * 10)  # not a whole float32 x4 record
    capsys.readouterr()
    args = ["--checkpoint", synthetic["checkpoint"], "--input", tmp_path / "in", "--out", tmp_path / "out"]
    assert run(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b.bin" in err[0] and "--skip-bad-scans" in err[0]
    assert (tmp_path / "out" / "a.npy").is_file()  # labelled before the bad scan: kept
    assert run(*args, "--skip-bad-scans") == 0
    captured = capsys.readouterr()
    assert "skipped b:" in captured.err and "b.bin" in captured.err
    assert "labelled 1 scans (1 already labelled, 1 unreadable skipped)" in captured.out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy", "c.npy"]
    for name in ("a", "c"):
        (tmp_path / "in" / f"{name}.bin").write_bytes(b"\x00" * 10)
    capsys.readouterr()
    assert run(*args[:-1], tmp_path / "out2", "--skip-bad-scans") == 2  # every scan bad: it exited 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "train.predict: error: no scan could be labelled: all 3 were bad (named above)")
    assert run("--checkpoint", synthetic["checkpoint"], "--input", tmp_path / "out" / "a.npy", "--out",
               tmp_path / "out") == 2
    assert "lies in --out" in capsys.readouterr().err  # named on its own, an output would be read as a scan


@pytest.mark.parametrize("fmt", ["npy", "ply"])
def test_outputs_inside_the_input_folder_are_not_read_as_scans_so_a_rerun_continues(
        synthetic: dict[str, Any], tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture) -> None:
    # the rerun was refused ("lies in --out"); a later run into another folder read the outputs of
    # the first (.probs.npy, the labelled .ply) as scans
    sample = validation(synthetic).load(0)
    points = np.concatenate([sample["coord"], sample["strength"]], axis=1)
    for name in ("a", "sub/b"):
        write_scan(tmp_path / "in" / f"{name}.ply", points)
    args = ["--checkpoint", synthetic["checkpoint"], "--input", tmp_path / "in", "--format", fmt, "--save-probs"]
    for _ in range(2):
        assert run(*args, "--out", tmp_path / "in" / "labels") == 0
    assert "labelled 0 scans (2 already labelled, 0 unreadable skipped)" in capsys.readouterr().out
    assert run(*args, "--out", tmp_path / "elsewhere") == 0
    assert "labelled 2 scans (0 already labelled" in capsys.readouterr().out
    assert sorted(p.relative_to(tmp_path / "elsewhere").as_posix() for p in (tmp_path / "elsewhere").rglob("*")
                  if p.is_file()) == sorted(f"{n}{suffix}" for n in ("a", "sub/b") for suffix in (".probs.npy", f".{fmt}"))


def test_paths_that_exist_are_read_as_they_are_though_they_hold_wildcard_characters(
        synthetic: dict[str, Any], tmp_path: Path) -> None:
    points = np.random.default_rng(5).normal(size=(50, 4)).astype(np.float32)
    folder = tmp_path / "tiles [2024]"
    for name in ("a?.npy", "b*.npy", "c[1].npy"):
        write_scan(folder / name, points)
    out = tmp_path / "out"
    every = (folder / "a?.npy", folder / "b*.npy", folder / "c[1].npy")
    assert list_scan_files([str(folder)], out) == (every, ("a?", "b*", "c[1]"))
    assert list_scan_files([str(folder / "c[1].npy")], out) == ((folder / "c[1].npy",), ("c[1]",))
    assert list_scan_files([f"{folder}/*.npy"], out)[0] == every  # the folder's [2024] is its name
    assert list_scan_files([f"{tmp_path}/tiles*/c*"], out) == ((folder / "c[1].npy",), ("tiles [2024]/c[1]",))


def test_two_scan_files_of_one_name_are_refused_with_advice_that_fits(tmp_path: Path) -> None:
    points = np.random.default_rng(5).normal(size=(50, 4)).astype(np.float32)
    for name in ("x/scan 01.ply", "x/scan 01.npy", "y/scan 01.npy"):
        write_scan(tmp_path / name, points)
    with pytest.raises(ValueError, match=r"both be labelled as 'scan 01'; rename one, or give only one of them"):
        list_scan_files([str(tmp_path / "x")], tmp_path / "out")
    with pytest.raises(ValueError, match=r"both be labelled as 'scan 01'; give their common folder instead"):
        list_scan_files([str(tmp_path / "x" / "scan 01.npy"), str(tmp_path / "y")], tmp_path / "out")


@pytest.mark.parametrize("fmt", ["npy", "ply"])
def test_scans_of_no_one_or_a_few_points_and_one_with_a_stray_point_10_km_away_get_every_point_labelled(
        synthetic: dict[str, Any], tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture) -> None:
    # decision 54: these ended the run with a traceback ("has no points to grid-sample", "cannot pool
    # a level of depth 0", "grid_coord spans ... voxels (depth 17 > 16)")
    sample = validation(synthetic).load(0)
    points = np.concatenate([sample["coord"], sample["strength"]], axis=1)
    tiny = points[:1] + np.float32([0.1, 0.2, 0.0, 0.0]) * np.arange(5)[:, None]  # 0.9 m across
    scans = {"empty": points[:0], "one": points[:1], "tiny": tiny,
             "stray": np.vstack([points, [[10_000.0, 0.0, 0.0, 0.5]]])}
    for name, scan in scans.items():
        write_scan(tmp_path / "in" / f"{name}.ply", scan.astype(np.float32))
    capsys.readouterr()
    assert run("--checkpoint", synthetic["checkpoint"], "--input", tmp_path / "in", "--out", tmp_path / "out",
               "--format", fmt, "--save-probs", "--batch-size", 2) == 0
    assert "labelled 4 scans (0 already labelled, 0 unreadable skipped)" in capsys.readouterr().out
    for name, scan in scans.items():
        labels = (np.load(tmp_path / "out" / f"{name}.npy") if fmt == "npy"
                  else read_scan(tmp_path / "out" / f"{name}.ply", "label").labels)
        probs = np.load(tmp_path / "out" / f"{name}.probs.npy")
        assert labels.shape == (len(scan),) and probs.shape == (len(scan), 22), name
        np.testing.assert_array_equal(labels, probs.argmax(1))


def test_the_ply_output_holds_the_points_labels_and_palette_colours(synthetic: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    from train.evaluation.plots import class_colours

    assert run(*split_args(synthetic, tmp_path / "npy")) == 0
    assert run(*split_args(synthetic, tmp_path / "ply", "--format", "ply")) == 0
    split = validation(synthetic)
    name = split.scan_name(0)
    scan = read_scan(tmp_path / "ply" / f"{name}.ply", label_field="label")
    labels = np.load(tmp_path / "npy" / f"{name}.npy")
    np.testing.assert_array_equal(scan.labels, labels)
    np.testing.assert_array_equal(scan.xyz, split.load(0)["coord"])
    with open(tmp_path / "ply" / f"{name}.ply", "rb") as f:  # sensor-centred float32 points stay float32
        assert b"property float x" in f.read(400)
    palette = np.round(class_colours(22)[:22] * 255).astype(np.uint8)
    np.testing.assert_array_equal(scan.features(("red", "green", "blue")), palette[labels])


def test_the_ply_output_of_a_las_tile_lies_on_its_source_points_in_the_file_frame(synthetic: dict[str, Any],
                                                                                   tmp_path: Path) -> None:
    """A LAS tile at offset (500000, 5000000, 100): the model reads it from its header offset, and the
    labelled points are written where they lie in the file (to the file's 1 mm scale), not near 0."""
    laspy = pytest.importorskip("laspy")
    rng = np.random.default_rng(11)
    header = laspy.LasHeader(point_format=1, version="1.4")
    header.scales, header.offsets = np.full(3, 0.001), np.array([500_000.0, 5_000_000.0, 100.0])
    las = laspy.LasData(header)
    local = rng.uniform([-20.0, -20.0, -2.0], [20.0, 20.0, 3.0], (300, 3))
    las.x, las.y, las.z = (local + header.offsets).T
    las.intensity = rng.integers(0, 255, 300)
    (tmp_path / "in").mkdir()
    las.write(str(tmp_path / "in" / "tile.las"))
    assert run("--checkpoint", synthetic["checkpoint"], "--input", tmp_path / "in", "--out", tmp_path / "out",
               "--format", "ply") == 0
    source = read_scan(tmp_path / "in" / "tile.las")
    written = read_scan(tmp_path / "out" / "tile.ply", label_field="label")
    np.testing.assert_array_equal(np.round(written.xyz / 0.001), np.round(source.xyz / 0.001))
    assert np.abs(written.xyz - source.xyz).max() < 1e-6


def kitti_root(root: Path) -> None:
    rng = np.random.default_rng(3)
    for seq, frame in ((8, 0), (8, 1), (11, 0), (12, 5)):  # 08: val (labelled), 11 and 12: test
        raw = rng.choice(sorted(SEMANTIC_KITTI_LEARNING_MAP), 300) if seq == 8 else None
        write_kitti(root, seq, frame, random_points(rng, 300, 4) * [0.3, 0.3, 0.05, 0.02], raw)


def test_semantic_kitti_predictions_read_back_through_the_learning_map_as_the_predicted_classes(
        tmp_path: Path) -> None:
    kitti_root(tmp_path / "kitti")
    checkpoint = tmp_path / "kitti.pt"
    write_model(checkpoint, len(SEMANTIC_KITTI_CLASSES), {"dataset": "semantic_kitti", "grid_size": 0.3})
    common = ["--checkpoint", checkpoint, "--data-root", tmp_path / "kitti", "--split", "test"]
    assert run(*common, "--out", tmp_path / "npy") == 0
    assert run(*common, "--out", tmp_path / "sub", "--format", "semantic_kitti") == 0
    files = sorted((tmp_path / "sub").rglob("*.label"))
    assert [p.relative_to(tmp_path / "sub").as_posix() for p in files] == [
        "sequences/11/predictions/000000.label", "sequences/12/predictions/000005.label"]
    for path in files:
        seq, frame = path.parent.parent.name, path.stem
        scan = read_semantic_kitti_scan(tmp_path / "kitti" / "sequences" / seq / "velodyne" / f"{frame}.bin", path)
        np.testing.assert_array_equal(scan["segment"], np.load(tmp_path / "npy" / seq / f"{frame}.npy"))
    # the same scans given as files under the sequences folder land in the same places
    assert run("--checkpoint", checkpoint, "--input", f"{tmp_path}/kitti/sequences/1*/velodyne/*.bin",
               "--out", tmp_path / "files", "--format", "semantic_kitti") == 0
    for path in files:
        assert (tmp_path / "files" / path.relative_to(tmp_path / "sub")).read_bytes() == path.read_bytes()
    # a file given alone has no sequence in its name: refused before any scan is read
    assert run("--checkpoint", checkpoint, "--input", tmp_path / "kitti/sequences/11/velodyne/000000.bin",
               "--out", tmp_path / "alone", "--format", "semantic_kitti") == 2
    assert not (tmp_path / "alone").exists()


def test_the_inverse_learning_map_sends_each_class_to_a_raw_id_that_maps_back_to_it() -> None:
    """What the benchmark's scoring needs (it maps the written ids through the learning map): a
    raw id that is unlabelled (0) or of another class in any entry fails this."""
    assert [SEMANTIC_KITTI_LEARNING_MAP[raw] for raw in SEMANTIC_KITTI_INVERSE_MAP] == \
        list(range(len(SEMANTIC_KITTI_CLASSES)))


def test_nuscenes_test_split_submission_holds_challenge_indices_and_the_meta_block(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    scenes = official_splits()["test"][:2]
    scans = [{"token": f"tok{i}", "scene": scene, "points": random_points(rng, 200, 5) * [0.3, 0.3, 0.05, 1, 1]}
             for i, scene in enumerate(scenes)]
    write_nuscenes(tmp_path / "nus", "v1.0-test", scans, labelled=False, more_scenes=official_splits()["test"])
    checkpoint = tmp_path / "nus.pt"
    write_model(checkpoint, len(NUSCENES_CLASSES), {"dataset": "nuscenes", "grid_size": 0.3})
    common = ["--checkpoint", checkpoint, "--data-root", tmp_path / "nus", "--split", "test",
              "--nuscenes-version", "v1.0-test"]
    assert run(*common, "--out", tmp_path / "npy") == 0
    assert run(*common, "--out", tmp_path / "sub", "--format", "nuscenes") == 0
    assert json.loads((tmp_path / "sub" / "test" / "submission.json").read_text()) == {"meta": {
        "use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": False}}
    assert tuple(NUSCENES_CLASSES) == CHALLENGE_CLASSES  # so challenge index = our class + 1
    dataset = NuScenesDataset(tmp_path / "nus", "test", version="v1.0-test")
    for i in range(len(dataset)):
        token = dataset.scan_name(i)
        written = np.fromfile(tmp_path / "sub" / "lidarseg" / "test" / f"{token}_lidarseg.bin", dtype=np.uint8)
        assert len(written) == len(dataset.load(i)["coord"]) and written.min() >= 1
        np.testing.assert_array_equal(written.astype(np.int64) - 1, np.load(tmp_path / "npy" / f"{token}.npy"))


def test_a_pointcept_checkpoint_needs_its_data_set_and_labels_as_the_same_weights_saved_by_train_run(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A Pointcept experiment folder (``config.py`` beside ``model/model_best.pth``) holding the
    weights of a model built with upstream's unpooling CPE labels each point as that model does."""
    native = tmp_path / "model_final.pt"
    torch.manual_seed(1)
    spec = ModelSpec("teacher-demo", 22, {**TINY_MODEL, "upstream_unpool_cpe": True})
    model = spec.build()
    save_checkpoint(native, model, None, None, None, 1, 1, synthetic["cfg"].to_dict(),
                    {"model_spec": spec.__dict__, "stage": "teacher"})
    experiment = tmp_path / "experiment"
    (experiment / "model").mkdir(parents=True)
    (experiment / "config.py").write_text(f"model = {pointcept_config(model)!r}\n")
    pointcept = experiment / "model" / "model_best.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in to_pointcept(model).items()}}, pointcept)
    data_root = synthetic["cfg"].data_root
    args = ["--checkpoint", pointcept, "--split", "validation", "--data-root", data_root,
            "--grid-size", synthetic["cfg"].grid_size, "--out", tmp_path / "pc"]
    capsys.readouterr()
    assert run(*args) == 2
    assert "pass --dataset" in capsys.readouterr().err
    assert run(*args, "--dataset", "synthetic", "--preset", "teacher-demo") == 0
    assert run("--checkpoint", native, "--split", "validation", "--data-root", data_root,
               "--out", tmp_path / "native") == 0
    split = validation(synthetic)
    names = [split.scan_name(i) for i in range(len(split))]
    for a, b in zip(predicted(tmp_path / "pc", names), predicted(tmp_path / "native", names)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("extra", "message"), [
    (["--dataset", "semantic_kitti"], "was trained on synthetic"),
    (["--format", "semantic_kitti"], "needs a model of semantic_kitti's classes"),
    (["--format", "nuscenes"], "needs a model of nuscenes's classes"),
])
def test_inputs_and_layouts_the_checkpoint_cannot_match_are_refused_in_one_line(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str],
        message: str) -> None:
    capsys.readouterr()
    assert run(*split_args(synthetic, tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_file_without_the_intensity_column_is_refused_naming_it(synthetic: dict[str, Any], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    np.save(tmp_path / "xyz.npy", np.zeros((10, 3), np.float32))
    capsys.readouterr()
    assert run("--checkpoint", synthetic["checkpoint"], "--input", tmp_path / "xyz.npy", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "xyz.npy" in err[0] and "intensity" in err[0], err


def test_loader_workers_and_a_checkpoint_last_give_the_labels_of_model_final_in_one_process(
        synthetic: dict[str, Any], tmp_path: Path) -> None:
    """Scans read, voxelised and planned in two worker processes, the weights read from a full
    training checkpoint (optimiser and random states beside them): the same labels."""
    last = tmp_path / "checkpoint_last.pt"
    model = synthetic["model"]
    optimizer = torch.optim.AdamW(model.parameters())
    spec = ModelSpec("teacher-demo", 22, dict(TINY_MODEL))
    save_checkpoint(last, model, optimizer, None, None, 7, 1, synthetic["cfg"].to_dict(),
                    {"model_spec": spec.__dict__, "stage": "teacher"})
    assert run(*split_args(synthetic, tmp_path / "one")) == 0
    assert run("--checkpoint", last, "--split", "validation", "--data-root", synthetic["cfg"].data_root,
               "--out", tmp_path / "workers", "--num-workers", 2, "--batch-size", 2) == 0
    split = validation(synthetic)
    names = [split.scan_name(i) for i in range(len(split))]
    for a, b in zip(predicted(tmp_path / "one", names), predicted(tmp_path / "workers", names)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_labels_agree_with_the_cpu_in_float32_and_nearly_under_amp(synthetic: dict[str, Any],
                                                                              tmp_path: Path) -> None:
    """The CUDA path (pinned copies on a side stream, AMP): float32 labels as on the CPU up to the
    order of GPU sums (>= 99.9 % of points); float16 AMP on >= 99 % of them."""
    assert run(*split_args(synthetic, tmp_path / "cpu", "--device", "cpu")) == 0
    assert run(*split_args(synthetic, tmp_path / "fp32", "--device", "cuda", "--no-amp", "--batch-size", 2)) == 0
    assert run(*split_args(synthetic, tmp_path / "amp", "--device", "cuda", "--batch-size", 2)) == 0
    split = validation(synthetic)
    names = [split.scan_name(i) for i in range(len(split))]
    cpu = np.concatenate(predicted(tmp_path / "cpu", names))
    assert (np.concatenate(predicted(tmp_path / "fp32", names)) == cpu).mean() >= 0.999
    assert (np.concatenate(predicted(tmp_path / "amp", names)) == cpu).mean() >= 0.99


def test_progress_off_a_terminal_is_plain_lines(synthetic: dict[str, Any], tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert main([str(a) for a in split_args(synthetic, tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and f"predict {len(validation(synthetic))}/{len(validation(synthetic))}" in err
