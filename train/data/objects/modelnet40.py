"""ModelNet40 (Wu et al., CVPR 2015), 40 classes, 9,843 training and 2,468 test shapes, read in
either of its two common downloads; the layout is recognised by its list files.

``modelnet40_ply_hdf5_2048`` (PointNet's HDF5 release, 2,048 points a shape): ``shape_names.txt``
(one class name a line, the class id is the line number), ``train_files.txt`` / ``test_files.txt``
(one HDF5 file a line, written as a path of PointNet's repository such as
``data/modelnet40_ply_hdf5_2048/ply_data_train0.h5``: the file is looked up by its name in the
folder), and the HDF5 files (:mod:`.h5_files`).

``modelnet40_normal_resampled`` (PointNet++'s release, 10,000 points a shape):
``modelnet40_shape_names.txt`` (class names, in class-id order), ``modelnet40_train.txt`` /
``modelnet40_test.txt`` (one shape id a line, e.g. ``night_stand_0001``: the class is the id
before its last ``_``) and ``<class>/<shape id>.txt`` with one point a line,
``x,y,z,nx,ny,nz`` (the normals are not read).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..validation import CorruptFileError, inside_hint, layout_error, require_dir
from .cloud import SPLIT_CODES, RawClouds, standard_split
from .h5_files import read_h5_clouds
from .text_files import read_text_points

HDF5_FOLDER, NORMAL_FOLDER = "modelnet40_ply_hdf5_2048", "modelnet40_normal_resampled"
CLASS_COUNT = 40
LISTS = (("shape_names.txt", "train_files.txt"), ("modelnet40_shape_names.txt", "modelnet40_train.txt"))
MODELNET40_LAYOUT = f"""  <root>/  either {HDF5_FOLDER}/ as extracted:
    shape_names.txt  train_files.txt  test_files.txt  ply_data_train0.h5 ... ply_data_test1.h5
  or {NORMAL_FOLDER}/ as extracted:
    modelnet40_shape_names.txt  modelnet40_train.txt  modelnet40_test.txt
    airplane/airplane_0001.txt ...   (x,y,z,nx,ny,nz per line)"""


def read_lines(path: Path, what: str) -> list[str]:
    """The non-blank lines of a list file, stripped; a missing file is a layout error."""
    if not path.is_file():
        raise layout_error(f"modelnet40 {what} {str(path)!r} is missing", MODELNET40_LAYOUT)
    return [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]


def modelnet40_classes(root: Path) -> tuple[str, ...]:
    """The 40 class names of the download at ``root`` (either layout); a list of another length is
    refused naming it (a class id past its end would otherwise be blamed on a cloud)."""
    root = require_dir(root, "modelnet40", MODELNET40_LAYOUT)
    path = root / _names_file(root)
    names = read_lines(path, "class list")
    if len(names) != CLASS_COUNT:
        raise CorruptFileError(f"{path}: lists {len(names)} class names, ModelNet40 has "
                               f"{CLASS_COUNT}: re-extract the download")
    return tuple(names)


def read_modelnet40(root: Path, split: str) -> RawClouds:
    """``split`` (:data:`.cloud.SPLITS`) of the ModelNet40 download at ``root``, either layout."""
    names_file = _names_file(root)
    if names_file == "shape_names.txt":
        return standard_split(split, lambda s: _read_hdf5(root, s))
    classes = {name: i for i, name in enumerate(modelnet40_classes(root))}
    return standard_split(split, lambda s: _read_normal(root, s, classes))


def _names_file(root: Path) -> str:
    for names, listing in LISTS:
        if (root / names).is_file() and (root / listing).is_file():
            return names
    hint = inside_hint(root, tuple(names for names, _ in LISTS))
    raise layout_error(f"modelnet40: {str(root)!r} holds neither layout's class and split lists{hint}",
                       MODELNET40_LAYOUT)


def _read_hdf5(root: Path, split: str) -> RawClouds:
    listing = root / f"{'train' if split == 'trainval' else 'test'}_files.txt"
    parts, start = [], 0
    for line in read_lines(listing, "file list"):
        path = root / Path(line).name
        if not path.is_file():
            raise layout_error(f"modelnet40: {listing} names {line!r}, but {str(path)!r} is missing",
                               MODELNET40_LAYOUT)
        parts.append(read_h5_clouds(path, SPLIT_CODES[split], start))
        start += len(parts[-1])
    return RawClouds.concat(parts)


def _read_normal(root: Path, split: str, classes: dict[str, int]) -> RawClouds:
    listing = root / f"modelnet40_{'train' if split == 'trainval' else 'test'}.txt"
    ids = read_lines(listing, "shape list")
    paths, labels = [], []
    for shape in ids:
        name = shape.rsplit("_", 1)[0]
        if name not in classes:
            raise CorruptFileError(f"{listing}: shape {shape!r} is of no class of modelnet40_shape_names.txt")
        path = root / name / f"{shape}.txt"
        if not path.is_file():
            raise layout_error(f"modelnet40: {listing} names {shape!r}, but {str(path)!r} is missing",
                               MODELNET40_LAYOUT)
        paths.append(path)
        labels.append(classes[name])
    keys = np.stack([np.full(len(ids), SPLIT_CODES[split]), np.arange(len(ids))], axis=1)
    return RawClouds(np.asarray(labels, dtype=np.int64), keys, [str(p) for p in paths],
                     lambda i: (read_text_points(paths[i], ",", 6)[:, :3], None))

