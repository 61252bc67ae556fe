"""The camera teacher's files beside the scans (``--teacher images --image-predictions O``, decision 61).

``python -m train.image_labels --probs [--features F]`` writes, for every scan of a split, named
``<scan>`` as the loader names it (``scan_name(i)``, which is also its sample's ``name``; it may
hold "/"): ``O/<scan>.probs.npy``, (n, K) float16 probabilities over the data set's K classes, and
with ``--features`` ``O/<scan>.features.npy``, (n, C) float16 2D features sampled at the pixel each
point projects to; one row per point of the scan as its loader reads it, a row of NaN where no
camera sees the point; and ``O/image_labels.json`` once for the folder (what made it).

:class:`CameraTeacherFiles` adds these rows to a loaded sample as ``camera_probs`` and
``camera_features`` (float16, unseen rows NaN). The transforms carry them as they carry ``segment``
(they are :data:`train.data.transforms.POINT_KEYS`: grid sampling keeps the row of the point it
keeps in each voxel) and collate concatenates them. A scan's file that is missing, unreadable,
of another row or class count, holds a row that is NaN in some columns only, or a probability row
outside [0, 1] or not summing to 1 (within :data:`SUM_TOLERANCE`) is a
:class:`~train.data.validation.BadScanError` naming it, which ``--skip-bad-scans`` skips and
counts (decision 25); so is a features file of another width than the ``feature_channels`` that
``image_labels.json`` records for the folder's splits. Splits labelled with feature maps of
different widths (two 2D models) or for other classes are refused when the folder is opened, and
the training run refuses a folder labelled for classes other than its data set's.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..validation import BadScanError, load_npy

PROBS_SUFFIX = ".probs.npy"
FEATURES_SUFFIX = ".features.npy"
MANIFEST = "image_labels.json"
CAMERA_KEYS = ("camera_probs", "camera_features")
# float16 rows: each of K <= 64 entries rounded by at most 2^-11 of itself, so a row of
# probabilities sums to 1 within 2^-11 (plus the writer's own rounding); 0.01 leaves room for both
SUM_TOLERANCE = 0.01


@dataclass(frozen=True)
class CameraTeacherFiles:
    """The folder ``folder`` of a data set of ``num_classes`` classes; ``features``: whether the 2D
    features are read as well (the topological term is on); ``feature_channels``: their width C as
    ``image_labels.json`` records it (None: not read, or not recorded); ``classes``: the class names
    the folder was labelled for (None: not recorded); ``digest``: SHA-256 of its
    ``image_labels.json`` (checkpoints record it, a resume compares it)."""

    folder: Path
    num_classes: int
    features: bool
    feature_channels: int | None
    classes: tuple[str, ...] | None
    digest: str

    def probs_path(self, scan: str) -> Path:
        return self.folder / f"{scan}{PROBS_SUFFIX}"

    def features_path(self, scan: str) -> Path:
        return self.folder / f"{scan}{FEATURES_SUFFIX}"

    def paths(self, scan: str) -> list[Path]:
        """The files a scan's sample reads."""
        return [self.probs_path(scan)] + ([self.features_path(scan)] if self.features else [])

    def attach(self, sample: dict) -> dict:
        """``sample`` (as its loader read it) with ``camera_probs`` (n, K) and, when read,
        ``camera_features`` (n, C), float16 with NaN rows where no camera sees the point."""
        scan, n = str(sample["name"]), len(sample["coord"])
        probs = _rows(self.probs_path(scan), n, scan, "camera probabilities")
        if probs.shape[1] != self.num_classes:
            raise BadScanError(f"camera probabilities {str(self.probs_path(scan))!r} hold {probs.shape[1]} class "
                               f"columns and the data set has {self.num_classes} classes: write them with "
                               "python -m train.image_labels for this data set")
        seen = ~np.isnan(probs[:, 0])
        kept = probs[seen].astype(np.float64)
        sums = kept.sum(axis=1)
        bad = (kept < 0).any(axis=1) | (kept > 1 + SUM_TOLERANCE).any(axis=1) | (np.abs(sums - 1) > SUM_TOLERANCE)
        if bad.any():
            row = int(np.flatnonzero(seen)[np.flatnonzero(bad)[0]])
            raise BadScanError(f"camera probabilities {str(self.probs_path(scan))!r}: row {row} is not a probability "
                               f"distribution (entries in [0, 1] summing to 1 within {SUM_TOLERANCE}; sum "
                               f"{float(sums[np.flatnonzero(bad)[0]]):.4g}); {int(bad.sum())} such row(s)")
        out = {**sample, "camera_probs": probs}
        if self.features:
            features = _rows(self.features_path(scan), n, scan, "camera features")
            if self.feature_channels is not None and features.shape[1] != self.feature_channels:
                raise BadScanError(f"camera features {str(self.features_path(scan))!r} hold {features.shape[1]} "
                                   f"channels and {MANIFEST} records {self.feature_channels} for the folder: write "
                                   "every split's features with the same 2D model")
            out["camera_features"] = features
        return out

    def checkpoint_entry(self) -> dict[str, Any]:
        """What a checkpoint of a stage taught by these files records (a resume compares it)."""
        return {"teacher": "images", "predictions": str(self.folder), "image_labels_sha256": self.digest}


def open_camera_teacher(folder: str | Path, num_classes: int, features: bool) -> CameraTeacherFiles:
    """The camera teacher of ``--image-predictions folder``: a folder written by
    ``python -m train.image_labels`` (it holds ``image_labels.json``), else one line naming it."""
    root = Path(folder).absolute()
    manifest = root / MANIFEST
    if not root.is_dir():
        raise FileNotFoundError(f"--image-predictions {folder}: no such folder (write it with python -m "
                                "train.image_labels --probs --out FOLDER)")
    if not manifest.is_file():
        raise FileNotFoundError(f"--image-predictions {folder} holds no {MANIFEST}: it was not written by python -m "
                                "train.image_labels --probs (which writes one per folder)")
    text = manifest.read_bytes()
    classes = _recorded(manifest, text, "classes", "classes", "label every split for this data set")
    channels = (_recorded(manifest, text, "feature_channels", "2D features of different widths",
                          "L_topo compares one feature space: label every split with the same 2D model")
                if features else None)
    return CameraTeacherFiles(root, int(num_classes), bool(features), channels,
                              None if classes is None else tuple(classes), hashlib.sha256(text).hexdigest())


def _recorded(manifest: Path, text: bytes, key: str, what: str, remedy: str) -> Any:
    """The value of ``key`` that every split of ``manifest`` (``image_labels.json``) records, or None
    where none does; splits that record different values: a ValueError line naming them."""
    try:
        splits = json.loads(text).get("splits", {})
        values = {name: entry[key] for name, entry in splits.items() if entry.get(key) is not None}
    except (ValueError, AttributeError, TypeError, KeyError) as err:
        raise ValueError(f"{manifest} is not the summary python -m train.image_labels writes ({err})") from None
    if len({json.dumps(value) for value in values.values()}) > 1:
        shown = "; ".join(f"{name}: {json.dumps(value)[:60]}" for name, value in sorted(values.items()))
        raise ValueError(f"{manifest}: its splits were labelled for {what} ({shown}); {remedy}")
    return next(iter(values.values()), None)


def _rows(path: Path, n: int, scan: str, what: str) -> np.ndarray:
    """The (n, C) float rows of ``path`` as float16; a row must be all NaN (unseen) or all finite."""
    if not path.is_file():
        raise BadScanError(f"no {what} for scan {scan!r}: {str(path)!r} does not exist (python -m train.image_labels "
                           "writes one per scan of the split it is given)")
    rows = load_npy(path, what)
    if rows.ndim != 2 or rows.shape[0] != n or rows.shape[1] == 0 or rows.dtype.kind != "f":
        raise BadScanError(f"{what} {str(path)!r} is a {rows.dtype} array of shape {rows.shape}; scan {scan!r} "
                           f"has {n} points, so it must be (n, C) = ({n}, C) floats, one row per point")
    rows = rows.astype(np.float16)
    finite = np.isfinite(rows)
    partial = ~(finite.all(axis=1) | np.isnan(rows).all(axis=1))
    if partial.any():
        raise BadScanError(f"{what} {str(path)!r}: row {int(np.flatnonzero(partial)[0])} is NaN or infinite in some "
                           f"entries only ({int(partial.sum())} such row(s)); a row is all NaN where no camera sees "
                           "the point, all finite where one does")
    return rows


def scans_of(datasets: Iterable[Any]) -> list[str]:
    """The scan names of every scan of ``datasets`` (loaders with ``scan_name``), in order."""
    return [d.scan_name(i) for d in datasets for i in range(len(d))]


def missing_files(files: CameraTeacherFiles, scans: Sequence[str]) -> list[Path]:
    """The files of ``scans`` that ``files`` would read and that do not exist (a stat per file)."""
    return [p for scan in scans for p in files.paths(scan) if not p.is_file()]


def coverage(files: CameraTeacherFiles, scans: Sequence[str], max_scans: int = 100) -> tuple[float, float, int]:
    """(points a camera sees, points) per scan on average over ``scans`` (all, or ``max_scans``
    spread evenly over them), read from the probability files at full resolution, and the number
    of scans counted; files that cannot be read are not counted (their scans are bad scans)."""
    picks = np.unique(np.linspace(0, len(scans) - 1, min(len(scans), max_scans)).round().astype(np.int64))
    seen = points = counted = 0
    for i in picks:
        path = files.probs_path(scans[int(i)])
        try:
            rows = load_npy(path, "camera probabilities") if path.is_file() else None
        except BadScanError:
            rows = None
        if rows is None or rows.ndim != 2 or rows.shape[1] == 0:
            continue  # a bad scan: training names it (or skips and counts it)
        seen += int(np.count_nonzero(~np.isnan(rows[:, 0])))
        points += len(rows)
        counted += 1
    return seen / max(counted, 1), points / max(counted, 1), counted
