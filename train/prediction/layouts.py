"""Where and how a scan's predicted labels are written, in layouts other tools read (decision 50).

- ``npy``: ``<out>/<name>.npy``, the train ids (int64), one per point of the scan as read;
- ``ply``: ``<out>/<name>.ply``, binary PLY with ``x, y, z`` where the points lie in the scan file
  (its own frame, decision 53: a LAS tile in UTM stays in UTM), the ``label`` and ``red, green,
  blue`` (:func:`train.data.lidar.scan_files.write_labelled_ply`) in the palette of the project's
  pictures (:func:`train.evaluation.palette.class_colours`), so a scan opens coloured in CloudCompare
  or MeshLab on top of its source;
- ``semantic_kitti``: ``<out>/sequences/NN/predictions/NNNNNN.label``, uint32 raw SemanticKITTI
  ids (the train ids through :data:`SEMANTIC_KITTI_INVERSE_MAP`, the benchmark's
  ``learning_map_inv``), as its evaluation scripts read them;
- ``nuscenes``: the lidarseg challenge's submission folder, ``<out>/lidarseg/<split>/<token>_lidarseg.bin``
  (uint8 challenge index: 1..16 are our 16 classes in order, 0 is never predicted) and
  ``<out>/<split>/submission.json`` with the ``meta`` the challenge asks for.

With ``save_probs`` every layout also writes ``<out>/<name>.probs.npy``, the per-class
probabilities (float16, points x classes). Every file is written whole or not at all (a temporary
file in the same folder, then ``os.replace``: :func:`train.runtime.checkpoint.atomic_write`), and an
existing file is never replaced unless ``overwrite``: a scan whose files all exist is done, so a
rerun into the same folder continues with the scans not yet labelled.
"""
from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

import numpy as np

from train.runtime.files import atomic_write
from train.data.lidar.scan_files import npy_bytes, read_scan, write_labelled_ply, write_labels
from train.option_names import PREDICTION_FORMATS

# SemanticKITTI's learning_map_inv: the raw id each of the 19 train ids is written as.
SEMANTIC_KITTI_INVERSE_MAP: tuple[int, ...] = (
    10, 11, 15, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 70, 71, 72, 80, 81,
)
# The lidarseg challenge's meta block: lidar only, no map, no data outside nuScenes' lidarseg.
NUSCENES_SUBMISSION_META: dict[str, bool] = {
    "use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": False,
}
PROBS_SUFFIX = ".probs.npy"  # <name>.probs.npy: the probabilities of --save-probs
NUSCENES_LABEL_SUFFIX = "_lidarseg.bin"  # <token>_lidarseg.bin: a nuScenes submission's labels
# The vertex properties of a --format ply output (train.data.lidar.scan_files.write_labelled_ply), by which
# a later search for scans (train.prediction.inputs.list_scan_files) knows it for an output.
LABELLED_PLY_PROPERTIES: tuple[str, ...] = ("x", "y", "z", "label", "red", "green", "blue")
_KITTI_NAME = re.compile(r"(?:^|/)(\d{2})/(?:velodyne/)?(\d{6})$")


class Layout(ABC):
    """The files of each scan's prediction under ``out``: :meth:`files` lists them (all present:
    the scan is done), :meth:`write` writes them, :meth:`finish` what belongs to the whole run (once,
    by the process that ends it, decision 77)."""

    needs_points = False  # whether write() needs the scan's points

    def __init__(self, out: Path, save_probs: bool, overwrite: bool) -> None:
        self.out, self.save_probs, self.overwrite = Path(out), save_probs, overwrite

    @abstractmethod
    def label_file(self, name: str) -> Path:
        """The labels file of scan ``name`` (ValueError when the layout has no place for it)."""

    @abstractmethod
    def write_labels(self, path: Path, labels: np.ndarray, points: np.ndarray | None) -> None:
        """Write the train ids ``labels`` of the points ``points`` to ``path``, atomically."""

    @abstractmethod
    def read_labels(self, path: Path) -> np.ndarray:
        """The train ids (int64) a labels file ``path`` of this layout holds: what ``--score`` reads."""

    def files(self, name: str) -> list[Path]:
        probs = [self.out / f"{name}{PROBS_SUFFIX}"] if self.save_probs else []
        return probs + [self.label_file(name)]  # the labels last: they mark the scan done

    def done(self, name: str) -> bool:
        return not self.overwrite and all(p.is_file() for p in self.files(name))

    def write(self, name: str, labels: np.ndarray, probs: np.ndarray | None, points: np.ndarray | None) -> None:
        """Write scan ``name``'s files (``probs`` only with ``save_probs``)."""
        if self.save_probs:
            assert probs is not None
            path = self.out / f"{name}{PROBS_SUFFIX}"
            self._write_new(path, lambda: atomic_write(npy_bytes(probs.astype(np.float16)), path))
        path = self.label_file(name)
        self._write_new(path, lambda: self.write_labels(path, labels, points))

    def finish(self) -> None:
        """Write what belongs to the whole run (nothing unless a layout says so)."""

    def _write_new(self, path: Path, write: Callable[[], None]) -> None:
        if self.overwrite or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write()


class NpyLayout(Layout):
    def label_file(self, name: str) -> Path:
        return self.out / f"{name}.npy"

    def write_labels(self, path: Path, labels: np.ndarray, points: np.ndarray | None) -> None:
        write_labels(path, labels)

    def read_labels(self, path: Path) -> np.ndarray:
        return np.load(path, allow_pickle=False).astype(np.int64)


class PlyLayout(Layout):
    needs_points = True

    def __init__(self, out: Path, save_probs: bool, overwrite: bool, num_classes: int) -> None:
        from train.evaluation.palette import class_colours

        super().__init__(out, save_probs, overwrite)
        self.palette = np.round(class_colours(num_classes)[:num_classes] * 255).astype(np.uint8)

    def label_file(self, name: str) -> Path:
        return self.out / f"{name}.ply"

    def write_labels(self, path: Path, labels: np.ndarray, points: np.ndarray | None) -> None:
        assert points is not None
        write_labelled_ply(path, points[:, :3], labels, self.palette)

    def read_labels(self, path: Path) -> np.ndarray:
        labels = read_scan(path, "label").labels
        assert labels is not None
        return labels


class SemanticKITTILayout(Layout):
    def label_file(self, name: str) -> Path:
        sequence, frame = kitti_scan_id(name)
        return self.out / "sequences" / sequence / "predictions" / f"{frame}.label"

    def write_labels(self, path: Path, labels: np.ndarray, points: np.ndarray | None) -> None:
        write_labels(path, np.asarray(SEMANTIC_KITTI_INVERSE_MAP, dtype=np.int64)[labels])

    def read_labels(self, path: Path) -> np.ndarray:
        raw = np.fromfile(path, dtype=np.uint32).astype(np.int64)
        return np.searchsorted(SEMANTIC_KITTI_INVERSE_MAP, raw)  # the map is increasing: raw id -> its train id


def kitti_scan_id(name: str) -> tuple[str, str]:
    """(sequence, frame) of a SemanticKITTI scan named ``"XX/NNNNNN"`` (a split's name) or
    ``".../XX/velodyne/NNNNNN"`` (a file under the data set's ``sequences`` folder)."""
    match = _KITTI_NAME.search(name)
    if match is None:
        raise ValueError(f"scan {name!r} has no SemanticKITTI sequence and frame number: pass the split, or files "
                         "under <root>/sequences/NN/velodyne/ with the sequences folder (or a wildcard under it) "
                         "as --input")
    return match.group(1), match.group(2)


class NuScenesLayout(Layout):
    def __init__(self, out: Path, save_probs: bool, overwrite: bool, split: str) -> None:
        super().__init__(out, save_probs, overwrite)
        self.split = split

    def label_file(self, name: str) -> Path:
        return self.out / "lidarseg" / self.split / f"{name}{NUSCENES_LABEL_SUFFIX}"

    def write_labels(self, path: Path, labels: np.ndarray, points: np.ndarray | None) -> None:
        atomic_write((labels.astype(np.uint8) + 1).tobytes(), path)

    def read_labels(self, path: Path) -> np.ndarray:
        return np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1

    def finish(self) -> None:
        path = self.out / self.split / "submission.json"
        text = json.dumps({"meta": NUSCENES_SUBMISSION_META}, indent=2) + "\n"
        self._write_new(path, lambda: atomic_write(text.encode(), path))


def build_layout(fmt: str, out: Path, save_probs: bool, overwrite: bool, num_classes: int,
                 split: str | None) -> Layout:
    """The layout ``fmt`` (one of :data:`train.option_names.PREDICTION_FORMATS`) under ``out``; ``split`` names the nuScenes
    split of a submission."""
    if fmt == "npy":
        return NpyLayout(out, save_probs, overwrite)
    if fmt == "ply":
        return PlyLayout(out, save_probs, overwrite, num_classes)
    if fmt == "semantic_kitti":
        return SemanticKITTILayout(out, save_probs, overwrite)
    if fmt == "nuscenes":
        assert split is not None
        return NuScenesLayout(out, save_probs, overwrite, split)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(PREDICTION_FORMATS)}")
