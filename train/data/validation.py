"""Checks shared by every loader (spec section C): layout, binary record sizes, counts, NaNs.

Every error names the file and the fix. The exception classes subclass the builtin ones a caller
would expect (``FileNotFoundError`` for a missing layout, ``ValueError`` for bad content), so
``except ValueError`` keeps working; every bad-content error (and a scan of too few points,
:class:`TooFewPointsError`, decision 54) is a :class:`BadScanError`, which ``--skip-bad-scans``
catches (:class:`train.data.base.PointCloudDataset`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DATA_ROOT_FLAG = "--data-root"


class DatasetLayoutError(FileNotFoundError):
    """The dataset root, a split folder or a required file is missing."""


class BadScanError(ValueError):
    """A file's content cannot be a valid scan: the base of the three errors below."""


class CorruptFileError(BadScanError):
    """A file exists but its bytes cannot be a valid record array (truncated, wrong format)."""


class LabelCountError(BadScanError):
    """A label file holds a different number of labels than its point file holds points."""


class NonFiniteCoordinateError(BadScanError):
    """A point file holds NaN or infinite coordinates."""


class TooFewPointsError(BadScanError):
    """A scan holds no points (nothing to train or evaluate on), or, for training, one voxel."""


def layout_error(problem: str, layout: str) -> DatasetLayoutError:
    """A :class:`DatasetLayoutError` whose message shows the expected layout and the root flag."""
    return DatasetLayoutError(
        f"{problem}. Expected layout:\n{layout}\nPoint {DATA_ROOT_FLAG} at the folder that holds "
        f"this layout (restore missing files by re-extracting the download)."
    )


def inside_hint(root: Path, markers: tuple[str, ...]) -> str:
    """When a folder inside ``root`` holds one of ``markers`` (a download's file or folder), the words
    `` (it holds X/marker: point --data-root at root/X)`` for the first such folder; else ``""``:
    the answer to a data root given one level too high."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for folder in folders:
        for marker in markers:
            if (folder / marker).exists():
                return f" (it holds {folder.name}/{marker}: point {DATA_ROOT_FLAG} at {folder})"
    return ""


def require_dir(path: Path, dataset: str, layout: str, what: str = "dataset root") -> Path:
    """Return ``path`` if it is a directory, else raise a layout error showing ``layout``."""
    path = Path(path)
    if not path.is_dir():
        raise layout_error(f"{dataset} {what} {str(path)!r} does not exist or is not a folder", layout)
    return path


def require_file(path: Path, dataset: str, layout: str) -> Path:
    """Return ``path`` if it is a file, else raise a layout error showing ``layout``."""
    path = Path(path)
    if not path.is_file():
        raise layout_error(f"{dataset} file {str(path)!r} is missing", layout)
    return path


def read_records(path: Path, dtype: np.dtype | type, width: int, what: str) -> np.ndarray:
    """Read a headerless binary file of ``width``-field records of ``dtype`` as (n, width).

    Raises :class:`CorruptFileError` when the size is not a multiple of the record size, which is
    what a truncated download or a file of another format looks like.
    """
    path = Path(path)
    dtype = np.dtype(dtype)
    record = dtype.itemsize * width
    size = path.stat().st_size
    if size == 0:
        raise CorruptFileError(f"{what} {str(path)!r} is empty (0 bytes); the download or extraction "
                               f"failed: re-download or re-extract it")
    if size % record:
        raise CorruptFileError(
            f"{what} {str(path)!r} has {size} bytes, not a multiple of the record size {record} "
            f"({width} x {dtype.name}); the file is truncated or not a {what}: re-download or "
            f"re-extract it"
        )
    return np.fromfile(path, dtype=dtype).reshape(-1, width)


def load_npy(path: Path, what: str) -> np.ndarray:
    """``np.load`` that names the file when the .npy is truncated or not an array file."""
    path = Path(path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise CorruptFileError(
            f"{what} {str(path)!r} cannot be read as a .npy array ({err}); the file is truncated "
            f"or corrupt: regenerate it from the source data"
        ) from err


def check_count(n_found: int, n_points: int, found_path: Path, points_path: Path, what: str) -> None:
    """Raise :class:`LabelCountError` unless a per-point file has one row per point."""
    if n_found != n_points:
        raise LabelCountError(
            f"{what} {str(found_path)!r} has {n_found} entries but the point file "
            f"{str(points_path)!r} has {n_points} points; the two files do not belong to the same "
            f"scan (or one is truncated): check the pairing in the dataset's index tables"
        )


def check_finite_coords(coord: np.ndarray, path: Path) -> None:
    """Raise :class:`NonFiniteCoordinateError` if any coordinate is NaN or infinite."""
    bad = ~np.isfinite(coord).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise NonFiniteCoordinateError(
            f"point file {str(path)!r} has {int(bad.sum())} point(s) with NaN/inf coordinates "
            f"(first at row {first}); drop those points when preprocessing the scan"
        )


def make_sample(
    coord: np.ndarray, strength: np.ndarray, segment: np.ndarray, name: str, source: Path,
    origin: np.ndarray | None = None, xyz: np.ndarray | None = None,
) -> dict:
    """Assemble the loader sample dict with the contract dtypes and shapes (spec section C).

    ``coord`` (n,3) float32, ``strength`` (n,1) float32, ``segment`` (n,) int64, ``name`` str,
    ``origin`` (3,) float64: the point of the scan file's own frame that ``coord`` is measured from
    (:meth:`train.data.lidar.scan_files.Scan.local`, decision 53; None: zeros, the file's frame itself),
    and ``xyz`` (n,3) float64: the file's x, y, z exactly as read, what outputs that carry
    coordinates write (None: ``coord + origin``, exact where the file stores ``coord`` itself).
    """
    coord = np.ascontiguousarray(coord, dtype=np.float32)
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise CorruptFileError(f"{str(source)!r}: coordinates must be (n, 3), got {coord.shape}")
    n = coord.shape[0]
    strength = np.ascontiguousarray(strength, dtype=np.float32).reshape(-1, 1)
    segment = np.ascontiguousarray(segment, dtype=np.int64).reshape(-1)
    if strength.shape[0] != n or segment.shape[0] != n:
        raise LabelCountError(
            f"{str(source)!r}: {n} points but {strength.shape[0]} strengths and "
            f"{segment.shape[0]} labels; every per-point array needs one row per point"
        )
    check_finite_coords(coord, source)
    if not np.isfinite(strength).all():
        raise CorruptFileError(f"{str(source)!r}: the strength/intensity of "
                               f"{int((~np.isfinite(strength)).sum())} point(s) is NaN or infinite; "
                               f"regenerate the scan from the source data")
    origin = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64).reshape(3)
    xyz = coord.astype(np.float64) + origin if xyz is None else np.asarray(xyz, dtype=np.float64)
    return {"coord": coord, "strength": strength, "segment": segment, "name": name, "origin": origin, "xyz": xyz}


def model_input(sample: dict) -> dict:
    """``sample`` without ``xyz``, as the transforms take it: the file's exact points serve the
    outputs from the sample as read (a crop or a grid would leave them stale), and a scan's copy of
    them need not travel with every view and batch."""
    return {key: value for key, value in sample.items() if key != "xyz"}
