"""SemanticKITTI loader (spec section C, "SemanticKITTI").

Layout: ``root/sequences/XX/velodyne/NNNNNN.bin`` (float32 x4: x, y, z, remission; strength =
remission as stored) and ``root/sequences/XX/labels/NNNNNN.label`` (uint32: low 16 bits semantic id,
high 16 bits instance id). Standard split: train 00-07, 09, 10; val 08; test 11-21 (no labels:
``segment`` all -1). Raw ids go through the 19-class learning map; ids in no table become ignore
with a warning.

Cameras (decision 59): scan ``NNNNNN`` of sequence ``XX`` is seen by KITTI's left colour camera,
``sequences/XX/image_2/NNNNNN.png``, calibrated by the sequence's ``calib.txt``: ``Tr`` (3 x 4) takes
the LiDAR to the rectified camera 0 (the odometry release folds the rectifying rotation into it) and
``P2 = K [I | K^-1 p4]`` (3 x 4) projects from camera 0 into image 2, so the camera frame of image 2 is
camera 0 shifted by ``K^-1 p4`` and ``scan_to_camera = [I | K^-1 p4] @ Tr``: the same pixel as
``P2 @ Tr`` on homogeneous points. The image size is read from the PNG's header.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..base import PointCloudDataset, Transform
from ..cameras.camera import Camera, CalibrationError, checked_camera, image_size
from ..labels import SEMANTIC_KITTI_CLASSES, SEMANTIC_KITTI_LEARNING_MAP, LearningMap
from ..validation import check_count, layout_error, make_sample, read_records, require_dir, require_file

SEMANTIC_KITTI_SPLITS: dict[str, tuple[int, ...]] = {
    "train": (0, 1, 2, 3, 4, 5, 6, 7, 9, 10), "val": (8,), "test": tuple(range(11, 22)),
}
LABELLED_SEQUENCES = range(0, 11)
SEMANTIC_KITTI_LAYOUT = """  <root>/
    sequences/00/velodyne/000000.bin   float32 x4 (x, y, z, remission)
                /labels/000000.label   uint32, low 16 bits = semantic id (sequences 00-10)
                /image_2/000000.png    left colour camera (optional: cameras)
                /calib.txt             P2 and Tr of the sequence (optional: cameras)
    sequences/01/... up to 21"""
KITTI_CALIB_KEYS = ("P2", "Tr")  # the entries of calib.txt the left colour camera needs, 12 numbers each
KITTI_CAMERA = "image_2"

_KITTI_MAP = LearningMap("semantic_kitti", SEMANTIC_KITTI_LEARNING_MAP, len(SEMANTIC_KITTI_CLASSES))
_LOG = logging.getLogger(__name__)


def read_semantic_kitti_scan(bin_path: str | Path, label_path: str | Path | None = None,
                             name: str | None = None) -> dict:
    """One scan as the sample dict; ``label_path=None`` gives ``segment`` all -1."""
    bin_path = require_file(Path(bin_path), "semantic_kitti", SEMANTIC_KITTI_LAYOUT)
    points = read_records(bin_path, np.float32, 4, "SemanticKITTI point file (float32 x4)")
    n = len(points)
    if label_path is None:
        segment = np.full(n, -1, dtype=np.int64)
    else:
        label_path = require_file(Path(label_path), "semantic_kitti", SEMANTIC_KITTI_LAYOUT)
        words = read_records(label_path, np.uint32, 1, "SemanticKITTI label file (uint32)")[:, 0]
        check_count(len(words), n, label_path, bin_path, "SemanticKITTI label file")
        segment = _KITTI_MAP.apply(words & 0xFFFF, label_path)
    return make_sample(points[:, :3], points[:, 3:4], segment, name or bin_path.stem, bin_path)


def read_kitti_calib(path: Path) -> dict[str, np.ndarray]:
    """``P2`` and ``Tr`` of a sequence's ``calib.txt`` (lines ``KEY: v1 ... v12``) as 3 x 4 arrays;
    a missing file, a missing key or an entry of another length is refused naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: SemanticKITTI calibration is missing (the sequence's calib.txt of "
                               "the odometry calibration download)")
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if line.strip():
            key, sep, values = line.partition(":")
            if not sep:
                raise CalibrationError(f"{path}: line {number} is not 'KEY: numbers': {line[:60]!r}")
            entries[key.strip()] = values
    found: dict[str, np.ndarray] = {}
    for key in KITTI_CALIB_KEYS:
        if key not in entries:
            raise CalibrationError(f"{path}: SemanticKITTI calibration has no {key!r} line (has "
                                   f"{sorted(entries)})")
        try:
            values = np.array([float(v) for v in entries[key].split()], dtype=np.float64)
        except ValueError as err:
            raise CalibrationError(f"{path}: {key!r} holds a value that is not a number ({err})") from err
        if values.size != 12:
            raise CalibrationError(f"{path}: {key!r} has {values.size} numbers; a 3 x 4 matrix has 12")
        found[key] = values.reshape(3, 4)
    return found


def kitti_scan_to_camera(p2: np.ndarray, tr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(K, scan_to_camera)`` of image 2: ``K = P2[:, :3]`` and ``[I | K^-1 P2[:, 3]] @ Tr`` (4 x 4)."""
    k = p2[:, :3]
    shift = np.eye(4)
    shift[:3, 3] = np.linalg.solve(k, p2[:, 3])
    return k, shift @ np.vstack([tr, [0.0, 0.0, 0.0, 1.0]])


class SemanticKITTIDataset(PointCloudDataset):
    """Scans of a split ("train", "val", "test") or of an explicit list of sequence numbers.

    Sequences of the split that are absent on disk are skipped with a warning (a partial copy of
    the data set still loads); none present is an error. Sample names are ``"XX/NNNNNN"``.
    ``labelled`` (default: sequences 00-10 are) False reads no label file of any sequence.
    """

    class_names = SEMANTIC_KITTI_CLASSES

    def __init__(self, root: str | Path, split: str | Sequence[int] = "train",
                 transform: Transform | None = None, seed: int = 0, labelled: bool | None = None) -> None:
        super().__init__(transform, seed)
        self.labelled = labelled
        if isinstance(split, str):
            if split not in SEMANTIC_KITTI_SPLITS:
                raise ValueError(f"semantic_kitti split {split!r} is not one of "
                                 f"{sorted(SEMANTIC_KITTI_SPLITS)} (or pass a list of sequence numbers)")
            sequences = SEMANTIC_KITTI_SPLITS[split]
        else:
            sequences = tuple(int(s) for s in split)
        self.root = require_dir(Path(root), "semantic_kitti", SEMANTIC_KITTI_LAYOUT)
        seq_root = require_dir(self.root / "sequences", "semantic_kitti", SEMANTIC_KITTI_LAYOUT,
                               "sequences folder")
        self.scans: list[tuple[Path, Path | None, str]] = []
        self._calibrations: dict[Path, dict[str, np.ndarray]] = {}
        missing = []
        for seq in sequences:
            velodyne = seq_root / f"{seq:02d}" / "velodyne"
            if not velodyne.is_dir():
                missing.append(f"{seq:02d}")
                continue
            labelled = seq in LABELLED_SEQUENCES if self.labelled is None else self.labelled
            for bin_path in sorted(velodyne.glob("*.bin")):
                label = velodyne.parent / "labels" / f"{bin_path.stem}.label" if labelled else None
                self.scans.append((bin_path, label, f"{seq:02d}/{bin_path.stem}"))
        if missing:
            _LOG.warning("semantic_kitti: sequences %s of the split are not under %s; skipped",
                         ", ".join(missing), seq_root)
        if not self.scans:
            raise layout_error(f"semantic_kitti: no scans of sequences {list(sequences)} under "
                               f"{str(seq_root)!r}", SEMANTIC_KITTI_LAYOUT)

    def __len__(self) -> int:
        return len(self.scans)

    def scan_name(self, index: int) -> str:
        """``"XX/NNNNNN"`` of scan ``index``, known before it is read."""
        return self.scans[index][2]

    def scan_origin(self, index: int) -> tuple[str, str]:
        """(``"XX"``, ``"XX/NNNNNN"``): the sequence and the scan."""
        name = self.scans[index][2]
        return name.split("/")[0], name

    def unused_labels(self) -> str | None:
        if self.labelled is not False:
            return None
        folders = sorted({bin_path.parent.parent / "labels" for bin_path, _, _ in self.scans})
        found = [f"{folder.parent.name}/labels" for folder in folders if any(folder.glob("*.label"))]
        return f"label folders {', '.join(found)}" if found else None

    def load(self, index: int) -> dict:
        bin_path, label_path, name = self.scans[index]
        return read_semantic_kitti_scan(bin_path, label_path, name)

    def cameras(self, index: int) -> list[Camera]:
        """The left colour camera of scan ``index`` (module docstring; its calibration is read once
        per sequence)."""
        bin_path = self.scans[index][0]
        sequence = bin_path.parent.parent
        calib = self._calibrations.get(sequence)
        if calib is None:
            calib = self._calibrations[sequence] = read_kitti_calib(sequence / "calib.txt")
        image = sequence / KITTI_CAMERA / f"{bin_path.stem}.png"
        width, height = image_size(image)
        k, scan_to_camera = kitti_scan_to_camera(calib["P2"], calib["Tr"])
        return [checked_camera(KITTI_CAMERA, image.relative_to(self.root).as_posix(), width, height, k,
                               scan_to_camera, str(sequence / "calib.txt"))]
