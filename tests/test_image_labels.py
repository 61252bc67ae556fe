"""``python -m train.image_labels`` (decision 60): labels equal to an independent per-point
computation, the depth test and the camera rules on a ray-cast scene (tests/image_scene.py), the
class map, every refusal in one line naming the file, and the output folder read back as a scan
folder (``--folder-split``)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_scene import CLASSES, SKY, SceneDataset, label_counts, make_camera, write_scene
from train import image_labels
from train.data.cameras.camera import checked_camera
from train.data.lidar.folder import FolderDataset
from train.data.lidar.image_label_files import read_image_labels
from train.data.cameras.image_predictions import (ClassMap, FilePrediction, ImagePredictionError, read_class_map,
                                                  read_prediction)
from train.data.cameras.image_projection import DEFAULT_DEPTH_TEST, DepthTest, hidden_points, project_scan

ROOT = Path(__file__).resolve().parents[1]
K = len(CLASSES)
SKY_MAP = {**{i: i for i in range(K)}, SKY: "ignore"}


def _scene(tmp_path: Path, **kw) -> tuple[SceneDataset, dict[str, np.ndarray]]:
    return write_scene(tmp_path / "root", tmp_path / "pred", **kw)


def _class_map_file(tmp_path: Path, table: dict) -> Path:
    path = tmp_path / "class_map.json"
    path.write_text(json.dumps({str(k): v for k, v in table.items()}))
    return path


def _run(tmp_path: Path, monkeypatch, *extra: str, split: str = "training", out: str = "out") -> int:
    """``main`` on the scene under tmp_path (the CLI's data set opened as :class:`SceneDataset`)."""
    import train.prediction.inputs as inputs

    monkeypatch.setattr(inputs, "open_split", lambda dataset, root, split, version, folder: SceneDataset(root, split))
    return image_labels.main(["--dataset", "synthetic", "--data-root", str(tmp_path / "root"), "--split", split,
                              "--predictions", str(tmp_path / "pred"), "--out", str(tmp_path / out), *extra])


def _random_predictions(dataset: SceneDataset, predictions: Path, kind: str) -> None:
    """Seeded random ids (``.png`` or ``.npy``) or probabilities in place of the scene's
    predictions: every pixel differs from its neighbours, so a pixel off by one shows."""
    rng = np.random.default_rng(7)
    for i in range(len(dataset)):
        for camera in dataset.cameras(i):
            png = predictions / camera.image
            png.unlink()
            ids = rng.integers(0, K, (camera.height, camera.width), dtype=np.uint8)
            if kind == "probabilities":
                np.save(png.with_suffix(".npy"), rng.dirichlet(np.ones(K), ids.shape).astype(np.float32))
            elif kind == "npy ids":
                np.save(png.with_suffix(".npy"), ids.astype(np.int32))
            else:
                Image.fromarray(ids).save(png)


def _brute_force(xyz: np.ndarray, cameras, predictions: Path, kind: str) -> np.ndarray:
    """Per point, per camera, in plain Python: the pixel, the automatic block's z-buffer, the
    1/depth-weighted probabilities; (n, K) with NaN rows for unseen points."""
    total = [[0.0] * K for _ in xyz]
    for camera in cameras:
        k, t = camera.intrinsics, camera.scan_to_camera
        pred = (np.asarray(Image.open(predictions / camera.image)) if kind == "png ids"
                else np.load((predictions / camera.image).with_suffix(".npy")))
        seen = []
        for i, p in enumerate(xyz):
            x, y, z = (sum(t[r][c] * p[c] for c in range(3)) + t[r][3] for r in range(3))
            if z <= 1.0:
                continue
            u = k[0][0] * x / z + k[0][1] * y / z + k[0][2]
            v = k[1][1] * y / z + k[1][2]
            col, row = math.floor(u + 0.5), math.floor(v + 0.5)
            if 0 <= col < camera.width and 0 <= row < camera.height:
                seen.append((i, row, col, z))
        rows, cols = [s[1] for s in seen], [s[2] for s in seen]
        area = (max(rows) - min(rows) + 1) * (max(cols) - min(cols) + 1)
        block = max(1, math.ceil(math.sqrt(area / len(seen))))
        nearest: dict[tuple[int, int], float] = {}
        for _, row, col, z in seen:
            key = (row // block, col // block)
            nearest[key] = min(nearest.get(key, math.inf), z)
        for i, row, col, z in seen:
            if z > nearest[(row // block, col // block)] * 1.1 + 1.0:
                continue
            probs = pred[row, col] if kind == "probabilities" else [float(c == pred[row, col]) for c in range(K)]
            for c in range(K):
                total[i][c] += float(probs[c]) / z
    out = np.array(total)
    sums = out.sum(axis=1, keepdims=True)
    return np.where(sums > 0, out / np.where(sums > 0, sums, 1), np.nan)


@pytest.mark.parametrize("kind", ["png ids", "npy ids", "probabilities"])
def test_labels_and_probabilities_equal_a_brute_force_projection(tmp_path, monkeypatch, kind) -> None:
    dataset, _ = _scene(tmp_path, beams=8, azimuths=120)
    _random_predictions(dataset, tmp_path / "pred", kind)
    assert _run(tmp_path, monkeypatch, "--probs") == 0
    xyz = dataset.load(0)["coord"].astype(np.float64)
    expected = _brute_force(xyz, dataset.cameras(0), tmp_path / "pred", kind)
    got = read_image_labels(tmp_path / "out", dataset.scan_name(0), len(xyz))
    seen = ~np.isnan(expected[:, 0])
    assert 100 < seen.sum() < len(xyz)
    assert got["labels"].dtype == np.int16 and got["probabilities"].dtype == np.float16
    np.testing.assert_array_equal(got["labels"], np.where(seen, np.argmax(np.nan_to_num(expected), axis=1), -1))
    np.testing.assert_allclose(got["probabilities"].astype(np.float64), expected, atol=1e-3)  # float16


def test_depth_test_removes_most_labels_of_points_the_camera_sees_behind_a_nearer_object(tmp_path) -> None:
    dataset, truth = _scene(tmp_path, beams=32, azimuths=1440)
    correct_without, wrong_without = label_counts(dataset, truth, tmp_path / "out", "average", None)
    correct, wrong = label_counts(dataset, truth, tmp_path / "out", "average", DEFAULT_DEPTH_TEST)
    assert wrong_without > 2.5 * wrong  # the scene's camera sees its poles and cars in front of what the LiDAR hit
    assert correct > 0.95 * correct_without


def test_hidden_points_compare_each_depth_with_its_blocks_nearest() -> None:
    test = DepthTest(block=2, relative=0.1, absolute=1.0)
    rows, cols = np.array([0, 1, 1, 0, 5]), np.array([0, 1, 0, 3, 5])
    depth = np.array([5.0, 6.4, 6.6, 30.0, 9.0])  # block (0, 0): nearest 5 -> hidden beyond 6.5
    np.testing.assert_array_equal(hidden_points(rows, cols, depth, 8, test), [False, False, True, False, False])


def _prediction(ids=None, probs=None, width=4, height=3) -> FilePrediction:
    channels = np.eye(K, dtype=np.float32) if probs is not None else None
    return FilePrediction(Path("p"), probs, ids, channels, K, None, None, width, height)


@pytest.mark.parametrize("rule, label", [("average", 1), ("nearest", 0), ("first", 2)])
def test_a_point_two_cameras_see_takes_the_rules_label(rule, label) -> None:
    far = make_camera("FRONT", "a.png")
    near_pose = far.scan_to_camera.copy()
    near_pose[2, 3] -= 4.0  # the same axis, 4 m nearer the point
    near = checked_camera("NEAR", "b.png", far.width, far.height, far.intrinsics, near_pose, "test")
    xyz = (np.linalg.inv(far.scan_to_camera) @ [0.0, 0.0, 8.0, 1.0])[None, :3]  # image centre, depth 8
    far_probs, near_probs = np.zeros((far.height, far.width, K)), np.zeros((far.height, far.width, K))
    far_probs[..., 1], far_probs[..., 2] = 0.4, 0.6
    near_probs[..., 0], near_probs[..., 1] = 0.55, 0.45  # 1/4 (0.55, 0.45, 0) + 1/8 (0, 0.4, 0.6): class 1 most
    preds = {"FRONT": _prediction(probs=far_probs.astype(np.float32), width=far.width, height=far.height),
             "NEAR": _prediction(probs=near_probs.astype(np.float32), width=far.width, height=far.height)}
    out = project_scan(xyz, [far, near], lambda c: preds[c.name], K, rule, depth_test=None)
    assert out.labels.tolist() == [label] and out.seen_by.tolist() == [2]
    if rule == "average":
        np.testing.assert_allclose(out.probabilities[0], np.array([0.1375, 0.1625, 0.075, 0]) / 0.375, rtol=1e-6)


def test_the_weighted_average_beats_the_other_rules_on_noisy_probabilities(tmp_path) -> None:
    dataset, truth = _scene(tmp_path, probabilities=True)
    wrong = {rule: label_counts(dataset, truth, tmp_path / rule, rule, DEFAULT_DEPTH_TEST)[1]
             for rule in ("average", "nearest", "first")}
    assert wrong["average"] < 0.95 * min(wrong["nearest"], wrong["first"])


def test_class_map_sums_probability_channels_into_train_classes(tmp_path) -> None:
    class_map = read_class_map(_class_map_file(tmp_path, {0: 1, 1: 1, 2: "ignore", 3: 0}), 2)
    np.testing.assert_array_equal(class_map.lookup(np.array([3, 0, 2]), Path("x")), [0, 1, -1])
    np.testing.assert_array_equal(class_map.matrix(4, Path("x")), [[0, 1], [0, 1], [0, 0], [1, 0]])
    yaml_map = tmp_path / "map.yaml"
    yaml_map.write_text("0: 1\n1: 1\n2: ignore\n3: 0\n")
    assert read_class_map(yaml_map, 2) == class_map


def test_a_probability_map_and_its_argmax_ids_label_the_same_points_when_the_top_class_is_ignored(
        tmp_path, monkeypatch) -> None:
    """A pixel whose most probable 2D class the class map ignores (sky, the ego vehicle) sees no point,
    whichever form the prediction has: the probability map labels exactly the points its argmax PNG
    labels, with the same classes; half the pixels put 0.98 on the ignored class (as in
    (0.98, 0.012, 0.008)), which the kept channels alone would have called confident."""
    dataset, _ = _scene(tmp_path, beams=8, azimuths=180)
    ignored = K  # 2D id K: not a train class
    class_map = _class_map_file(tmp_path, {**{i: i for i in range(K)}, ignored: "ignore"})
    rng = np.random.default_rng(4)
    maps = {}
    for camera in dataset.cameras(0):
        probs = rng.dirichlet(np.ones(K + 1), (camera.height, camera.width)).astype(np.float32)
        sky = rng.random((camera.height, camera.width)) < 0.5
        probs[sky] = 0.02 * probs[sky] / probs[sky].sum(axis=-1, keepdims=True)
        probs[sky, ignored] += 0.98
        maps[camera.image] = probs
        Image.fromarray(probs.argmax(axis=-1).astype(np.uint8)).save(tmp_path / "pred" / camera.image)
    common = ("--class-map", str(class_map), "--camera-rule", "nearest")
    assert _run(tmp_path, monkeypatch, *common, out="ids") == 0
    for image, probs in maps.items():
        (tmp_path / "pred" / image).unlink()
        np.save((tmp_path / "pred" / image).with_suffix(".npy"), probs)
    assert _run(tmp_path, monkeypatch, *common, out="probs") == 0
    n = len(dataset.load(0)["coord"])
    ids, from_probs = (read_image_labels(tmp_path / out, dataset.scan_name(0), n)["labels"] for out in ("ids", "probs"))
    assert 0 < (ids >= 0).sum() < n
    np.testing.assert_array_equal(from_probs, ids)


def test_a_labelled_kitti_sequence_without_its_lidar_label_files_is_labelled_from_its_camera(tmp_path) -> None:
    """The KITTI camera frame of sequence 00 (training split) as the odometry download holds it:
    images, calibration and velodyne scans, no labels/ folder; image_labels never reads LiDAR labels."""
    import shutil

    root = tmp_path / "kitti"
    shutil.copytree(ROOT / "tests" / "fixtures" / "real" / "semantic_kitti_camera", root)
    prediction = tmp_path / "pred" / "sequences" / "00" / "image_2" / "000000.png"
    prediction.parent.mkdir(parents=True)
    Image.fromarray(np.full((370, 1224), 3, np.uint8)).save(prediction)
    assert image_labels.main(["--dataset", "semantic_kitti", "--data-root", str(root), "--split", "train",
                              "--predictions", str(tmp_path / "pred"), "--out", str(tmp_path / "out")]) == 0
    labels = read_image_labels(tmp_path / "out", "00/000000", 800)["labels"]
    assert (labels == 3).sum() > 700 and set(np.unique(labels)) <= {-1, 3}


@pytest.mark.parametrize("table, needle", [({0: 5}, "'0': 5"), ({"a": 1}, "'a'"), ([1, 2], "must map")])
def test_a_class_map_that_cannot_be_used_is_one_line_naming_it(tmp_path, table, needle) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(json.dumps({str(k): v for k, v in table.items()} if isinstance(table, dict) else table))
    with pytest.raises(ValueError, match="class map .*map.yaml") as err:
        read_class_map(path, 4)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_ids_outside_the_class_map_or_the_train_ids_are_refused() -> None:
    with pytest.raises(ImagePredictionError, match=r"p\.png: id\(s\) 4, 255 are not in the train ids 0..3"):
        ClassMap(4).lookup(np.array([[0, 4], [255, 1]]), Path("p.png"))
    with pytest.raises(ImagePredictionError, match="not in the class map"):
        ClassMap(4, {0: 0}).lookup(np.array([1]), Path("p.png"))


def test_probabilities_without_a_class_map_need_the_data_sets_class_count(tmp_path) -> None:
    dataset, _ = _scene(tmp_path, beams=8, azimuths=60)
    camera = dataset.cameras(0)[0]
    (tmp_path / "pred" / camera.image).unlink()
    np.save((tmp_path / "pred" / camera.image).with_suffix(".npy"), np.ones((120, 160, K + 1), np.float32))
    with pytest.raises(ImagePredictionError, match=r"FRONT.npy: H x W x K probabilities must be floats with K = 4 "
                       r"\(the data set's classes; or give --class-map\), got float32 \(120, 160, 5\)"):
        read_prediction(camera, tmp_path / "root", tmp_path / "pred", None, ClassMap(K))


def test_cli_writes_labels_probabilities_features_and_provenance(tmp_path, monkeypatch) -> None:
    dataset, truth = _scene(tmp_path, beams=8, azimuths=180)
    features = tmp_path / "features"
    for camera in dataset.cameras(0):  # a 1/4-size map, linear in the pixel coordinates: bilinear is exact inside
        y, x = np.meshgrid(np.arange(30.0), np.arange(40.0), indexing="ij")
        (features / camera.image).parent.mkdir(parents=True, exist_ok=True)
        np.save((features / camera.image).with_suffix(".npy"), np.stack([x, y, x + 2 * y], -1).astype(np.float32))
    class_map = _class_map_file(tmp_path, SKY_MAP)
    assert _run(tmp_path, monkeypatch, "--probs", "--features", str(features), "--class-map", str(class_map)) == 0
    name = dataset.scan_name(0)
    xyz = dataset.load(0)["coord"].astype(np.float64)
    got = read_image_labels(tmp_path / "out", name, len(xyz))
    seen = got["labels"] >= 0
    assert got["features"].dtype == np.float16 and got["features"].shape == (len(xyz), 3)
    assert np.isnan(got["probabilities"][~seen]).all() and np.isnan(got["features"][~seen]).all()
    assert (got["labels"][seen] == truth[name][seen]).mean() > 0.9
    feats = got["features"][seen].astype(np.float64)
    np.testing.assert_allclose(feats[:, 2], feats[:, 0] + 2 * feats[:, 1], atol=0.1)
    summary = json.loads((tmp_path / "out" / "image_labels.json").read_text())["splits"]["training"]
    assert summary["counts"]["seen_points"] == int(seen.sum()) and summary["classes"] == list(CLASSES)
    assert summary["class_map"]["255"] == "ignore" and summary["feature_channels"] == 3
    assert summary["depth_test"] == {"block": None, "relative": 0.1, "absolute": 1.0}


def test_scans_no_camera_has_get_feature_rows_that_say_unseen_so_the_camera_teacher_reads_them(
        tmp_path, monkeypatch) -> None:
    """The first and the last of three scans have no cameras: each gets a features file of NaN rows
    with the run's channel count (the first before any feature map has told it), and the camera
    teacher with L_topo's features reads every scan."""
    from train.data.cameras.camera_teacher import open_camera_teacher

    dataset, _ = _scene(tmp_path, scans=3, beams=8, azimuths=90)
    features = tmp_path / "features"
    for i in range(len(dataset)):
        for camera in dataset.cameras(i):
            (features / camera.image).parent.mkdir(parents=True, exist_ok=True)
            np.save((features / camera.image).with_suffix(".npy"), np.ones((30, 40, 5), np.float32))
    for i in (0, 2):
        (tmp_path / "root" / "training" / dataset.scan_name(i) / "cameras.json").unlink()
    class_map = _class_map_file(tmp_path, SKY_MAP)
    assert _run(tmp_path, monkeypatch, "--probs", "--features", str(features), "--class-map", str(class_map)) == 0
    teacher = open_camera_teacher(tmp_path / "out", K, features=True)
    for i in range(3):
        sample = teacher.attach(dataset.load(i))
        rows = sample["camera_features"]
        assert rows.shape == (len(sample["coord"]), 5)
        assert np.isnan(rows).all() if i != 1 else (~np.isnan(rows[:, 0])).sum() > 0


def test_a_scan_folder_with_cameras_beside_its_scans_is_labelled_as_the_same_scene_in_the_frame_layout(
        tmp_path, monkeypatch) -> None:
    """One's own fleet as a scan folder: ``train/s0.npy`` with ``train/s0/cameras.json`` (image paths
    relative to the root) gets the labels the same scan and cameras get in the preprocessed frame
    layout; before, a scan folder read no cameras and --dataset folder was refused."""
    import shutil

    import yaml

    dataset, _ = _scene(tmp_path, beams=8, azimuths=180)
    class_map = _class_map_file(tmp_path, SKY_MAP)
    assert _run(tmp_path, monkeypatch, "--class-map", str(class_map), out="frames") == 0
    monkeypatch.undo()  # the command opens the scan folder itself
    root, name = tmp_path / "root", dataset.scan_name(0)
    for split in ("train", "val"):
        (root / split).mkdir()
        shutil.copy(root / "training" / f"{name}.npy", root / split / "s0.npy")
    shutil.copytree(root / "training" / name, root / "train" / "s0")  # cameras.json; the images stay where they are
    (root / "dataset.yaml").write_text(yaml.safe_dump({
        "classes": list(CLASSES), "label_map": {i: i for i in range(K)}, "labels": {"file": "{stem}.label"},
        "splits": {"train": ["train/*.npy"], "val": ["val/*.npy"]}, "feature": None}))
    assert image_labels.main(["--dataset", "folder", "--data-root", str(root), "--split", "train", "--class-map",
                              str(class_map), "--predictions", str(tmp_path / "pred"), "--out",
                              str(tmp_path / "folder")]) == 0
    n = len(dataset.load(0)["coord"])
    frames = read_image_labels(tmp_path / "frames", name, n)["labels"]
    folder = read_image_labels(tmp_path / "folder", "train/s0", n)["labels"]
    assert (frames >= 0).sum() > n // 10
    np.testing.assert_array_equal(folder, frames)


def test_features_sample_the_map_at_scaled_pixel_coordinates() -> None:
    fmap = np.arange(12.0, dtype=np.float32).reshape(3, 4, 1)  # value = 4 row + col
    pred = FilePrediction(Path("p"), None, None, None, K, fmap, Path("f"), 8, 6)
    uv = np.array([[1.5, 1.5], [0.0, 0.0], [7.0, 5.0]])  # image (u, v) -> map (0.5, 0.5), clamped corners
    np.testing.assert_allclose(pred.features(uv)[:, 0], [2.5, 0.0, 11.0])


def _one_line_refusal(capsys, needle: str) -> None:
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err, err


@pytest.mark.parametrize("breakage, needle", [
    ("no prediction", "FRONT.npy or"),
    ("no image", "image file"),
    ("small prediction", "has shape (60, 80)"),
    ("image size", "is 80 x 60 pixels; its calibration"),
    ("channels", "FRONT.npy: id(s) 4 are not in the class map"),
    ("negative", "FRONT.npy: probabilities must be finite and >= 0"),
    ("not a rotation", "cameras.json: camera 'FRONT' extrinsic rotation is not a rotation"),
    ("feature width", "channels; the feature maps before it had"),
])
def test_bad_input_is_one_line_naming_the_file_and_skip_bad_scans_counts_the_scan(tmp_path, monkeypatch, capsys,
                                                                                  breakage, needle) -> None:
    dataset, _ = _scene(tmp_path, beams=8, azimuths=60, scans=2)
    camera = dataset.cameras(1)[0]
    image, pred = tmp_path / "root" / camera.image, tmp_path / "pred" / camera.image
    extra = ["--class-map", str(_class_map_file(tmp_path, SKY_MAP))]
    if breakage == "no prediction":
        pred.unlink()
    elif breakage == "no image":
        image.unlink()
    elif breakage in ("small prediction", "image size"):
        Image.fromarray(np.zeros((60, 80), np.uint8)).save(pred if breakage == "small prediction" else image)
    elif breakage in ("channels", "negative"):
        pred.unlink()
        probs = np.zeros((camera.height, camera.width, K if breakage == "negative" else K + 1), np.float32)
        probs[..., 0] = -1.0 if breakage == "negative" else 1.0
        np.save(pred.with_suffix(".npy"), probs)
    elif breakage == "not a rotation":
        frame = tmp_path / "root" / "training" / dataset.scan_name(1)
        entries = json.loads((frame / "cameras.json").read_text())
        entries["cameras"][0]["scan_to_camera"][0][1] *= 1.1  # -1: the rotation's first row stretched
        (frame / "cameras.json").write_text(json.dumps(entries))
    else:
        for i, width in ((0, 3), (1, 2)):
            for cam in dataset.cameras(i):
                path = (tmp_path / "features" / cam.image).with_suffix(".npy")
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, np.zeros((4, 4, width), np.float32))
        extra += ["--features", str(tmp_path / "features")]
    assert _run(tmp_path, monkeypatch, *extra) == 2
    _one_line_refusal(capsys, needle)
    assert _run(tmp_path, monkeypatch, *extra, "--skip-bad-scans", out="skipped") == 0
    summary = json.loads((tmp_path / "skipped" / "image_labels.json").read_text())["splits"]["training"]
    assert [name for name, _ in summary["counts"]["skipped_scans"]] == [dataset.scan_name(1)]
    assert not (tmp_path / "skipped" / f"{dataset.scan_name(1)}.npy").exists()
    assert (tmp_path / "skipped" / f"{dataset.scan_name(0)}.npy").exists()


def test_ids_outside_the_train_ids_stop_the_run_and_a_run_of_only_bad_scans_fails(tmp_path, monkeypatch,
                                                                                  capsys) -> None:
    dataset, _ = _scene(tmp_path, beams=8, azimuths=60)
    assert _run(tmp_path, monkeypatch) == 2  # the sky's id 255 without a class map
    _one_line_refusal(capsys, f"{tmp_path / 'pred' / dataset.cameras(0)[0].image}: id(s) 255 are not in the "
                              "train ids 0..3 (give --class-map)")
    assert _run(tmp_path, monkeypatch, "--skip-bad-scans") == 2
    assert "no scan of split 'training'" in capsys.readouterr().err


def test_a_split_none_of_whose_scans_has_cameras_is_refused(tmp_path) -> None:
    root = tmp_path / "folder"
    (root / "train").mkdir(parents=True)
    for name in ("a", "b"):
        np.save(root / "train" / f"{name}.npy", np.zeros((5, 4), np.float32))
    (root / "dataset.yaml").write_text("classes: [a, b]\nlabel_map: {0: 0, 1: 1}\nlabels: {file: '{stem}.label'}\n"
                                       "splits: {train: [train/a.npy], val: [train/b.npy]}\n")
    (tmp_path / "pred").mkdir()
    done = subprocess.run([sys.executable, "-m", "train.image_labels", "--dataset", "folder", "--data-root", str(root),
                           "--split", "train", "--predictions", str(tmp_path / "pred"), "--out", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().endswith(f"no scan of split 'train' of {root} could be labelled from a camera "
                                        "(none has cameras)"), done.stderr


def test_the_output_folder_trains_as_a_scan_folder(tmp_path, monkeypatch, capsys) -> None:
    _scene(tmp_path, beams=8, azimuths=120, scans=2)
    write_scene(tmp_path / "root", tmp_path / "pred", split="validation", scans=1, beams=8, azimuths=90)
    class_map = str(_class_map_file(tmp_path, SKY_MAP))
    assert _run(tmp_path, monkeypatch, "--class-map", class_map, "--folder-split", "train") == 0
    assert _run(tmp_path, monkeypatch, "--class-map", class_map, "--folder-split", "val", split="validation") == 0
    for split, source_split in (("train", "training"), ("val", "validation")):
        source, folder = SceneDataset(tmp_path / "root", source_split), FolderDataset(tmp_path / "out", split)
        assert folder.class_names == CLASSES and len(folder) == len(source)
        for i in range(len(source)):
            sample, expected = folder.load(i), source.load(i)
            labels = np.load(tmp_path / "out" / f"{source.scan_name(i)}.npy")
            assert folder.scan_name(i) == source.scan_name(i) and (labels >= 0).any()
            np.testing.assert_array_equal(sample["segment"], labels)
            np.testing.assert_array_equal(sample["coord"], expected["coord"])
            np.testing.assert_array_equal(sample["strength"], expected["strength"])
    summaries = json.loads((tmp_path / "out" / "image_labels.json").read_text())["splits"]
    assert sorted(summaries) == ["training", "validation"]  # the second run kept the first's entry
    assert [summaries[s]["counts"]["scans"] for s in ("training", "validation")] == [2, 1]
    assert _run(tmp_path, monkeypatch, "--class-map", class_map, "--folder-split", "val") == 2  # training's again
    _one_line_refusal(capsys, "dataset.yaml lists training00.npz under split 'train': this split's scan of that "
                              "name would replace its files")


@pytest.mark.parametrize("option, value, needle", [
    ("--min-depth", "-1", "--min-depth must be >= 0 metres, got -1.0"),
    ("--depth-block", "0", "--depth-block must be >= 1 pixel, got 0"),
    ("--features", "nowhere", "--features nowhere: no such folder"),
    ("--class-map", "nowhere.yaml", "--class-map nowhere.yaml: no such file"),
])
def test_options_are_checked_before_any_data_is_read(tmp_path, capsys, option, value, needle) -> None:
    (tmp_path / "pred").mkdir()
    assert image_labels.main(["--dataset", "synthetic", "--data-root", str(tmp_path / "none"), "--split", "training",
                              "--predictions", str(tmp_path / "pred"), "--out", str(tmp_path / "o"),
                              option, value]) == 2
    _one_line_refusal(capsys, needle)
