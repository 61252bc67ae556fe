"""The files of ``python -m train.image_labels`` (decision 60), written and read.

In the output folder O, per scan (``<scan>`` = the data set's ``scan_name``, "/" making subfolders):

* ``O/<scan>.npy``: (n,) int16 train ids, one per point of the scan as loaded, -1 where no camera
  labels the point;
* ``O/<scan>.probs.npy`` (with ``--probs``): (n, K) float16 probabilities over the data set's K
  classes, NaN rows where -1;
* ``O/<scan>.features.npy`` (with ``--features``): (n, C) float16 sampled 2D features, NaN rows there;
* ``O/<scan>.npz`` (with ``--folder-split``): the scan itself, ``coord`` (n, 3) float64 in its file's
  frame and ``strength`` (n,) float32 as the data set's loader reads it, so that O is a scan folder
  (``train.data.lidar.folder``) whose labels are the ``.npy`` beside each scan;
* ``O/dataset.yaml`` (with ``--folder-split``): that folder's description: the data set's classes,
  the identity label map with -1 ignored, ``labels: {file: "{stem}.npy"}``, ``feature: intensity``
  (the strength, scale 1) and, per split, the list of its scans; a second run into O with another
  ``--folder-split`` adds its split (the folder needs ``train`` and ``val`` to train);
* ``O/image_labels.json``: per split labelled into O, what made its labels (data set, split,
  classes, class map, rules) and the counts (scans, skipped scans, seen points, points per number of
  cameras, labels per class).

:func:`read_image_labels` reads a scan's files back, checked against its point count.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from train.runtime.files import atomic_write

from .folder import SPEC_FILE
from .scan_files import INTENSITY, npy_bytes
from ..validation import CorruptFileError, load_npy

LABELS_SUFFIX = ".npy"
PROBS_SUFFIX = ".probs.npy"
FEATURES_SUFFIX = ".features.npy"
SCAN_SUFFIX = ".npz"
SUMMARY_FILE = "image_labels.json"


def output_path(out: Path, scan: str, suffix: str) -> Path:
    """``out/<scan><suffix>``."""
    return Path(out) / f"{scan}{suffix}"


def write_scan_labels(out: Path, scan: str, labels: np.ndarray, probabilities: np.ndarray | None,
                      features: np.ndarray | None) -> None:
    """The label file of ``scan`` and, where given, its probabilities and features (float16)."""
    atomic_write(npy_bytes(labels.astype(np.int16)), output_path(out, scan, LABELS_SUFFIX))
    for suffix, values in ((PROBS_SUFFIX, probabilities), (FEATURES_SUFFIX, features)):
        if values is not None:
            atomic_write(npy_bytes(values.astype(np.float16)), output_path(out, scan, suffix))


def read_image_labels(out: Path, scan: str, n_points: int) -> dict[str, np.ndarray | None]:
    """``{"labels", "probabilities", "features"}`` of ``scan`` under ``out`` (None where a file was not
    written); a file of another point count is a :class:`CorruptFileError` naming it."""
    found: dict[str, np.ndarray | None] = {}
    for key, suffix in (("labels", LABELS_SUFFIX), ("probabilities", PROBS_SUFFIX), ("features", FEATURES_SUFFIX)):
        path = output_path(out, scan, suffix)
        if not path.is_file():
            if key == "labels":
                raise FileNotFoundError(f"image label file {path} does not exist (python -m train.image_labels)")
            found[key] = None
            continue
        values = load_npy(path, "image label file")
        if len(values) != n_points or values.ndim != (1 if key == "labels" else 2):
            raise CorruptFileError(f"image label file {path} has shape {values.shape}; the scan has {n_points} "
                                   "points")
        found[key] = values
    return found


def write_folder_scan(out: Path, scan: str, coord: np.ndarray, strength: np.ndarray) -> Path:
    """``out/<scan>.npz``: the scan's coordinates (float64, its file's frame) and strength."""
    buffer = io.BytesIO()
    np.savez(buffer, coord=np.asarray(coord, np.float64),
             strength=np.asarray(strength, np.float32).reshape(-1))
    path = output_path(out, scan, SCAN_SUFFIX)
    atomic_write(buffer.getbuffer(), path)
    return path


def folder_spec(out: Path, split: str, scans: list[str], classes: tuple[str, ...], frame: str) -> dict[str, Any]:
    """The ``dataset.yaml`` of ``out`` listing ``scans`` (their ``.npz`` files) as ``split``, with the
    other splits of an existing one kept. Refused in one line: an existing one made for other classes
    or another frame, or listing one of ``scans`` under another split (their files would be replaced)."""
    import yaml

    path = Path(out) / SPEC_FILE
    spec: dict[str, Any] = {"classes": list(classes), "label_map": {i: i for i in range(len(classes))},
                            "ignore": [-1], "labels": {"file": "{stem}" + LABELS_SUFFIX},
                            "feature": INTENSITY, "feature_scale": 1.0, "frame": frame, "splits": {}}
    if path.is_file():
        old = yaml.safe_load(path.read_text())
        if not isinstance(old, dict) or {k: old.get(k) for k in spec if k != "splits"} != {
                k: v for k, v in spec.items() if k != "splits"}:
            raise ValueError(f"{path} describes other classes or another frame than this run's; write to another "
                             "--out")
        spec["splits"] = {k: v for k, v in (old.get("splits") or {}).items() if k != split}
    files = sorted(f"{scan}{SCAN_SUFFIX}" for scan in scans)
    for other, listed in spec["splits"].items():
        if shared := sorted(set(files) & set(listed)):
            raise ValueError(f"{path} lists {shared[0]} under split {other!r}: this split's scan of that name would "
                             "replace its files; write to another --out")
    spec["splits"][split] = files
    return spec


def write_folder_spec(out: Path, spec: dict[str, Any]) -> Path:
    """``out/dataset.yaml`` of :func:`folder_spec`."""
    import yaml

    path = Path(out) / SPEC_FILE
    atomic_write(yaml.safe_dump(spec, sort_keys=False).encode(), path)
    return path


def read_summaries(out: Path) -> dict[str, Any] | None:
    """The ``splits`` of ``out/image_labels.json`` (None: there is none); a file there that is not
    such a summary is a :class:`CorruptFileError` in one line."""
    path = Path(out) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        splits = json.loads(path.read_text())["splits"]
        if not isinstance(splits, dict):
            raise TypeError(f"its splits are a {type(splits).__name__}, not a mapping")
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptFileError(f"{path}: not a summary of python -m train.image_labels ({{'splits': {{split: "
                               f"...}}}}): {err}; remove it or choose another --out") from err
    return splits


def foreign_output(out: Path, scans: list[str], probs: bool, features: bool, folder_scans: bool) -> Path | None:
    """The first file a run labelling ``scans`` into ``out`` would replace that no run of
    ``python -m train.image_labels`` wrote there (decision 99: replaced only with ``--overwrite``):
    any of them, unless ``out`` holds the summary of an earlier run (:data:`SUMMARY_FILE`). None:
    nothing foreign would be replaced."""
    if (Path(out) / SUMMARY_FILE).is_file():
        return None
    suffixes = [LABELS_SUFFIX] + [PROBS_SUFFIX] * probs + [FEATURES_SUFFIX] * features + [SCAN_SUFFIX] * folder_scans
    for scan in scans:
        for suffix in suffixes:
            if (path := output_path(out, scan, suffix)).exists():
                return path
    return None


def write_summary(out: Path, split: str, summary: dict[str, Any]) -> Path:
    """``out/image_labels.json``: ``{"splits": {split: summary}}``, the entry of ``split`` written over
    that split's earlier one and beside the other splits' (a folder holds the files of every split
    labelled into it: the training split and the unlabelled one a camera teacher reads)."""
    path = Path(out) / SUMMARY_FILE
    splits = read_summaries(out) or {}
    splits[split] = summary
    atomic_write(json.dumps({"splits": splits}, indent=1).encode(), path)
    return path
