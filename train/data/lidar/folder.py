"""A folder of one's own scans as a data set (``--dataset folder``, guide: ``docs/own-data.md``).

The root holds scan files of any format of :mod:`train.data.lidar.scan_files` (``SCAN_SUFFIXES``), their
per-point labels (a label file beside each scan or a field inside it), and ``dataset.yaml``::

    classes: [ground, vegetation, building, car]      # train ids 0..K-1, in this order
    label_map: {1: 0, 2: 0, 5: 1, 6: 2, 10: 3}         # raw id -> train id (-1: ignore)
    ignore: [0, 7]                                     # raw ids that are ignored (optional)
    labels: {file: "{stem}.label"}                     # or {field: classification}
    splits:                                            # globs (relative to the root) or file lists
      train: ["train/*.ply"]
      val: ["val/*.ply"]
      test: ["test/*.ply"]                             # optional; labelled like the others
      unlabelled: ["raw/**/*.ply"]                     # optional; read without labels (decision 57)
    feature: intensity                                 # the column the model reads beside x, y, z
    feature_scale: 255.0                               # strength = feature / feature_scale
    frame: sensor                                      # or tile: what x, y, z are measured from

``labels.file`` is a path relative to the scan's folder in which ``{stem}`` stands for the scan's
name without its suffix (``../labels/{stem}.label`` for a SemanticKITTI-like tree); ``labels.field``
names a PLY property, LAS dimension or npz key. ``feature`` is one column name of the scans
(``intensity``, ``red``, any PLY property) or ``null``: the PTv3 models read four channels, x, y, z
and one strength (decision 51), and without a feature the strength is 0 for every point.
``frame`` (decision 53, :meth:`~train.data.lidar.scan_files.Scan.local`) says what the x, y, z the model
reads are measured from: ``sensor`` (the default) as the file stores them, scans around their
sensor as the published sets (a LAS file: from its header offset); ``tile``: each scan from the
centre of its bounding box in x, y and its lowest z, in whole metres (tiles in survey coordinates).
Each sample keeps that origin (``origin``) and the file's x, y, z as read (``xyz``, float64), which
outputs that carry coordinates write.

Cameras (decision 58's files): a scan ``<dir>/<stem>.<suffix>`` with images has them listed in
``<dir>/<stem>/cameras.json``, image paths relative to the root and ``scan_to_camera`` from the
scan file's own frame (its x, y, z as stored), so ``train.image_labels --dataset folder`` labels
one's own fleet's scans from its cameras and a camera teacher trains on them.

What a model trained on the folder expects of a scan and what its train ids mean (the classes,
the feature and its scale, the frame, the label map) is the folder's :class:`FolderDescription`; every
checkpoint of a folder run keeps it as plain values (``extra["folder"]``), so ``train.predict``
labels new scans without the training folder (decision 51).

Bad folders get one line each: ``dataset.yaml`` missing or malformed, a split that matches no scan
(:class:`~train.data.validation.DatasetLayoutError`); a scan that cannot be read, a label file of
another point count, or raw ids that the map does not list (:class:`UnmappedLabelError`) are
:class:`~train.data.validation.BadScanError` naming the file, which ``--skip-bad-scans`` skips.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..base import PointCloudDataset, Transform
from ..cameras.camera import Camera, read_camera_list
from ..labels import IGNORE_INDEX, LearningMap
from .scan_files import FRAMES, SCAN_SUFFIXES, SENSOR_FRAME, Scan, read_labels, read_scan
from ..validation import BadScanError, CorruptFileError, DatasetLayoutError, make_sample, require_dir

SPEC_FILE = "dataset.yaml"
FOLDER_SPLITS: tuple[str, ...] = ("train", "val", "test", "unlabelled")
REQUIRED_SPLITS: tuple[str, ...] = ("train", "val")
_KEYS = frozenset({"classes", "label_map", "ignore", "labels", "splits", "feature", "feature_scale", "frame"})
FOLDER_LAYOUT = f"""  <root>/
    {SPEC_FILE}             classes, label_map, labels, splits, feature (docs/own-data.md)
    train/scan_0001.ply      scans: {", ".join(SCAN_SUFFIXES)}
    train/scan_0001.label    per-point labels (or a label field inside the scan)
    val/..."""


class UnmappedLabelError(BadScanError):
    """A scan's labels hold raw ids that ``dataset.yaml`` neither maps nor ignores."""


@dataclass(frozen=True)
class FolderDescription:
    """What a model trained on a scan folder expects and predicts: ``classes`` (train ids 0..K-1),
    the ``feature`` column read beside x, y, z (None: strength 0) divided by ``feature_scale``,
    the ``frame`` x, y, z are measured in (``FRAMES``), and ``label_map`` (raw id -> train id, -1
    for the ignored ids). :meth:`plain` is its form in a
    checkpoint (plain values, read with ``weights_only``), :func:`folder_description` reads it back."""

    classes: tuple[str, ...]
    label_map: dict[int, int]
    feature: str | None
    feature_scale: float
    frame: str

    def strength(self, scan: Scan) -> np.ndarray:
        """The (N, 1) float32 strength of ``scan``: its ``feature`` column / ``feature_scale``; a scan
        without that column is a :class:`~train.data.validation.CorruptFileError` naming it."""
        if self.feature is None:
            return np.zeros((len(scan.xyz), 1), np.float32)
        if self.feature not in scan.columns:
            raise CorruptFileError(f"scan file {str(scan.path)!r} has no column {self.feature!r}, the feature the "
                                   f"model reads ({SPEC_FILE}: feature: {self.feature}); it has {list(scan.columns)}")
        return scan.features([self.feature]) / np.float32(self.feature_scale)

    def plain(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "label_map": dict(self.label_map), "feature": self.feature,
                "feature_scale": self.feature_scale, "frame": self.frame}

    def differences(self, other: FolderDescription) -> list[str]:
        """What of the classes, feature, feature scale and frame ``other`` gives otherwise, one item each."""
        return [f"{key} {theirs!r} (not {ours!r})" for key, ours, theirs in (
            ("classes", list(self.classes), list(other.classes)), ("feature", self.feature, other.feature),
            ("feature_scale", self.feature_scale, other.feature_scale), ("frame", self.frame, other.frame))
            if ours != theirs]


def folder_description(data: Any, where: str) -> FolderDescription:
    """The :class:`FolderDescription` of ``data`` (the keys ``classes``, ``label_map``, optional
    ``ignore``, ``feature``, ``feature_scale``, ``frame`` of a ``dataset.yaml``, or a checkpoint's
    :meth:`FolderDescription.plain`), checked: any problem is one ValueError line naming ``where``.
    Without ``frame`` (a checkpoint written before decision 53) the frame is ``sensor``, which is what
    such a model was trained with."""
    if not isinstance(data, dict) or not {"classes", "label_map"} <= set(data):
        raise ValueError(f"{where}: a scan folder's description needs 'classes' and 'label_map'")
    classes = _string_list(data["classes"], where, "classes")
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"{where}: 'classes' must list at least one class, each once; got {classes}")
    label_map = _label_map(data["label_map"], data.get("ignore", []), len(classes), where)
    feature = data.get("feature", "intensity")
    if feature is not None and not isinstance(feature, str):
        raise ValueError(f"{where}: 'feature' is one column name (or null), got {feature!r}; the models read x, y, "
                         f"z and one strength channel (decision 51)")
    scale = data.get("feature_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"{where}: 'feature_scale' must be a number > 0, got {scale!r}")
    frame = data.get("frame", SENSOR_FRAME)
    if frame not in FRAMES:
        raise ValueError(f"{where}: 'frame' is {' or '.join(FRAMES)} (docs/own-data.md), got {frame!r}")
    return FolderDescription(tuple(classes), label_map, feature, float(scale), frame)


@dataclass(frozen=True)
class FolderSpec:
    """``dataset.yaml`` of a scan folder, checked (see the module docstring for each key)."""

    root: Path
    description: FolderDescription
    label_file: str | None
    label_field: str | None
    splits: dict[str, tuple[str, ...]]

    def scans(self, split: str) -> list[Path]:
        """The scan files of ``split``, sorted. A split that matches none, a file it lists that does
        not exist, two scans of one name and a scan it shares with another split are layout errors."""
        if split not in self.splits:
            raise DatasetLayoutError(f"folder data set {self.root}: {SPEC_FILE} names no {split!r} split "
                                     f"(it names {sorted(self.splits)})")
        found = self._matches(split)
        if not found:
            raise DatasetLayoutError(f"folder data set {self.root}: split {split!r} ({list(self.splits[split])}) "
                                     f"matches no scan file ({', '.join(SCAN_SUFFIXES)}); fix 'splits' in "
                                     f"{self.root / SPEC_FILE}")
        named: dict[Path, Path] = {}
        for path in sorted(found):  # a scan's name is its path without the suffix: outputs are filed by it
            if (first := named.setdefault(path.with_suffix(""), path)) != path:
                raise DatasetLayoutError(f"folder data set {self.root}: split {split!r} holds {str(first)!r} and "
                                         f"{str(path)!r}, two scans of one name (their predictions would be one "
                                         f"file): rename one, or leave one out of 'splits' in {self.root / SPEC_FILE}")
        for other in sorted(set(self.splits) - {split}):
            if shared := sorted(found & self._matches(other)):
                raise DatasetLayoutError(f"folder data set {self.root}: {str(shared[0])!r} lies in split {split!r} "
                                         f"and in split {other!r} ({len(shared)} scan(s) in both); a scan belongs "
                                         f"to one split: fix 'splits' in {self.root / SPEC_FILE}")
        return sorted(found)

    def _matches(self, split: str) -> set[Path]:
        """The scan files ``split``'s patterns match: a pattern that names an existing file is that
        file (though its name holds ``[``, ``?`` or ``*``), one without wildcards that names none is
        a layout error, the others are globs below the root (whose own name may hold ``[``)."""
        found: set[Path] = set()
        for pattern in self.splits[split]:
            if (self.root / pattern).is_file():
                matches = [pattern]
            elif not has_wildcard(pattern):
                raise DatasetLayoutError(f"folder data set {self.root}: split {split!r} lists {pattern!r}, which "
                                         f"does not exist; fix 'splits' in {self.root / SPEC_FILE}")
            else:
                matches = glob.glob(pattern, root_dir=self.root, recursive=True)
            found.update(p for p in (Path(os.path.normpath(self.root / m)) for m in matches)
                         if p.is_file() and p.suffix.lower() in SCAN_SUFFIXES)
        return found - {label for p in found if (label := self.label_path(p)) not in (None, p)}  # .npy labels

    def label_path(self, scan: Path) -> Path | None:
        """The label file of ``scan`` (``labels.file`` with ``{stem}`` filled in, relative to its
        folder), or None where the labels are a field inside the scans."""
        if self.label_file is None:
            return None
        return Path(os.path.normpath(scan.parent / self.label_file.format(stem=scan.stem)))


def read_folder_spec(root: str | Path) -> FolderSpec:
    """Read and check ``<root>/dataset.yaml``; any problem is one line naming the file and the key."""
    import yaml

    root = require_dir(Path(root), "folder", FOLDER_LAYOUT)
    path = root / SPEC_FILE
    if not path.is_file():
        raise DatasetLayoutError(f"folder data set {root} has no {SPEC_FILE}: write one (classes, label_map, "
                                 f"labels, splits, feature; docs/own-data.md)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of the keys {sorted(_KEYS)}")
    unknown = set(data) - _KEYS
    missing = {"classes", "label_map", "labels", "splits"} - set(data)
    if unknown or missing:
        raise ValueError(f"{path}: " + "; ".join(
            ([f"unknown key(s) {sorted(unknown)}"] if unknown else []) + ([f"missing key(s) {sorted(missing)}"]
                                                                          if missing else []))
            + f" (keys: {sorted(_KEYS)})")
    description = folder_description(data, str(path))
    labels = data["labels"]
    if not (isinstance(labels, dict) and len(labels) == 1 and set(labels) <= {"file", "field"}
            and isinstance(next(iter(labels.values())), str) and _names_each_scans_own_file(labels.get("file"))):
        raise ValueError(f"{path}: 'labels' must be {{file: \"{{stem}}.label\"}} (a label file beside each scan, "
                         f"{{stem}} its name without the suffix, the only field in braces) or {{field: NAME}} (a "
                         f"field inside each scan), got {labels!r}")
    splits = data["splits"]
    if not isinstance(splits, dict) or set(splits) - set(FOLDER_SPLITS) or set(REQUIRED_SPLITS) - set(splits):
        raise ValueError(f"{path}: 'splits' must map train and val (and optionally test and unlabelled) to globs or "
                         f"file lists, "
                         f"got {splits!r}")
    patterns = {k: tuple(_string_list(v, str(path), f"splits.{k}")) for k, v in splits.items()}
    outside = [p for ps in patterns.values() for p in ps if Path(p).is_absolute() or ".." in Path(p).parts]
    if outside:  # a scan's name is its path below the root (outputs, logs, the pictures)
        raise ValueError(f"{path}: split pattern {outside[0]!r} reaches outside the folder; 'splits' names scans "
                         f"below {root} by paths relative to it")
    return FolderSpec(root, description, labels.get("file"), labels.get("field"), patterns)


def has_wildcard(pattern: str) -> bool:
    """Whether ``pattern`` holds a glob wildcard (``*``, ``?`` or ``[``): a path that exists is read
    as it is all the same (a folder split's list, ``train.predict --input``)."""
    return any(c in pattern for c in "*?[")


class FolderDataset(PointCloudDataset):
    """The scans of one split (``"train"``, ``"val"``, ``"test"``, ``"unlabelled"``) of a folder described by
    ``dataset.yaml``; sample names are the scan paths relative to the root, without suffix. ``labelled``
    (default: every split but ``unlabelled``) False reads no label file and no label field: segment -1
    (an unlabelled split, decision 57, or a prediction, which needs no labels)."""

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None,
                 seed: int = 0, labelled: bool | None = None) -> None:
        super().__init__(transform, seed)
        self.labelled = split != "unlabelled" if labelled is None else labelled
        self.spec = read_folder_spec(root)
        self.description = self.spec.description
        self.class_names = self.description.classes
        self.scan_paths = self.spec.scans(split)
        fieldless = [p for p in self.scan_paths if p.suffix.lower() in (".bin", ".npy")]
        if self.labelled and self.spec.label_field is not None and fieldless:
            raise ValueError(f"{self.spec.root / SPEC_FILE}: labels.field {self.spec.label_field!r}, but "
                             f"{str(fieldless[0])!r} is a {fieldless[0].suffix} scan, which holds no fields: give "
                             f"its labels as files (labels: {{file: \"{{stem}}.label\"}})")
        self._map = LearningMap(f"folder data set {self.spec.root}", self.description.label_map,
                                len(self.class_names))

    def __len__(self) -> int:
        return len(self.scan_paths)

    def checkpoint_entries(self) -> dict[str, Any]:
        return {"folder": self.description.plain()}

    def scan_name(self, index: int) -> str:
        """The path of scan ``index`` relative to the root, without its suffix, known before it is read."""
        return str(self.scan_paths[index].relative_to(self.spec.root).with_suffix(""))

    def unused_labels(self) -> str | None:
        if self.labelled:
            return None
        if self.spec.label_file is not None:
            found = sum(1 for p in self.scan_paths
                        if (label := self.spec.label_path(p)) not in (None, p) and label.is_file())
            return f"{found} of its {len(self.scan_paths)} scans have a label file" if found else None
        first = self.scan_paths[0]  # a label field: the first scan tells
        try:
            read_scan(first, self.spec.label_field)
        except (BadScanError, ValueError):
            return None
        return f"its first scan {first.name} holds the label field {self.spec.label_field!r}"

    def cameras(self, index: int) -> list[Camera]:
        """The cameras of scan ``index`` from ``<its path without the suffix>/cameras.json`` (none
        without one; module docstring)."""
        return read_camera_list(self.scan_paths[index].with_suffix(""))

    def load(self, index: int) -> dict:
        path = self.scan_paths[index]
        scan = read_scan(path, self.spec.label_field if self.labelled else None)
        label_path = self.spec.label_path(path)
        if not self.labelled:
            raw, source = None, path
        elif label_path is not None:
            if label_path == path or not label_path.is_file():
                raise BadScanError(f"label file {str(label_path)!r} of scan {str(path)!r} does not exist or is the "
                                   f"scan itself (labels.file in {SPEC_FILE} is {self.spec.label_file!r})")
            raw, source = read_labels(label_path, len(scan.xyz)), label_path
        else:
            raw, source = scan.labels, path
        coord, origin = scan.local(self.description.frame)
        segment = np.full(len(coord), IGNORE_INDEX) if raw is None else self._train_ids(raw, source)
        return make_sample(coord, self.description.strength(scan), segment, self.scan_name(index), path, origin,
                           scan.xyz)

    def _train_ids(self, raw: np.ndarray, source: Path) -> np.ndarray:
        train, known = self._map.lookup(raw, source)
        unmapped = ~known
        if unmapped.any():
            ids = np.unique(raw[unmapped])
            shown = ", ".join(map(str, ids[:10])) + (" ..." if ids.size > 10 else "")
            raise UnmappedLabelError(f"{str(source)!r}: {int(unmapped.sum())} point(s) carry raw label id(s) {shown} "
                                     f"that {SPEC_FILE} neither maps (label_map) nor ignores (ignore)")
        return train


def _names_each_scans_own_file(template: str | None) -> bool:
    """Whether ``labels.file`` (None: labels in a field) names a label file of each scan's own:
    it holds ``{stem}`` and no other field (``{name}`` would end the reading in a KeyError)."""
    if template is None:
        return True
    try:
        return template.format(stem="a") != template.format(stem="b")
    except (KeyError, IndexError, ValueError):
        return False


def _string_list(value: Any, path: str, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{path}: {key!r} must be a list of strings, got {value!r}")
    return value


def _label_map(table: Any, ignore: Any, num_classes: int, path: str) -> dict[int, int]:
    """Raw id -> train id from ``label_map`` and ``ignore`` (any integer raw ids; train ids in -1..K-1)."""
    if not isinstance(table, Mapping) or not table:
        raise ValueError(f"{path}: 'label_map' must map raw label ids to train ids, got {table!r}")
    if not isinstance(ignore, Sequence) or isinstance(ignore, str):
        raise ValueError(f"{path}: 'ignore' must be a list of raw label ids, got {ignore!r}")
    pairs = [*table.items(), *((raw, IGNORE_INDEX) for raw in ignore)]
    if not all(isinstance(k, int) and isinstance(v, int) and not isinstance(k, bool) for k, v in pairs):
        raise ValueError(f"{path}: label ids must be integers, got label_map {table!r}, ignore {ignore!r}")
    out: dict[int, int] = {}
    for raw, train in pairs:
        if not IGNORE_INDEX <= train < num_classes:
            raise ValueError(f"{path}: raw id {raw} -> {train}: train ids lie in -1..{num_classes - 1} "
                             f"({num_classes} classes)")
        if out.get(raw, train) != train:
            raise ValueError(f"{path}: raw id {raw} is mapped twice ({out[raw]} and {train})")
        out[raw] = train
    return out
