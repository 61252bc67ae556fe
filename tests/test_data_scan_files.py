"""Single scan files (train/data/lidar/scan_files.py): round trips through every format, label files, and one
clear error naming the file for each kind of bad file. Every test writes its own files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from train.data.lidar.scan_files import (
    LABEL_SUFFIXES,
    SCAN_SUFFIXES,
    check_packages,
    read_labels,
    read_scan,
    write_labelled_ply,
    write_labels,
    write_scan,
)
from train.data.validation import BadScanError, CorruptFileError, LabelCountError, NonFiniteCoordinateError

LABELLED = (".npz", ".ply", ".las", ".laz")  # formats that carry a label field inside the scan file
LAS_STEP = 0.001  # the writer's LAS coordinate scale


def _points(n: int = 37, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-40.0, 40.0, (n, 3))
    intensity = rng.integers(0, 256, (n, 1))  # whole numbers: LAS stores intensity as uint16
    return np.hstack([xyz, intensity]).astype(np.float32)


@pytest.mark.parametrize("suffix", SCAN_SUFFIXES)
def test_scan_round_trip_keeps_points_and_columns(tmp_path: Path, suffix: str) -> None:
    points = _points()
    path = tmp_path / f"scan{suffix}"
    write_scan(path, points)
    scan = read_scan(path)
    assert scan.columns == ("intensity",)
    assert scan.xyz.dtype == np.float64 and scan.values.dtype == np.float32 and scan.values.shape == (len(points), 1)
    tol = LAS_STEP / 2 + 1e-9 if suffix in (".las", ".laz") else 0.0
    np.testing.assert_allclose(scan.xyz, points[:, :3], rtol=0, atol=tol)
    np.testing.assert_array_equal(scan.values[:, 0], points[:, 3])
    assert scan.labels is None


@pytest.mark.parametrize("suffix", LABELLED)
def test_label_field_round_trip(tmp_path: Path, suffix: str) -> None:
    points = _points()
    labels = np.random.default_rng(1).integers(0, 300, len(points))
    path = tmp_path / f"scan{suffix}"
    write_scan(path, points, labels=labels, label_field="class_id")
    scan = read_scan(path, label_field="class_id")
    assert scan.labels.dtype == np.int64
    np.testing.assert_array_equal(scan.labels, labels)
    assert "class_id" not in scan.columns


def test_las_classification_is_a_label_field_and_survey_coordinates_keep_their_millimetres(tmp_path: Path) -> None:
    points = _points().astype(np.float64)
    points[:, :3] += (512_345.0, 5_401_234.0, 310.0)  # UTM-sized: float32 alone would lose the millimetres
    labels = np.arange(len(points)) % 7
    path = tmp_path / "survey.las"
    write_scan(path, points, labels=labels, label_field="classification")
    scan = read_scan(path, label_field="classification")
    np.testing.assert_array_equal(scan.labels, labels)
    np.testing.assert_array_equal(scan.offset, np.floor(points[:, :3].min(axis=0)))  # the writer's header offset
    np.testing.assert_allclose(scan.xyz, points[:, :3], rtol=0, atol=LAS_STEP / 2 + 1e-9)


def test_ply_features_in_file_order_with_intensity_fourth(tmp_path: Path) -> None:
    pts = _points(9)
    extra = np.hstack([pts[:, :3], np.full((9, 1), 0.5, np.float32), pts[:, 3:]])
    path = tmp_path / "cc.ply"
    write_scan(path, extra, columns=("x", "y", "z", "curvature", "Scalar_Intensity"))
    scan = read_scan(path)
    assert scan.columns == ("intensity", "curvature")
    np.testing.assert_array_equal(scan.features(["intensity", "curvature"]), extra[:, [4, 3]])
    with pytest.raises(CorruptFileError, match=r"cc\.ply.*no column.*'red'"):
        scan.features(["red"])


def test_npz_with_coord_and_strength_keys(tmp_path: Path) -> None:
    pts = _points(11)
    path = tmp_path / "pointcept.npz"
    np.savez(path, coord=pts[:, :3], strength=pts[:, 3:], segment=np.arange(11, dtype=np.int32))
    scan = read_scan(path, label_field="segment")
    assert scan.columns == ("intensity",)
    np.testing.assert_array_equal(np.hstack([scan.xyz, scan.values]), pts)
    np.testing.assert_array_equal(scan.labels, np.arange(11))


def test_nuscenes_pcd_bin_is_read_as_five_columns_even_when_four_would_divide(tmp_path: Path) -> None:
    """nuScenes sweeps (*.pcd.bin) hold x, y, z, intensity, ring: 8 points are 40 float32, which four
    columns would also divide (10 garbage points); a plain .bin stays KITTI's four."""
    points = np.random.default_rng(3).normal(size=(8, 5)).astype(np.float32)
    nus = tmp_path / "n015__LIDAR_TOP__1.pcd.bin"
    points.tofile(nus)
    scan = read_scan(nus)
    assert scan.columns == ("intensity", "feature4")
    np.testing.assert_array_equal(np.hstack([scan.xyz, scan.values]), points)
    write_scan(tmp_path / "again.pcd.bin", np.hstack([scan.xyz, scan.values]), ("x", "y", "z") + scan.columns)
    np.testing.assert_array_equal(read_scan(tmp_path / "again.pcd.bin").values, points[:, 3:])
    kitti = tmp_path / "000000.bin"
    points.tofile(kitti)
    assert read_scan(kitti).xyz.shape == (10, 3)


def test_npy_with_more_columns_names_them(tmp_path: Path) -> None:
    pts = np.hstack([_points(5), np.ones((5, 2), np.float32)])
    path = tmp_path / "wide.npy"
    write_scan(path, pts)
    assert read_scan(path).columns == ("intensity", "feature4", "feature5")


@pytest.mark.parametrize("suffix", LABEL_SUFFIXES)
def test_label_file_round_trip(tmp_path: Path, suffix: str) -> None:
    labels = np.array([0, 1, 40, 252, 65535, 7])
    path = tmp_path / f"000000{suffix}"
    write_labels(path, labels)
    np.testing.assert_array_equal(read_labels(path, n_points=6), labels)


def test_kitti_label_keeps_lower_16_bits(tmp_path: Path) -> None:
    words = (np.array([3, 7, 9], dtype=np.uint32) << 16) | np.array([10, 40, 252], dtype=np.uint32)
    path = tmp_path / "000001.label"
    words.tofile(path)
    np.testing.assert_array_equal(read_labels(path), [10, 40, 252])


def test_labelled_ply_carries_label_and_palette_colour(tmp_path: Path) -> None:
    plyfile = pytest.importorskip("plyfile")
    coord = _points(4)[:, :3]
    palette = np.array([[255, 0, 0], [0, 0, 255]], dtype=np.uint8)
    path = tmp_path / "pred.ply"
    write_labelled_ply(path, coord, np.array([0, 1, -1, 1]), palette)
    vertex = plyfile.PlyData.read(str(path))["vertex"].data
    np.testing.assert_array_equal(vertex["label"], [0, 1, -1, 1])
    np.testing.assert_array_equal(np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1),
                                  [[255, 0, 0], [0, 0, 255], [128, 128, 128], [0, 0, 255]])
    np.testing.assert_array_equal(read_scan(path, label_field="label").xyz, coord)


def test_writers_leave_no_temporary_file(tmp_path: Path) -> None:
    write_scan(tmp_path / "a.ply", _points(3))
    write_labels(tmp_path / "a.label", np.array([1, 2, 3]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.label", "a.ply"]


# ----------------------------------------------------------------------------- bad files
@pytest.mark.parametrize("suffix", SCAN_SUFFIXES)
def test_truncated_scan_is_a_bad_scan_naming_the_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"scan{suffix}"
    write_scan(path, _points(), **({} if suffix in (".bin", ".npy") else {"labels": np.zeros(37, int)}))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])  # 7: no whole record of any format
    with pytest.raises(BadScanError, match=f"scan{suffix}"):
        read_scan(path)


@pytest.mark.parametrize("suffix", (".ply", ".las", ".npz", ".npy"))
def test_garbage_scan_is_a_bad_scan_naming_the_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(b"this is not a point cloud\n" * 3)
    with pytest.raises(BadScanError, match=f"junk{suffix}"):
        read_scan(path)


@pytest.mark.parametrize("suffix", (".bin", ".ply", ".npy"))
def test_nan_coordinate_is_a_bad_scan(tmp_path: Path, suffix: str) -> None:
    pts = _points()
    pts[5, 1] = np.nan
    path = tmp_path / f"nan{suffix}"
    write_scan(path, pts)
    with pytest.raises(NonFiniteCoordinateError, match=f"nan{suffix}.*first at row 5"):
        read_scan(path)


def test_a_non_finite_value_is_a_bad_scan_only_in_a_column_that_is_read(tmp_path: Path) -> None:
    pts = np.hstack([_points(), np.ones((37, 1), np.float32)])
    pts[3, 3] = np.inf
    pts[4, 4] = np.nan
    path = tmp_path / "inf.npy"
    write_scan(path, pts)
    scan = read_scan(path)  # the columns nobody reads may hold anything
    with pytest.raises(CorruptFileError, match=r"inf\.npy.*column 'intensity'"):
        scan.features(["intensity"])
    with pytest.raises(CorruptFileError, match=r"inf\.npy.*column 'feature4'"):
        scan.features(["feature4"])
    pts[3, 3] = 7.0
    write_scan(path, pts)
    np.testing.assert_array_equal(read_scan(path).features(["intensity"])[:, 0], pts[:, 3])


def test_label_file_of_another_length_names_it(tmp_path: Path) -> None:
    path = tmp_path / "short.label"
    write_labels(path, np.arange(5))
    with pytest.raises(LabelCountError, match=r"short\.label.*5 labels.*6 points"):
        read_labels(path, n_points=6)


def test_npz_label_key_of_another_length_names_it(tmp_path: Path) -> None:
    path = tmp_path / "mismatch.npz"
    np.savez(path, points=_points(6), label=np.arange(4))
    with pytest.raises(LabelCountError, match=r"mismatch\.npz"):
        read_scan(path, label_field="label")


def test_fractional_labels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "float.npy"
    np.save(path, np.array([1.0, 2.5]))
    with pytest.raises(CorruptFileError, match=r"float\.npy.*not whole numbers"):
        read_labels(path)


def test_missing_label_field_names_what_the_file_has(tmp_path: Path) -> None:
    path = tmp_path / "nolabel.ply"
    write_scan(path, _points(3))
    with pytest.raises(CorruptFileError, match=r"nolabel\.ply.*no vertex property 'label'"):
        read_scan(path, label_field="label")


@pytest.mark.parametrize("name", ("scan.pcd", "scan.txt", "labels.bin"))
def test_unknown_suffix_is_one_line_naming_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\0" * 16)
    reader = read_labels if name.startswith("labels") else read_scan
    with pytest.raises(ValueError, match=f"{name}.*unknown suffix") as err:
        reader(path)
    assert "\n" not in str(err.value)


def test_missing_scan_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.ply"):
        read_scan(tmp_path / "absent.ply")


def test_missing_optional_packages_are_named_in_one_line_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name in ("plyfile", "lazrs") else found(name, *rest))
    with pytest.raises(ImportError, match=r"^\.bin, \.laz, \.ply files need lazrs, plyfile, not installed: pip install"):
        check_packages([".ply", ".laz", ".bin"])
    check_packages([".bin", ".npy", ".npz", ".las"])  # laspy is there; the others need nothing


# ----------------------------------------------------------------------------- coordinates (decision 53)
def write_float64_ply(path: Path, xyz: np.ndarray, intensity: np.ndarray) -> None:
    """A PLY as survey software exports it: x, y, z as doubles, intensity as float."""
    plyfile = pytest.importorskip("plyfile")
    vertex = np.empty(len(xyz), dtype=[("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("intensity", "<f4")])
    vertex["x"], vertex["y"], vertex["z"], vertex["intensity"] = xyz[:, 0], xyz[:, 1], xyz[:, 2], intensity
    path.parent.mkdir(parents=True, exist_ok=True)
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(path))


def survey_strip(n: int = 500, seed: int = 5) -> np.ndarray:
    """20 m of points near the origin on a 1/4096 m lattice, so that adding survey coordinates to them
    and subtracting whole metres again is exact in float64."""
    local = np.random.default_rng(seed).uniform([0.0, 0.0, 0.0], [20.0, 20.0, 5.0], (n, 3))
    return np.round(local * 4096) / 4096


NORTHING = np.array([512_000.0, 5_000_000.0, 300.0])  # UTM: float32 keeps y only to 0.5 m here


def test_a_float64_ply_at_northing_5000000_keeps_its_distinct_coordinates(tmp_path: Path) -> None:
    far = survey_strip() + NORTHING
    write_float64_ply(tmp_path / "far.ply", far, np.ones(len(far)))
    scan = read_scan(tmp_path / "far.ply")
    assert len(np.unique(scan.xyz[:, 1])) == len(np.unique(far[:, 1])) == len(far)  # was 41 values 0.5 m apart
    np.testing.assert_array_equal(scan.xyz, far)
    coord, origin = scan.local("tile")
    centre = (far.min(axis=0) + far.max(axis=0)) / 2
    np.testing.assert_array_equal(origin, [np.round(centre[0]), np.round(centre[1]), np.floor(far[:, 2].min())])
    assert coord.dtype == np.float32 and np.abs(coord.astype(np.float64) + origin - far).max() < 1e-3
    assert np.abs(coord[:, :2]).max() < 11.0 and coord[:, 2].min() >= 0.0  # around the tile's centre, z from 0


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".ply"])
def test_a_scan_the_project_writes_at_survey_coordinates_reads_back_the_same_float64_points(
        tmp_path: Path, suffix: str) -> None:
    far = np.random.default_rng(6).uniform([0.0, 0.0, 0.0], [20.0, 20.0, 5.0], (200, 3)) + NORTHING
    intensity = np.arange(200.0)[:, None] / 7  # not whole: stored as the format's other columns are
    write_scan(tmp_path / f"far{suffix}", np.hstack([far, intensity]))
    scan = read_scan(tmp_path / f"far{suffix}")
    np.testing.assert_array_equal(scan.xyz, far)  # float32 kept y only to 0.5 m here
    np.testing.assert_array_equal(scan.values, intensity.astype(np.float32))


def test_survey_coordinates_in_the_sensor_frame_are_refused_in_one_line_not_rounded(tmp_path: Path) -> None:
    write_float64_ply(tmp_path / "far.ply", survey_strip() + NORTHING, np.ones(500))
    with pytest.raises(BadScanError, match=r"far\.ply.*5,000,0\d\d m from the origin of frame 'sensor'.*frame: tile") \
            as err:
        read_scan(tmp_path / "far.ply").local("sensor")
    assert "\n" not in str(err.value)
    near = survey_strip()  # float64 within 16 km of the sensor: float32 moves no coordinate by 0.5 mm
    write_float64_ply(tmp_path / "near.ply", near, np.ones(500))
    coord, origin = read_scan(tmp_path / "near.ply").local("sensor")
    np.testing.assert_array_equal(coord, near.astype(np.float32))  # as before: the stored values, cast
    np.testing.assert_array_equal(origin, 0.0)
    exact = (survey_strip() + NORTHING).astype(np.float32).astype(np.float64)  # far, but float32 values: kept as are
    write_float64_ply(tmp_path / "exact.ply", exact, np.ones(500))
    np.testing.assert_array_equal(read_scan(tmp_path / "exact.ply").local("sensor")[0], exact.astype(np.float32))


def test_las_extra_bytes_dimensions_are_columns_a_feature_can_name_beside_the_label_field(tmp_path: Path) -> None:
    laspy = pytest.importorskip("laspy")
    n = 20
    header = laspy.LasHeader(point_format=1, version="1.4")
    header.scales, header.offsets = np.full(3, 0.001), np.array([500_000.0, 5_000_000.0, 100.0])
    header.add_extra_dims([laspy.ExtraBytesParams(name="amplitude", type=np.float32),
                           laspy.ExtraBytesParams(name="normal", type="3f8"),  # not one value per point: left out
                           laspy.ExtraBytesParams(name="cls", type=np.int32)])
    las = laspy.LasData(header)
    las.x, las.y, las.z = 500_000.0 + np.arange(n), 5_000_000.0 - np.arange(n), np.full(n, 101.5)
    las.amplitude, las.cls = np.linspace(0.0, 9.5, n), np.arange(n) % 3
    las.write(str(tmp_path / "extra.las"))
    scan = read_scan(tmp_path / "extra.las", label_field="cls")
    assert scan.columns == ("intensity", "amplitude")
    np.testing.assert_array_equal(scan.features(["amplitude"])[:, 0], np.linspace(0.0, 9.5, n).astype(np.float32))
    np.testing.assert_array_equal(scan.labels, np.arange(n) % 3)
    np.testing.assert_array_equal(scan.xyz[:, 0], 500_000.0 + np.arange(n))  # the file's own frame
