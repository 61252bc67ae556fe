"""The object data sets' downloads (train/data/objects/, docs/objects.md, decision 66): small files
written in exactly each layout are read back; bad files are refused in one line naming the file;
the arguments of load_objects are checked."""
from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

from train.data.objects import load_objects
from train.data.objects.scanobjectnn import SCANOBJECTNN_CLASSES
from train.data.objects.shapenet_part import PART_COUNTS
from train.data.validation import CorruptFileError, DatasetLayoutError, LabelCountError, NonFiniteCoordinateError

M = 40  # points of every written cloud; loads ask for M points, so no point is dropped or repeated


def normalised(cloud: np.ndarray) -> np.ndarray:
    """The expected output of one aligned cloud of exactly M points: centred, farthest point at 1."""
    centred = cloud - cloud.mean(axis=0)
    return centred / np.linalg.norm(centred, axis=1).max()


def clouds(rng: np.random.Generator, count: int) -> np.ndarray:
    return (rng.standard_normal((count, M, 3)) * [1.0, 2.0, 0.5] + rng.uniform(-3, 3, (count, 1, 3))).astype(np.float32)


def write_h5(path: Path, data: np.ndarray, labels: np.ndarray, **extra: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["label"] = labels
        for key, value in extra.items():
            f[key] = value


# ----------------------------------------------------------------------------- ModelNet40, HDF5
MODELNET_NAMES = [f"class{k:02d}" for k in range(40)]


def modelnet_hdf5(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """PointNet's modelnet40_ply_hdf5_2048 in small: two training files and one test file."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "shape_names.txt").write_text("\n".join(MODELNET_NAMES) + "\n")
    written = {}
    for split, files in (("train", 2), ("test", 1)):
        names = []
        data, labels = [], []
        for k in range(files):
            d, lab = clouds(rng, 25), rng.integers(0, 4, (25, 1)).astype(np.uint8)  # >= 10 a class: a val split
            write_h5(root / f"ply_data_{split}{k}.h5", d, lab, normal=np.zeros_like(d),
                     faceId=np.zeros((25, M), np.int32))
            names.append(f"data/modelnet40_ply_hdf5_2048/ply_data_{split}{k}.h5")
            data.append(d)
            labels.append(lab[:, 0])
        (root / f"{split}_files.txt").write_text("\n".join(names) + "\n")
        written[split] = (np.concatenate(data), np.concatenate(labels).astype(np.int64))
    return written


def test_modelnet40_hdf5_layout_reads_back_every_cloud_and_label(tmp_path: Path) -> None:
    written = modelnet_hdf5(tmp_path / "modelnet40_ply_hdf5_2048")
    for split, standard in (("trainval", "train"), ("test", "test")):
        got = load_objects("modelnet40", tmp_path / "modelnet40_ply_hdf5_2048", split, points=M)
        data, labels = written[standard]
        np.testing.assert_array_equal(got.labels, labels)
        np.testing.assert_allclose(got.points, [normalised(c.astype(np.float64)) for c in data], atol=1e-6)
        assert got.class_names == tuple(MODELNET_NAMES) and got.points.dtype == np.float32
        assert got.parts is None


def test_validation_split_is_every_tenth_cloud_of_each_class_and_train_the_rest(tmp_path: Path) -> None:
    modelnet_hdf5(tmp_path / "m")
    full, train, val = (load_objects("modelnet40", tmp_path / "m", s, points=M) for s in ("trainval", "train", "val"))
    expected_val = []
    for label in np.unique(full.labels):
        expected_val += list(np.flatnonzero(full.labels == label)[9::10])
    expected_val = np.sort(expected_val)
    expected_train = np.setdiff1d(np.arange(len(full)), expected_val)
    np.testing.assert_array_equal(val.points, full.points[expected_val])
    np.testing.assert_array_equal(train.points, full.points[expected_train])
    np.testing.assert_array_equal(val.labels, full.labels[expected_val])


def test_modelnet40_parent_folder_is_refused_naming_the_layout_folder_inside(tmp_path: Path) -> None:
    modelnet_hdf5(tmp_path / "modelnet40_ply_hdf5_2048")
    with pytest.raises(DatasetLayoutError, match="point --data-root at .*modelnet40_ply_hdf5_2048"):
        load_objects("modelnet40", tmp_path, "train")


def test_hdf5_without_data_is_refused_naming_the_file(tmp_path: Path) -> None:
    modelnet_hdf5(tmp_path / "m")
    path = tmp_path / "m" / "ply_data_train1.h5"
    path.unlink()
    with h5py.File(path, "w") as f:
        f["label"] = np.zeros((3, 1), np.uint8)
    with pytest.raises(CorruptFileError, match=r"ply_data_train1\.h5: HDF5 file has no 'data'"):
        load_objects("modelnet40", tmp_path / "m", "train", points=M)


def test_hdf5_whose_label_count_disagrees_is_refused(tmp_path: Path) -> None:
    modelnet_hdf5(tmp_path / "m")
    write_h5(tmp_path / "m" / "ply_data_test0.h5", clouds(np.random.default_rng(1), 4), np.zeros((5, 1), np.uint8))
    with pytest.raises(LabelCountError, match=r"ply_data_test0\.h5: 'data' holds 4 clouds but 'label' 5"):
        load_objects("modelnet40", tmp_path / "m", "test", points=M)


def test_truncated_hdf5_is_refused_naming_the_file(tmp_path: Path) -> None:
    modelnet_hdf5(tmp_path / "m")
    path = tmp_path / "m" / "ply_data_test0.h5"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CorruptFileError, match=r"ply_data_test0\.h5: cannot be read as an HDF5 file"):
        load_objects("modelnet40", tmp_path / "m", "test", points=M)


def test_nan_point_is_refused_naming_the_file_and_row(tmp_path: Path) -> None:
    modelnet_hdf5(tmp_path / "m")
    data = clouds(np.random.default_rng(2), 3)
    data[2, 7, 1] = np.nan
    write_h5(tmp_path / "m" / "ply_data_test0.h5", data, np.zeros((3, 1), np.uint8))
    with pytest.raises(NonFiniteCoordinateError, match=r"ply_data_test0\.h5 row 2"):
        load_objects("modelnet40", tmp_path / "m", "test", points=M)


def test_list_naming_a_missing_hdf5_file_is_refused_naming_both(tmp_path: Path) -> None:
    modelnet_hdf5(tmp_path / "m")
    (tmp_path / "m" / "test_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_test7.h5\n")
    with pytest.raises(DatasetLayoutError, match=r"test_files\.txt names .*ply_data_test7\.h5.* is missing"):
        load_objects("modelnet40", tmp_path / "m", "test", points=M)


def test_label_outside_the_class_list_is_refused(tmp_path: Path) -> None:
    modelnet_hdf5(tmp_path / "m")
    write_h5(tmp_path / "m" / "ply_data_test0.h5", clouds(np.random.default_rng(3), 2), np.array([[1], [40]], np.uint8))
    with pytest.raises(CorruptFileError, match=r"ply_data_test0\.h5 row 1: class id 40 is outside the 40 classes"):
        load_objects("modelnet40", tmp_path / "m", "test", points=M)


# ----------------------------------------------------------------------------- ModelNet40, resampled text
def modelnet_normal(root: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """PointNet++'s modelnet40_normal_resampled in small (three classes used, 40 listed)."""
    rng = np.random.default_rng(4)
    names = ["airplane", "night_stand", "xbox", *MODELNET_NAMES[3:]]
    root.mkdir(parents=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(names) + "\n")
    written: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
    number = 0
    for split, count in (("train", 12), ("test", 4)):
        for k in range(count):
            cls = names[k % 3]
            number += 1
            shape = f"{cls}_{number:04d}"
            cloud = clouds(rng, 1)[0].astype(np.float64)
            rows = np.hstack([cloud, rng.standard_normal((M, 3))])
            (root / cls).mkdir(exist_ok=True)
            (root / cls / f"{shape}.txt").write_text("\n".join(",".join(f"{v:.6f}" for v in r) for r in rows) + "\n")
            written[split].append((cls, np.round(cloud, 6)))
        ids = [f"{c}_{i:04d}" for i, (c, _) in enumerate(written[split], start=number - count + 1)]
        (root / f"modelnet40_{split}.txt").write_text("\n".join(ids) + "\n")
    return written


def test_modelnet40_resampled_text_layout_reads_back_every_shape_and_class(tmp_path: Path) -> None:
    written = modelnet_normal(tmp_path / "modelnet40_normal_resampled")
    for split, standard in (("trainval", "train"), ("test", "test")):
        got = load_objects("modelnet40", tmp_path / "modelnet40_normal_resampled", split, points=M)
        names = got.class_names
        assert [names[label] for label in got.labels] == [c for c, _ in written[standard]]
        np.testing.assert_allclose(got.points, [normalised(c) for _, c in written[standard]], atol=1e-5)


def test_resampled_text_file_with_a_short_line_is_refused_naming_it(tmp_path: Path) -> None:
    modelnet_normal(tmp_path / "m")
    path = tmp_path / "m" / "xbox" / "xbox_0015.txt"
    path.write_text(path.read_text() + "1.0,2.0,3.0\n")
    with pytest.raises(CorruptFileError, match=r"xbox_0015\.txt"):
        load_objects("modelnet40", tmp_path / "m", "test", points=M)


def test_resampled_list_naming_a_missing_shape_is_refused(tmp_path: Path) -> None:
    modelnet_normal(tmp_path / "m")
    (tmp_path / "m" / "airplane" / "airplane_0013.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"modelnet40_test\.txt names 'airplane_0013'"):
        load_objects("modelnet40", tmp_path / "m", "test", points=M)


# ----------------------------------------------------------------------------- ScanObjectNN
@pytest.mark.parametrize("name, folder, suffix", [("scanobjectnn", "main_split", ""),
                                                  ("scanobjectnn_obj_only", "main_split_nobg", ""),
                                                  ("scanobjectnn_pb_t50_rs", "main_split", "_augmentedrot_scale75")])
def test_scanobjectnn_variants_read_their_own_files(tmp_path: Path, name: str, folder: str, suffix: str) -> None:
    rng = np.random.default_rng(5)
    written = {}
    for variant_folder, variant_suffix in (("main_split", ""), ("main_split_nobg", ""),
                                           ("main_split", "_augmentedrot_scale75")):
        for standard, prefix in (("trainval", "training"), ("test", "test")):
            data, labels = clouds(rng, 15), rng.integers(0, 15, 15)
            write_h5(tmp_path / variant_folder / f"{prefix}_objectdataset{variant_suffix}.h5", data, labels,
                     mask=np.zeros((15, M), np.int64))
            written[variant_folder, variant_suffix, standard] = (data, labels)
    for standard in ("trainval", "test"):
        got = load_objects(name, tmp_path, standard, points=M)
        data, labels = written[folder, suffix, standard]
        np.testing.assert_array_equal(got.labels, labels)
        np.testing.assert_allclose(got.points, [normalised(c.astype(np.float64)) for c in data], atol=1e-6)
        assert got.class_names == SCANOBJECTNN_CLASSES and len(got.class_names) == 15


def test_scanobjectnn_missing_variant_file_and_fractional_labels_are_refused_naming_the_file(tmp_path: Path) -> None:
    data = clouds(np.random.default_rng(6), 3)
    write_h5(tmp_path / "main_split" / "training_objectdataset.h5", data, np.array([2.0, 0.0, 14.0]))
    with pytest.raises(DatasetLayoutError, match=r"main_split_nobg/training_objectdataset\.h5' is missing"):
        load_objects("scanobjectnn_obj_only", tmp_path, "trainval", points=M)
    np.testing.assert_array_equal(load_objects("scanobjectnn", tmp_path, "trainval", points=M).labels, [2, 0, 14])
    write_h5(tmp_path / "main_split" / "test_objectdataset.h5", data, np.array([2.0, 0.5, 14.0]))
    with pytest.raises(CorruptFileError, match=r"test_objectdataset\.h5: 'label' must be \(clouds,\) whole numbers"):
        load_objects("scanobjectnn", tmp_path, "test", points=M)


# ----------------------------------------------------------------------------- ShapeNet-part
SYNSETS = {"Airplane": "02691156", "Bag": "02773838", "Cap": "02954340", "Car": "02958343", "Chair": "03001627",
           "Earphone": "03261776", "Guitar": "03467517", "Knife": "03624134", "Lamp": "03636649",
           "Laptop": "03642806", "Motorbike": "03790512", "Mug": "03797390", "Pistol": "03948459",
           "Rocket": "04099429", "Skateboard": "04225987", "Table": "04379243"}


def shapenet_part(root: Path) -> dict[str, list[tuple[int, np.ndarray, np.ndarray]]]:
    """The _normal release in small: Airplane (parts 0-3) and Chair (12-15) shapes in three lists."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True)
    (root / "synsetoffset2category.txt").write_text("".join(f"{c}\t{s}\n" for c, s in SYNSETS.items()))
    written: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for split, count in (("train", 6), ("val", 2), ("test", 3)):
        entries, written[split] = [], []
        for k in range(count):
            category = ("Airplane", "Chair")[k % 2]
            first = {"Airplane": 0, "Chair": 12}[category]
            shape = f"{split}{k:03d}abcdef"
            cloud = np.round(clouds(rng, 1)[0].astype(np.float64), 6)
            parts = rng.integers(first, first + 4, M)
            rows = np.hstack([cloud, rng.standard_normal((M, 3)), parts[:, None].astype(np.float64)])
            (root / SYNSETS[category]).mkdir(exist_ok=True)
            (root / SYNSETS[category] / f"{shape}.txt").write_text(
                "\n".join(" ".join(f"{v:.6f}" for v in r) for r in rows) + "\n")
            entries.append(f"shape_data/{SYNSETS[category]}/{shape}")
            written[split].append((list(SYNSETS).index(category), cloud, parts))
        (root / "train_test_split").mkdir(exist_ok=True)
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(entries))
    return written


def test_shapenet_part_reads_its_three_lists_with_categories_and_global_part_ids(tmp_path: Path) -> None:
    written = shapenet_part(tmp_path / "sn")
    for split, lists in (("train", ("train",)), ("val", ("val",)), ("test", ("test",)), ("trainval", ("train", "val"))):
        got = load_objects("shapenet_part", tmp_path / "sn", split, points=M, task="parts")
        expected = [item for name in lists for item in written[name]]
        np.testing.assert_array_equal(got.labels, [label for label, _, _ in expected])
        np.testing.assert_array_equal(got.parts, [parts for _, _, parts in expected])
        np.testing.assert_allclose(got.points, [normalised(c) for _, c, _ in expected], atol=1e-5)
    assert len(got.class_names) == 16 and len(got.part_names) == 50 == sum(PART_COUNTS.values())
    assert got.part_names[12] == "Chair/part0" and got.part_classes[12] == got.class_names.index("Chair")
    assert (got.part_classes[got.parts] == got.labels[:, None]).all()
    assert load_objects("shapenet_part", tmp_path / "sn", "test", points=M).parts is None  # classification


def test_shapenet_part_point_of_another_categorys_part_is_refused(tmp_path: Path) -> None:
    shapenet_part(tmp_path / "sn")
    path = tmp_path / "sn" / SYNSETS["Airplane"] / "test000abcdef.txt"
    lines = path.read_text().splitlines()
    lines[4] = " ".join(lines[4].split()[:6] + ["13.000000"])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptFileError, match=r"test000abcdef\.txt: line 5 has part 13, not a part id of its "
                                               r"category \(ids \[0, 1, 2, 3\]\)"):
        load_objects("shapenet_part", tmp_path / "sn", "test", points=M, task="parts")


def test_shapenet_part_list_naming_a_missing_shape_is_refused(tmp_path: Path) -> None:
    shapenet_part(tmp_path / "sn")
    (tmp_path / "sn" / SYNSETS["Chair"] / "val001abcdef.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"shuffled_val_file_list\.json names 'shape_data/03001627/val001"):
        load_objects("shapenet_part", tmp_path / "sn", "val", points=M)


# ----------------------------------------------------------------------------- the arguments
@pytest.mark.parametrize("kwargs, message", [
    (dict(name="modelnet10"), "object data set 'modelnet10' is not one of"),
    (dict(name="shapes", split="validation"), "object split 'validation' is not one of"),
    (dict(name="shapes", setting="so3"), "object setting 'so3' is not one of"),
    (dict(name="shapes", points=0), "points must be a positive integer, got 0"),
    (dict(name="shapes", seed=-1), "seed must be a non-negative integer, got -1"),
    (dict(name="shapes", root="/data"), "shapes is generated, it reads no --data-root"),
    (dict(name="shapes", size=0), "size of shapes must be a positive integer, got 0"),
    (dict(name="modelnet40", root="/data", task="parts"), "modelnet40 has no part labels"),
    (dict(name="modelnet40"), "modelnet40 is read from its download"),
    (dict(name="scanobjectnn", root="/data", size=3), "size applies to the generated sets"),
])
def test_bad_arguments_are_refused_in_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        load_objects(**kwargs)
    assert "\n" not in str(info.value)


def test_missing_root_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="nowhere"):
        load_objects("shapenet_part", tmp_path / "nowhere", "train")


# ----------------------------------------------------------------------------- stepping off the documented path
def test_a_data_root_one_level_too_high_is_answered_with_the_folder_to_use_for_every_layout(tmp_path: Path) -> None:
    data = clouds(np.random.default_rng(8), 3)
    write_h5(tmp_path / "so" / "h5_files" / "main_split" / "training_objectdataset.h5", data, np.array([0, 1, 2]))
    with pytest.raises(DatasetLayoutError, match=r"\(it holds h5_files/main_split: point --data-root at "
                                                 rf"{tmp_path}/so/h5_files\)"):
        load_objects("scanobjectnn", tmp_path / "so", "trainval", points=M)
    shapenet_part(tmp_path / "sn" / "shapenetcore_partanno_segmentation_benchmark_v0_normal")
    with pytest.raises(DatasetLayoutError, match=r"\(it holds shapenetcore_partanno_segmentation_benchmark_v0_normal/"
                                                 r"synsetoffset2category\.txt: point --data-root at "):
        load_objects("shapenet_part", tmp_path / "sn", "train", points=M)


def test_damaged_bytes_in_an_hdf5_are_refused_as_a_damaged_file_without_a_numpy_warning(tmp_path: Path) -> None:
    modelnet_hdf5(tmp_path / "m")
    data = clouds(np.random.default_rng(2), 3)
    data[1, 5, 0] = np.array([0x7F800001], np.uint32).view(np.float32)[0]  # a signalling NaN, as random bytes make
    write_h5(tmp_path / "m" / "ply_data_test0.h5", data, np.zeros((3, 1), np.uint8))
    with _no_warnings():
        with pytest.raises(NonFiniteCoordinateError) as err:
            load_objects("modelnet40", tmp_path / "m", "test", points=M)
    assert str(err.value).endswith("ply_data_test0.h5 row 1: 1 point(s) with NaN or infinite coordinates (the first "
                                   "is point 5): the file is damaged; re-download or re-extract it")


def test_a_class_list_one_name_short_is_blamed_on_the_list_not_on_a_cloud(tmp_path: Path) -> None:
    modelnet_hdf5(tmp_path / "m")
    (tmp_path / "m" / "shape_names.txt").write_text("\n".join(MODELNET_NAMES[:39]) + "\n")
    with pytest.raises(CorruptFileError, match=r"shape_names\.txt: lists 39 class names, ModelNet40 has 40: "
                                               r"re-extract the download$"):
        load_objects("modelnet40", tmp_path / "m", "train", points=M)


def test_a_short_or_empty_shapenet_part_file_is_refused_naming_its_line_without_numpys_advice(tmp_path: Path) -> None:
    shapenet_part(tmp_path / "sn")
    path = tmp_path / "sn" / SYNSETS["Airplane"] / "test000abcdef.txt"
    lines = path.read_text().splitlines()
    lines[4] = " ".join(lines[4].split()[:6])
    path.write_text("\n".join(lines) + "\n")
    with _no_warnings(), pytest.raises(CorruptFileError) as err:
        load_objects("shapenet_part", tmp_path / "sn", "test", points=M, task="parts")
    assert str(err.value) == f"{path}: line 5 holds 6 values, expected 7: {' '.join(lines[4].split())!r}"
    path.write_text("")
    with _no_warnings(), pytest.raises(CorruptFileError, match=r"test000abcdef\.txt: holds no points"):
        load_objects("shapenet_part", tmp_path / "sn", "test", points=M, task="parts")


def test_an_empty_validation_split_says_why_and_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"^shapes: the 'val' split holds no clouds: it holds every 10th training "
                                         r"cloud of each class, and no class has 10; use the test split"):
        load_objects("shapes", split="val", points=M, size=3)


@contextmanager
def _no_warnings() -> Iterator[None]:
    """Any warning in the block fails the test (a refusal is the message alone)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
