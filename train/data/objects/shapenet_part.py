"""ShapeNet-part (Yi et al., SIGGRAPH Asia 2016) in PointNet++'s release
``shapenetcore_partanno_segmentation_benchmark_v0_normal``: 16 categories, 50 part ids.

Layout: ``synsetoffset2category.txt`` (one ``Category<TAB>synset`` a line, e.g.
``Airplane 02691156``; the category id is the line number, the release lists them in
alphabetical order), ``<synset>/<shape>.txt`` with one point a line ``x y z nx ny nz part``
(the part id global over the 50 parts, written as a float; the normals are not read), and
``train_test_split/shuffled_{train,val,test}_file_list.json``, each a JSON list of
``shape_data/<synset>/<shape>``. The three lists are the splits ``train``, ``val``, ``test``
(``trainval`` = train then val). Each category owns a contiguous range of part ids, in category
order: :data:`PART_COUNTS` (Airplane 0-3, Bag 4-5, ..., Table 47-49); a point whose part is not
of its shape's category is refused naming the file. Part names are ``Category/part<k>``: the
release names no part.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..validation import CorruptFileError, inside_hint, layout_error, require_dir
from .cloud import SPLIT_CODES, RawClouds
from .text_files import read_text_points

PART_COUNTS = {"Airplane": 4, "Bag": 2, "Cap": 2, "Car": 4, "Chair": 4, "Earphone": 3, "Guitar": 3, "Knife": 2,
               "Lamp": 4, "Laptop": 2, "Motorbike": 6, "Mug": 2, "Pistol": 3, "Rocket": 3, "Skateboard": 3,
               "Table": 3}
CATEGORY_LIST = "synsetoffset2category.txt"
SHAPENET_PART_LAYOUT = """  <root>/   (shapenetcore_partanno_segmentation_benchmark_v0_normal/ as extracted)
    synsetoffset2category.txt                       Airplane<TAB>02691156 ...
    02691156/1021a0914a7207aff927ed529ad90a11.txt   x y z nx ny nz part per line
    train_test_split/shuffled_train_file_list.json  ["shape_data/02691156/1021a...", ...]
                     shuffled_val_file_list.json, shuffled_test_file_list.json"""


def shapenet_part_classes(root: Path) -> tuple[tuple[str, ...], dict[str, int]]:
    """The category names in id order and the synset -> category id map of ``root``."""
    path = require_dir(root, "shapenet_part", SHAPENET_PART_LAYOUT) / CATEGORY_LIST
    if not path.is_file():
        raise layout_error(f"shapenet_part category list {str(path)!r} is missing"
                           f"{inside_hint(root, (CATEGORY_LIST,))}", SHAPENET_PART_LAYOUT)
    names, synsets = [], {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[0] not in PART_COUNTS:
            raise CorruptFileError(f"{path}: line {number} is not 'Category synset' of the 16 categories: {line!r}")
        synsets[fields[1]] = len(names)
        names.append(fields[0])
    if names != sorted(PART_COUNTS):
        raise CorruptFileError(f"{path}: lists {names}; the release lists the 16 categories {sorted(PART_COUNTS)}")
    return tuple(names), synsets


def part_table(classes: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    """Part names ``Category/part<k>`` and the category of each of the 50 part ids."""
    names = [f"{c}/part{k}" for c in classes for k in range(PART_COUNTS[c])]
    owners = np.repeat(np.arange(len(classes)), [PART_COUNTS[c] for c in classes])
    return tuple(names), owners


def read_shapenet_part(root: Path, split: str) -> RawClouds:
    """``split`` (:data:`.cloud.SPLITS`) of the release at ``root``: the clouds and their parts."""
    classes, synsets = shapenet_part_classes(root)
    _, owners = part_table(classes)
    lists = ("train", "val") if split == "trainval" else (split,)
    return RawClouds.concat([_read_list(root, name, synsets, owners) for name in lists])


def _read_list(root: Path, name: str, synsets: dict[str, int], owners: np.ndarray) -> RawClouds:
    listing = root / "train_test_split" / f"shuffled_{name}_file_list.json"
    if not listing.is_file():
        raise layout_error(f"shapenet_part split list {str(listing)!r} is missing", SHAPENET_PART_LAYOUT)
    try:
        entries = json.loads(listing.read_text())
    except json.JSONDecodeError as err:
        raise CorruptFileError(f"{listing}: not a JSON list ({err})") from err
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise CorruptFileError(f"{listing}: must be a JSON list of 'shape_data/<synset>/<shape>' strings")
    paths, labels = [], []
    for entry in entries:
        fields = entry.split("/")
        if len(fields) != 3 or fields[1] not in synsets:
            raise CorruptFileError(f"{listing}: entry {entry!r} is not 'shape_data/<synset>/<shape>' of a "
                                   f"listed category")
        path = root / fields[1] / f"{fields[2]}.txt"
        if not path.is_file():
            raise layout_error(f"shapenet_part: {listing} names {entry!r}, but {str(path)!r} is missing",
                               SHAPENET_PART_LAYOUT)
        paths.append(path)
        labels.append(synsets[fields[1]])
    keys = np.stack([np.full(len(paths), SPLIT_CODES[name]), np.arange(len(paths))], axis=1)

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        values = read_text_points(paths[i], None, 7)
        parts = values[:, 6].astype(np.int64)
        wrong = (parts != values[:, 6]) | (parts < 0) | (parts >= len(owners))
        wrong[~wrong] = owners[parts[~wrong]] != labels[i]
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise CorruptFileError(f"{paths[i]}: line {row + 1} has part {values[row, 6]:g}, not a part id of "
                                   f"its category (ids {np.flatnonzero(owners == labels[i]).tolist()})")
        return values[:, :3], parts

    return RawClouds(np.asarray(labels, dtype=np.int64), keys, [str(p) for p in paths], load)
