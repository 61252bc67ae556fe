"""HDF5 files of object clouds in the layout of PointNet's ``modelnet40_ply_hdf5_2048`` and of
ScanObjectNN's ``h5_files``: a dataset ``data`` (S, M, 3+) of float points and a dataset ``label``
(S,) or (S, 1) of class ids (integers, or floats holding whole numbers), one row per cloud (extra datasets such as ``normal``,
``faceId`` or ``mask`` are not read; columns of ``data`` after the third are dropped).

HDF5 holds arrays only (no code runs on reading), so a downloaded file is safe to open.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..validation import CorruptFileError, LabelCountError
from .cloud import RawClouds


def read_h5_clouds(path: Path, code: int, start: int = 0) -> RawClouds:
    """The clouds of one HDF5 file; their random-stream keys are (``code``, ``start + row``)."""
    import h5py  # imported here: only the HDF5 layouts need it

    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in ("data", "label") if key not in f]
            if missing:
                raise CorruptFileError(f"{path}: HDF5 file has no {' and no '.join(repr(k) for k in missing)} "
                                       f"dataset (has {sorted(f.keys())}); not a point-cloud file of this layout")
            data = np.asarray(f["data"][()])
            labels = np.asarray(f["label"][()])
    except OSError as err:
        raise CorruptFileError(f"{path}: cannot be read as an HDF5 file ({err}); re-download or re-extract it") \
            from err
    if data.ndim != 3 or data.shape[2] < 3 or not np.issubdtype(data.dtype, np.floating):
        raise CorruptFileError(f"{path}: 'data' must be (clouds, points, 3) floats, got {data.shape} {data.dtype}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    integral = np.issubdtype(labels.dtype, np.integer) or (
        np.issubdtype(labels.dtype, np.floating) and bool(np.all(np.isfinite(labels) & (labels == np.round(labels)))))
    if labels.ndim != 1 or not integral:
        raise CorruptFileError(f"{path}: 'label' must be (clouds,) whole numbers, got {labels.shape} {labels.dtype}")
    if len(labels) != len(data):
        raise LabelCountError(f"{path}: 'data' holds {len(data)} clouds but 'label' {len(labels)} labels")
    points = data[:, :, :3]
    rows = np.arange(len(data))
    keys = np.stack([np.full(len(data), code), start + rows], axis=1)
    return RawClouds(labels.astype(np.int64), keys, [f"{path} row {r}" for r in rows], lambda i: (points[i], None))
