"""Waymo v2 parquet -> per-frame layout (spec F): geometry, labels, frames, resumption, errors.

The parquet files are written with the official column names and arrow types from a known scene
(tests/waymo_v2_scene.py: a ground plane and a wall seen by a posed top lidar and a tilted front
lidar with per-beam inclinations), so converted points are checked against analytic positions.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import waymo_v2_scene as scene
from train.data.lidar import waymo_convert as conv
from train.data.validation import CorruptFileError, DatasetLayoutError
from train.data.lidar.waymo import WaymoDataset
from train.data.lidar.waymo_v2 import LidarCalibration, column_azimuths, euler_rotation, row_inclinations

TIMES = [1_000_000, 1_100_000, 1_200_000]
LABELLED = {1_000_000, 1_200_000}  # the middle frame has no lidar_segmentation row
SEG_TRAIN, SEG_VAL = "1111_000_100", "2222_000_100"


@pytest.fixture(scope="module")
def v2_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("waymo_v2")
    expected = {
        ("training", SEG_TRAIN): scene.write_segment(root / "training", SEG_TRAIN, TIMES, LABELLED),
        ("validation", SEG_VAL): scene.write_segment(root / "validation", SEG_VAL, TIMES[:1], set(TIMES[:1])),
    }
    return root, expected


@pytest.fixture(scope="module")
def converted(v2_root, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("converted")
    conv.convert_waymo(v2_root[0], dst, workers=1, show_progress=False)
    return dst


def _copy(v2_root, tmp_path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(v2_root[0], src)
    return src


def test_column_azimuths_are_vehicle_frame_headings_from_behind_decreasing():
    expected = np.pi * np.array([3, 1, -1, -3]) / 4
    np.testing.assert_allclose(column_azimuths(np.eye(4), 4), expected, atol=1e-12)
    yawed = scene.transform(scene.rot_z(0.3), (0, 0, 0))
    np.testing.assert_allclose(column_azimuths(yawed, 4), expected - 0.3, atol=1e-12)


def test_row_inclinations_run_from_the_highest_beam_down():
    uniform = LidarCalibration(np.eye(4), -0.4, 0.2, None)
    np.testing.assert_allclose(row_inclinations(uniform, 3), [0.1, -0.1, -0.3], atol=1e-12)
    per_beam = LidarCalibration(np.eye(4), -0.5, 0.2, np.array([-0.5, -0.1, 0.2]))
    np.testing.assert_allclose(row_inclinations(per_beam, 3), [0.2, -0.1, -0.5])


def test_euler_rotation_is_yaw_pitch_roll_in_that_order():
    got = euler_rotation(np.array(0.1), np.array(-0.2), np.array(0.7))
    np.testing.assert_allclose(got, scene.rot_z(0.7) @ scene.rot_y(-0.2) @ scene.rot_x(0.1), atol=1e-15)


def test_converted_points_match_the_analytic_scene_to_1e4_m(v2_root, converted):
    _, expected = v2_root
    for (split, seg), frames in expected.items():
        for ts in sorted(frames):
            frame_dir = converted / split / seg / str(ts)
            if ts not in LABELLED and split == "training":
                assert not frame_dir.exists()
                continue
            exp = frames[ts]
            coord = np.load(frame_dir / "coord.npy")
            assert coord.dtype == np.float32 and coord.shape == exp["coord"].shape
            np.testing.assert_allclose(coord, exp["coord"], atol=1e-4, rtol=0)
            strength = np.load(frame_dir / "strength.npy")
            assert strength.shape == (len(coord), 1)
            np.testing.assert_allclose(strength[:, 0], exp["strength"], atol=1e-6)
            road, wall = exp["surface"] == scene.ROAD, exp["surface"] == scene.BUILDING
            assert road.any() and wall.any()
            np.testing.assert_allclose(coord[road, 2], scene.GROUND_Z, atol=1e-4)
            np.testing.assert_allclose(coord[wall, 0], exp["wall_x"], atol=1e-4)


def test_labels_and_ignore_land_on_the_right_points(v2_root, converted):
    _, expected = v2_root
    exp = expected[("training", SEG_TRAIN)][TIMES[0]]
    coord = np.load(converted / "training" / SEG_TRAIN / str(TIMES[0]) / "coord.npy")
    segment = np.load(converted / "training" / SEG_TRAIN / str(TIMES[0]) / "segment.npy")
    np.testing.assert_array_equal(segment, exp["segment"])
    assert set(np.unique(segment)) == {-1, scene.ROAD - 1, scene.BUILDING - 1}
    np.testing.assert_allclose(coord[segment == scene.ROAD - 1, 2], scene.GROUND_Z, atol=1e-4)
    np.testing.assert_allclose(coord[segment == scene.BUILDING - 1, 0], exp["wall_x"], atol=1e-4)
    # ignore: every front-lidar point (unlabelled lidar) and the top lidar's "undefined" column
    _, _, top = scene.cast_lidar(scene.TOP, exp["wall_x"], scene.pixel_pose_params(6, 16))
    n_top_r1 = len(top[0])
    assert (segment[:n_top_r1] == -1).sum() == sum(1 for e in top[0] if e[1] == scene.UNDEFINED_COLUMN)
    _, _, front = scene.cast_lidar(scene.FRONT, exp["wall_x"], None)
    assert len(front[0]) > 0
    assert (segment[n_top_r1:n_top_r1 + len(front[0])] == -1).all()


def test_converted_frames_read_with_the_loader_conventions(converted):
    ds = WaymoDataset(converted, "training")
    assert [s.split("/", 1)[1] for s in (ds.load(i)["name"] for i in range(len(ds)))] == [
        f"{SEG_TRAIN}/{t}" for t in sorted(LABELLED)]
    sample = ds.load(0)
    raw = np.load(converted / "training" / SEG_TRAIN / str(TIMES[0]) / "segment.npy")
    np.testing.assert_array_equal(sample["segment"], raw)
    assert sample["strength"].shape[1] == 1 and len(WaymoDataset(converted, "validation")) == 1


def test_unlabelled_frames_are_skipped_and_counted(converted):
    marker = json.loads((converted / "training" / SEG_TRAIN / conv.MARKER).read_text())
    assert marker["frames"] == 2 and marker["unlabelled_frames_skipped"] == 1
    assert sorted(p.name for p in (converted / "training" / SEG_TRAIN).iterdir() if p.is_dir()) == [
        str(t) for t in sorted(LABELLED)]


def test_conversion_resumes_per_segment(v2_root, tmp_path):
    dst = tmp_path / "dst"
    first = conv.convert_waymo(v2_root[0], dst, workers=1, show_progress=False)
    assert first["segments_converted"] == 2 and first["frames"] == 3
    (dst / "validation" / SEG_VAL / conv.MARKER).unlink()  # as if killed before the marker
    (dst / "validation" / SEG_VAL / "stale").mkdir()
    again = conv.convert_waymo(v2_root[0], dst, workers=1, show_progress=False)
    assert again == {"segments_done_before": 1, "segments_converted": 1, "frames": 1, "points": again["points"]}
    assert not (dst / "validation" / SEG_VAL / "stale").exists()
    assert conv.convert_waymo(v2_root[0], dst, workers=1, show_progress=False)["segments_converted"] == 0


def test_parallel_conversion_writes_the_same_files(v2_root, converted, tmp_path):
    dst = tmp_path / "dst"
    conv.convert_waymo(v2_root[0], dst, workers=2, show_progress=False)
    for path in converted.rglob("*.npy"):
        np.testing.assert_array_equal(np.load(dst / path.relative_to(converted)), np.load(path))


def test_run_converts_a_v2_root_once_under_out(v2_root, tmp_path, monkeypatch):
    root = conv.prepare_waymo_root(v2_root[0], tmp_path / "run", world_size=1, workers=1)
    assert root == tmp_path / "run" / conv.CONVERTED_DIRNAME and len(WaymoDataset(root, "training")) == 2
    monkeypatch.setattr(conv, "convert_waymo", lambda *a, **k: pytest.fail("converted twice"))
    assert conv.prepare_waymo_root(v2_root[0], tmp_path / "run", world_size=1, workers=1) == root
    with pytest.raises(DatasetLayoutError, match="python -m train.data.convert waymo"):
        conv.prepare_waymo_root(v2_root[0], tmp_path / "other", world_size=2, workers=1)


def test_preprocessed_root_is_used_as_is(converted, tmp_path):
    assert conv.prepare_waymo_root(converted, tmp_path, world_size=1, workers=1) == converted


def test_v1_tfrecord_root_says_what_to_do(tmp_path):
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "segment-123_with_camera_labels.tfrecord").write_bytes(b"\0" * 16)
    for call in (lambda: conv.prepare_waymo_root(tmp_path, tmp_path / "out", 1, 1),
                 lambda: WaymoDataset(tmp_path, "training"),
                 lambda: conv.convert_waymo(tmp_path, tmp_path / "out", 1, False)):
        with pytest.raises(conv.WaymoV1Error, match="v1 release.*download the v2.*official Waymo") as err:
            call()
        assert "re-extract" not in str(err.value)


def test_loader_on_a_v2_root_points_to_the_converter(v2_root):
    with pytest.raises(DatasetLayoutError, match="v2 parquet download.*train.data.convert"):
        WaymoDataset(v2_root[0], "training")


def test_missing_component_file_is_named(v2_root, tmp_path):
    src = _copy(v2_root, tmp_path)
    path = src / "training" / "lidar_calibration" / f"{SEG_TRAIN}.parquet"
    path.unlink()
    with pytest.raises(DatasetLayoutError, match=f"{re.escape(str(path))}.*missing.*lidar_calibration"):
        conv.convert_waymo(src, tmp_path / "dst", 1, False)


def test_missing_column_is_named_with_its_file(v2_root, tmp_path):
    src = _copy(v2_root, tmp_path)
    path = src / "training" / "lidar" / f"{SEG_TRAIN}.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["[LiDARComponent].range_image_return2.shape"]), path)
    message = f"{str(path)!r} has no column '[LiDARComponent].range_image_return2.shape'"
    with pytest.raises(CorruptFileError, match=re.escape(message)):
        conv.convert_waymo(src, tmp_path / "dst", 1, False)


def test_truncated_parquet_is_named(v2_root, tmp_path):
    src = _copy(v2_root, tmp_path)
    path = src / "training" / "lidar_pose" / f"{SEG_TRAIN}.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match=f"{re.escape(str(path))}.*cannot be read as parquet"):
        conv.convert_waymo(src, tmp_path / "dst", 1, False)


def test_values_that_do_not_fill_the_shape_are_named(v2_root, tmp_path):
    src = _copy(v2_root, tmp_path)
    path = src / "training" / "lidar_segmentation" / f"{SEG_TRAIN}.parquet"
    table = pq.read_table(path)
    name = "[LiDARSegmentationLabelComponent].range_image_return1.values"
    short = pa.array([v[:-2] for v in table.column(name).to_pylist()], pa.list_(pa.int32()))
    pq.write_table(table.set_column(table.schema.get_field_index(name), name, short), path)
    with pytest.raises(CorruptFileError, match=f"{re.escape(str(path))}.*column {re.escape(repr(name))}"):
        conv.convert_waymo(src, tmp_path / "dst", 1, False)
    assert not (tmp_path / "dst" / "training" / SEG_TRAIN).exists()


def test_frame_missing_a_lidar_row_is_named(v2_root, tmp_path):
    src = _copy(v2_root, tmp_path)
    path = src / "training" / "lidar" / f"{SEG_TRAIN}.parquet"
    table = pq.read_table(path)
    keep = [not (t == TIMES[2] and laser == scene.FRONT) for t, laser in zip(
        table.column("key.frame_timestamp_micros").to_pylist(), table.column("key.laser_name").to_pylist())]
    pq.write_table(table.filter(pa.array(keep)), path)
    with pytest.raises(CorruptFileError, match=f"{re.escape(str(path))}.*lacks range images of frame.*{TIMES[2]}"):
        conv.convert_waymo(src, tmp_path / "dst", 1, False)


def test_cli_converts_and_reports(v2_root, tmp_path, capsys):
    assert conv.main(["waymo", "--src", str(v2_root[0]), "--dst", str(tmp_path / "d"), "--workers", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["frames"] == 3
    assert conv.main(["waymo", "--src", str(tmp_path / "nothing"), "--dst", str(tmp_path / "e")]) == 2
    assert "not a Waymo v2 download" in capsys.readouterr().err


def test_train_run_reads_a_v2_root_through_the_conversion(v2_root, tmp_path, monkeypatch):
    import torch

    from train.options.resolve import resolve
    from train.runner.datasets import prepare_splits
    from train.runtime.distributed import DistInfo

    monkeypatch.setattr(conv, "DEFAULT_WORKERS", 1)
    cfg = resolve(["--dataset", "waymo", "--data-root", str(v2_root[0]), "--out", str(tmp_path / "run")])
    data = prepare_splits(cfg, DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))
    assert len(data.train) == 2 and len(data.val_views(False)[0]) == 1
    assert data.train.root == tmp_path / "run" / conv.CONVERTED_DIRNAME


def test_files_with_many_row_groups_convert_the_same(v2_root, converted, tmp_path):
    src = _copy(v2_root, tmp_path)
    for component in ("lidar", "lidar_pose", "lidar_segmentation", "vehicle_pose"):
        path = src / "training" / component / f"{SEG_TRAIN}.parquet"
        pq.write_table(pq.read_table(path), path, row_group_size=1)
    conv.convert_waymo(src, tmp_path / "dst", 1, False)
    for path in (converted / "training").rglob("*.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "dst" / path.relative_to(converted)), np.load(path))


def test_null_return2_labels_give_ignore_on_return2_points(v2_root, converted, tmp_path):
    src = _copy(v2_root, tmp_path)
    path = src / "training" / "lidar_segmentation" / f"{SEG_TRAIN}.parquet"
    table = pq.read_table(path)
    for suffix in ("values", "shape"):
        name = f"[LiDARSegmentationLabelComponent].range_image_return2.{suffix}"
        table = table.set_column(table.schema.get_field_index(name), name,
                                 pa.nulls(table.num_rows, table.schema.field(name).type))
    pq.write_table(table, path)
    conv.convert_waymo(src, tmp_path / "dst", 1, False)
    frame = Path("training") / SEG_TRAIN / str(TIMES[0]) / "segment.npy"
    got, full = np.load(tmp_path / "dst" / frame), np.load(converted / frame)
    wall_x = v2_root[1][("training", SEG_TRAIN)][TIMES[0]]["wall_x"]
    n_return1 = sum(len(scene.cast_lidar(laser, wall_x, scene.pixel_pose_params(6, 16) if laser == scene.TOP
                                         else None)[2][0]) for laser in (scene.TOP, scene.FRONT))
    np.testing.assert_array_equal(got[:n_return1], full[:n_return1])
    assert (got[n_return1:] == -1).all() and (full[n_return1:] != -1).any()


def test_labelled_frame_missing_from_vehicle_pose_is_named(v2_root, tmp_path):
    src = _copy(v2_root, tmp_path)
    path = src / "training" / "vehicle_pose" / f"{SEG_TRAIN}.parquet"
    table = pq.read_table(path)
    times = table.column("key.frame_timestamp_micros").to_pylist()
    pq.write_table(table.filter(pa.array([t != TIMES[0] for t in times])), path)
    with pytest.raises(CorruptFileError, match=f"{re.escape(str(path))}.*no row for the labelled frame.*{TIMES[0]}"):
        conv.convert_waymo(src, tmp_path / "dst", 1, False)
