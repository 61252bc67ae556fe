"""The scans a prediction reads, and their voxelisation in loader workers (decision 50).

A source is a split the project reads (:func:`open_split`: the data set's own loader, unlabelled
test splits included) or a list of scan files (:class:`FileSource`). Each scan is read once in a
DataLoader worker and put through the evaluation pipeline of the checkpoint's data set
(:func:`train.runner.datasets.eval_pipeline`; with test-time augmentation once per fixed view, each view
voxelised on its own, as :func:`train.evaluation.evaluate.evaluate` does); :class:`PredictionCollate` batches
each view and builds its ``BatchPlan`` there (decision 47). A scan that cannot be read comes back
as its error, for the loop to name and count (``--skip-bad-scans``) or to stop on.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from train.data.lidar.folder import SPEC_FILE, FolderDescription, has_wildcard
from train.data.labels import IGNORE_INDEX
from train.data.lidar.nuscenes import nuscenes_strength
from train.data.lidar.scan_files import INTENSITY, SCAN_SUFFIXES, SENSOR_FRAME, read_scan
from train.prediction.layouts import LABELLED_PLY_PROPERTIES, NUSCENES_LABEL_SUFFIX, PROBS_SUFFIX
from train.data.validation import BadScanError, make_sample, model_input
from train.runner.datasets import dataset_class


class ScanSource(Protocol):
    """What a prediction needs of its scans: how many, each one's name before it is read (the
    name its outputs are filed under), and the scan itself (the loader sample dict)."""

    def __len__(self) -> int: ...

    def scan_name(self, index: int) -> str: ...

    def load(self, index: int) -> dict: ...


def open_split(dataset: str, root: str | Path, split: str, nuscenes_version: str,
               folder: FolderDescription | None, labelled: bool = False) -> ScanSource:
    """Split ``split`` of ``dataset`` under ``root``, untransformed, in the loader's own split names
    (Waymo and the synthetic set: training, validation, testing; nuScenes: train, val, test, ...
    of ``nuscenes_version``; SemanticKITTI: train, val, test; a scan folder: train, val, test).
    Neither labelling command uses a split's LiDAR labels, so none are read (``segment`` -1): a
    download without its label files (SemanticKITTI's camera frames of sequences 00-10, a scan
    folder's split) is labelled all the same, unless ``labelled`` (``--score``); nuScenes reads
    what its tables list. A scan folder whose ``dataset.yaml`` gives other classes or another
    feature than ``folder`` (what the model expects) is refused in one line."""
    cls = dataset_class(dataset)
    if dataset == "nuscenes":
        return cls(root, split, version=nuscenes_version)
    source = cls(root, split, labelled=labelled)
    if folder is not None and (differences := folder.differences(source.description)):
        raise ValueError(f"{Path(root) / SPEC_FILE} gives {'; '.join(differences)}: the model was trained on "
                         "another folder description")
    return source


@dataclass(frozen=True)
class PredictionSet:
    """The scans ``indices`` of ``source``, each read once and put through every pipeline of
    ``pipelines`` (one per test-time view). An item is ``{"index", "name", "views", "points"}``
    (``points``: the scan's x, y, z in float64 exactly as its file holds them, the sample's ``xyz``,
    decision 53, when ``keep_points``; ``views`` empty for a scan of no points, whose labels
    are empty too) or, for a scan that cannot be read, ``{"index", "name", "error"}``. A map-style
    data set as torch's DataLoader reads it (and the labelling through onnxruntime, which never
    imports torch, decision 55)."""

    source: ScanSource
    pipelines: tuple[Callable[[dict, np.random.Generator], dict], ...]
    indices: tuple[int, ...]
    keep_points: bool

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict[str, Any]:
        index = self.indices[k]
        name = self.source.scan_name(index)
        try:
            sample = self.source.load(index)
        except BadScanError as err:
            return {"index": index, "name": name, "error": str(err)}
        # the evaluation pipelines draw nothing; the generator is the one a loader would pass
        views = [pipeline(model_input(sample), np.random.default_rng([0, 0, index])) for pipeline in self.pipelines
                 if len(sample["coord"])]
        return {"index": index, "name": name, "views": views,
                "points": sample["xyz"] if self.keep_points else None}


@dataclass(frozen=True)
class PredictionCollate:
    """Batches the readable scans of a list of :class:`PredictionSet` items: ``views`` holds one
    collated, planned batch per test-time view (``collate``: :func:`train.engine.input_pipeline.planned_collate`);
    ``scans`` the scans' names and points; ``empty`` the (name, points) of the scans of no points,
    which no view holds; ``bad`` the (name, error) of the others."""

    collate: Callable[[Sequence[dict]], dict[str, Any]]
    num_views: int

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        good = [item for item in items if item.get("views")]
        return {
            "views": [self.collate([item["views"][v] for item in good]) for v in range(self.num_views)] if good else [],
            "scans": [(item["name"], item["points"]) for item in good],
            "empty": [(item["name"], item["points"]) for item in items if item.get("views") == []],
            "bad": [(item["name"], item["error"]) for item in items if "error" in item],
        }


@dataclass(frozen=True)
class FileSource:
    """Scan files (:func:`train.data.lidar.scan_files.read_scan`) read as scans of ``dataset``: x, y, z
    and the fourth column, ``intensity``, as that data set stores it (Waymo and the synthetic set:
    the strength itself; nuScenes: the intensity 0..255, divided by 255 as its loader does;
    SemanticKITTI: the remission); for a scan folder's model, the column ``folder`` names divided
    by its scale, as the folder's loader reads it (:meth:`FolderDescription.strength`). x, y, z
    are taken in the folder's ``frame`` (the published sets': ``sensor``), as its loader takes them,
    and the sample keeps their origin and the file's x, y, z as read (decision 53). A file without
    that column cannot feed the model: a :class:`BadScanError` naming it."""

    paths: tuple[Path, ...]
    names: tuple[str, ...]
    dataset: str
    folder: FolderDescription | None

    def __len__(self) -> int:
        return len(self.paths)

    def scan_name(self, index: int) -> str:
        return self.names[index]

    def load(self, index: int) -> dict:
        path = self.paths[index]
        scan = read_scan(path)
        if self.folder is not None:
            strength = self.folder.strength(scan)
        else:
            intensity = scan.features((INTENSITY,))
            strength = nuscenes_strength(intensity) if self.dataset == "nuscenes" else intensity
        coord, origin = scan.local(self.folder.frame if self.folder is not None else SENSOR_FRAME)
        return make_sample(coord, strength, np.full(len(coord), IGNORE_INDEX), self.names[index], path, origin,
                           scan.xyz)


def list_scan_files(inputs: Sequence[str], out: Path) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    """The scan files of ``inputs`` (files, folders searched recursively, wildcards with ``**``)
    and the name each one's outputs are filed under: its path relative to the folder given (for a
    wildcard, the folder before its first wildcard; for a file, its own folder), without the
    suffix. A path that exists is read as it is, though it holds ``[``, ``?`` or ``*``. A search
    (a folder, a wildcard) leaves out what lies in ``out`` (a rerun into an output folder inside
    the input folder continues), label files and the outputs of earlier predictions
    (:func:`_not_a_scan`). One-line errors for an input that names nothing, for two files of one
    name and for a file named on its own that lies in ``out`` (outputs would be read as scans)."""
    paths: list[Path] = []
    names: list[str] = []
    for given in inputs:
        path = Path(given)
        if path.is_file():
            if path.suffix.lower() not in SCAN_SUFFIXES:
                raise ValueError(f"--input {given}: {path.suffix or 'no suffix'} is not a scan file suffix "
                                 f"({', '.join(SCAN_SUFFIXES)})")
            if out.resolve() in path.resolve().parents:
                raise ValueError(f"--input names {path}, which lies in --out {out}: outputs would be read as scans; "
                                 "write them elsewhere")
            root, found = path.parent, [path]
        else:
            if path.is_dir():
                root, pattern = path, "**/*"
            elif has_wildcard(given):
                root, pattern = _until_wildcard(path.parts)
            else:
                raise FileNotFoundError(f"--input {given}: no such file or folder")
            found = sorted(root / p for p in glob.glob(pattern, root_dir=root, recursive=True))
            found = [p for p in found if p.is_file() and p.suffix.lower() in SCAN_SUFFIXES
                     and out.resolve() not in p.resolve().parents and not _not_a_scan(p)]
        if not found:
            raise FileNotFoundError(f"--input {given} names no scan file ({', '.join(SCAN_SUFFIXES)})")
        paths += found
        names += [p.relative_to(root).with_suffix("").as_posix() for p in found]
    first: dict[str, Path] = {}
    for path, name in zip(paths, names):
        if name in first and first[name] != path:
            advice = ("rename one, or give only one of them" if first[name].parent == path.parent else
                      "give their common folder instead")
            raise ValueError(f"--input: {first[name]} and {path} would both be labelled as {name!r}; {advice}")
        first.setdefault(name, path)
    unique = {name: path for name, path in zip(names, paths)}  # a file named twice is read once
    return tuple(unique.values()), tuple(unique)


def _not_a_scan(path: Path) -> bool:
    """Whether a file found by a search is a label file or an earlier prediction's output rather
    than a scan: a ``.npy`` of one dimension (labels, one id per point, often beside ``.npy``
    scans), a prediction's probabilities (``<name>.probs.npy``), a nuScenes submission's
    ``_lidarseg.bin`` or the labelled PLY of ``--format ply`` (:data:`LABELLED_PLY_PROPERTIES`). A
    file named on its own is always read, and refused there if it is not a scan."""
    name = path.name.lower()
    if name.endswith((PROBS_SUFFIX, NUSCENES_LABEL_SUFFIX)):
        return True
    if path.suffix.lower() == ".ply":
        return _ply_properties(path) == LABELLED_PLY_PROPERTIES
    if path.suffix.lower() != ".npy":
        return False
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).ndim == 1  # reads the header only
    except (ValueError, OSError, EOFError):
        return False  # not a readable array: read as a scan, which names what is wrong with it


def _ply_properties(path: Path) -> tuple[str, ...]:
    """The vertex property names of a PLY file's header (empty if it has none or is not a PLY)."""
    with path.open("rb") as fh:
        header = fh.read(4096).split(b"end_header")[0].decode("ascii", "replace").splitlines()
    element, names = None, []
    for line in header:
        words = line.split()
        if words[:1] == ["element"]:
            element = words[1:2]
        elif words[:1] == ["property"] and element == ["vertex"]:
            names.append(words[-1])
    return tuple(names)


def _until_wildcard(parts: Sequence[str]) -> tuple[Path, str]:
    """A wildcard's folder (its parts up to the first one with ``*``, ``?`` or ``[`` that is not
    itself an existing folder's name) and the pattern of the rest, matched below it."""
    root = Path(".")
    for i, part in enumerate(parts):
        if has_wildcard(part) and not (root / part).is_dir():
            return root, str(Path(*parts[i:]))
        root = root / part
    return root, "."
