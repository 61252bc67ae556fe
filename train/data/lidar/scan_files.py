"""Single scan files in common formats: read points and per-point labels, write them back.

The door to a folder of one's own scans (``train.data.lidar.folder``) and to the prediction command's
output. :func:`read_scan` reads one scan file into a :class:`Scan`: its x, y, z in float64 in the
file's own frame (survey coordinates keep their millimetres), its other per-point columns in float32
(``intensity`` first where the file has it), plus, when asked, the raw integer labels of a named
per-point field. :meth:`Scan.local` gives the float32 coordinates a model reads, in the frame a
data set names (``FRAMES``, decision 53), and the origin they are taken from, kept so that outputs
go back to the file's frame. :func:`read_labels` reads a separate label file. Formats
(``SCAN_SUFFIXES``):

* ``.bin``: KITTI style, headerless float32 records (x, y, z, intensity); ``*.pcd.bin``, nuScenes'
  sweeps, five per point (x, y, z, intensity, then the ring index as ``feature4``).
* ``.npy``: a float array (N, C >= 3): x, y, z, intensity, then ``feature4``, ``feature5``, ...
* ``.npz``: key ``points`` as in ``.npy``, or key ``coord`` (N, 3) with an optional ``intensity`` (or
  ``strength``) of N values; a label field is another key.
* ``.ply`` (needs plyfile): the ``vertex`` element's x, y, z and its other scalar properties in file
  order, the intensity property (``intensity``, ``scalar_intensity``, ``reflectance`` or
  ``remission``, any case) renamed ``intensity`` and placed 4th; a label field is a property.
* ``.las`` / ``.laz`` (needs laspy, lazrs for ``.laz``): x, y, z with the header's scale and offset
  applied (the offset is kept as :attr:`Scan.offset`), then ``intensity``, where the point format
  has colour ``red``, ``green``, ``blue``, and every scalar extra-bytes dimension; a label field is a
  dimension (``classification`` or an extra-bytes field).

Label files (``LABEL_SUFFIXES``): ``.label`` is SemanticKITTI's uint32 per point, the lower 16 bits
the semantic id (the upper 16 the instance id, dropped); ``.npy`` is an integer array of N values.

Every bad file gets one line naming it: an unknown suffix (``ValueError``), and as
:class:`~train.data.validation.BadScanError` (what ``--skip-bad-scans`` skips) a truncated or corrupt
file, a label count that is not the point count, NaN or infinite coordinates or values of a column
that is read (:meth:`Scan.features`), non-integer labels, coordinates that float32 would not keep to
half a millimetre in the frame asked for (:meth:`Scan.local`).
Writers (:func:`write_scan`, :func:`write_labels`, :func:`write_labelled_ply`) write to a temporary
file in the target's folder and rename it over the target, so a reader never sees half a file.
"""
from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.runtime.files import atomic_write

from ..validation import (BadScanError, CorruptFileError, LabelCountError, check_count, check_finite_coords, load_npy,
                          read_records)

SCAN_SUFFIXES: tuple[str, ...] = (".bin", ".npy", ".npz", ".ply", ".las", ".laz")
LABEL_SUFFIXES: tuple[str, ...] = (".label", ".npy")
INTENSITY = "intensity"
XYZ: tuple[str, str, str] = ("x", "y", "z")
PLY_INTENSITY_NAMES: frozenset[str] = frozenset({"intensity", "scalar_intensity", "reflectance", "remission"})
LAS_COLOUR: tuple[str, str, str] = ("red", "green", "blue")
SEMANTIC_MASK = 0xFFFF
FRAMES: tuple[str, ...] = ("sensor", "tile")  # what a model's coordinates are measured from (decision 53)
SENSOR_FRAME = "sensor"  # the published sets' frame, and a folder's without 'frame' (older checkpoints too)
PRECISION = 0.0005  # m: the most float32 may move a coordinate a model reads (outputs keep millimetres)
SCANS_EXTRA = "pip install plyfile 'laspy[lazrs]' (the package's scans extra; it brings no torch)"


@dataclass(frozen=True)
class Scan:
    """One scan file's content.

    ``xyz``: (N, 3) float64, the coordinates in the file's own frame (LAS: scale and offset applied).
    ``values``: (N, C) float32, the file's other per-point columns, named by ``columns``.
    ``labels``: (N,) int64 raw label ids of the requested label field, or None when none was asked.
    ``offset``: (3,) float64, the LAS header offset (LAS stores integers from it; zeros for the
    other formats).
    """

    path: Path
    xyz: np.ndarray
    values: np.ndarray
    columns: tuple[str, ...]
    labels: np.ndarray | None = None
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def features(self, names: Sequence[str]) -> np.ndarray:
        """The (N, len(names)) float32 columns ``names``; a name the file lacks, or a NaN or infinite
        value in one of them, is a one-line error (the columns not asked for are not checked)."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise CorruptFileError(f"scan file {str(self.path)!r} has no column(s) {missing}; it has "
                                   f"{list(self.columns)}")
        values = self.values[:, [self.columns.index(n) for n in names]]
        bad = ~np.isfinite(values)
        if bad.any():
            column = names[int(np.flatnonzero(bad.any(axis=0))[0])]
            raise CorruptFileError(f"scan file {str(self.path)!r}: {int(bad.sum())} value(s) of the column(s) read "
                                   f"are NaN or infinite (first in column {column!r}); fix or drop them when "
                                   "exporting the scan")
        return values

    def local(self, frame: str) -> tuple[np.ndarray, np.ndarray]:
        """``(coord, origin)``: the (N, 3) float32 coordinates a model reads in ``frame`` (one of
        ``FRAMES``, decision 53) and the (3,) float64 point of the file's frame they are measured
        from, subtracted in float64. ``"sensor"``: the origin is :attr:`offset` (scans around their
        sensor, as the published sets); ``"tile"``: the centre of the scan's bounding box in x and y
        rounded to whole metres, and its lowest z rounded down to a whole metre. Coordinates that
        float32 would move by more than ``PRECISION`` are a :class:`BadScanError` naming the file."""
        assert frame in FRAMES, frame
        origin = self.offset
        if frame == "tile" and len(self.xyz):
            low, high = self.xyz.min(axis=0), self.xyz.max(axis=0)
            origin = np.array([np.round((low[0] + high[0]) / 2), np.round((low[1] + high[1]) / 2), np.floor(low[2])])
        shifted = self.xyz - origin
        coord = shifted.astype(np.float32)
        error = float(np.abs(coord - shifted).max()) if len(coord) else 0.0
        if error > PRECISION:
            reach = float(np.abs(shifted).max())
            raise BadScanError(f"scan file {str(self.path)!r}: its coordinates lie up to {reach:,.0f} m from the "
                               f"origin of frame {frame!r} ({', '.join(f'{v:,.3f}' for v in origin)}), where float32 "
                               f"moves them by up to {1000 * error:.1f} mm; scans in survey coordinates need a "
                               "model trained with 'frame: tile' in dataset.yaml (docs/own-data.md)")
        return coord, origin


def default_columns(width: int) -> tuple[str, ...]:
    """Column names of an unnamed (N, width) array: x, y, z, intensity, feature4, feature5, ..."""
    if width < 3:
        raise ValueError(f"a scan needs at least the 3 columns x, y, z, got {width}")
    return (XYZ + (INTENSITY,) + tuple(f"feature{i}" for i in range(4, width)))[:width]


def read_scan(path: str | os.PathLike[str], label_field: str | None = None) -> Scan:
    """Read the scan file ``path`` (a suffix of ``SCAN_SUFFIXES``); see the module docstring for
    each format's columns. ``label_field`` names a per-point integer field of the file (npz key, PLY
    property, LAS dimension) returned as :attr:`Scan.labels`; ``.bin`` and ``.npy`` hold none."""
    path = Path(path)
    suffix = _suffix(path, SCAN_SUFFIXES, "scan")
    if not path.is_file():
        raise FileNotFoundError(f"scan file {str(path)!r} does not exist")
    if label_field is not None and suffix in (".bin", ".npy"):
        raise ValueError(f"scan file {str(path)!r}: a {suffix} file holds no label field "
                         f"({label_field!r}); give the labels as a separate .label or .npy file")
    reader = {".bin": _read_bin, ".npy": _read_npy, ".npz": _read_npz, ".ply": _read_ply,
              ".las": _read_las, ".laz": _read_las}[suffix]
    table, columns, labels, offset = reader(path, label_field)
    xyz = np.ascontiguousarray(table[:, :3], dtype=np.float64)
    check_finite_coords(xyz, path)
    if labels is not None:
        labels = _label_ids(labels, path, f"label field {label_field!r}")
        check_count(len(labels), len(xyz), path, path, f"label field {label_field!r} of")
    return Scan(path, xyz, np.ascontiguousarray(table[:, 3:], dtype=np.float32), tuple(columns[3:]), labels,
                np.asarray(offset, dtype=np.float64))


def read_labels(path: str | os.PathLike[str], n_points: int | None = None) -> np.ndarray:
    """Raw label ids (N,) int64 of the label file ``path`` (``.label``: lower 16 bits of uint32
    words; ``.npy``: an integer array); with ``n_points`` a different count is a one-line error."""
    path = Path(path)
    suffix = _suffix(path, LABEL_SUFFIXES, "label")
    if not path.is_file():
        raise FileNotFoundError(f"label file {str(path)!r} does not exist")
    if suffix == ".label":
        labels = (read_records(path, np.uint32, 1, "label file (uint32)")[:, 0] & SEMANTIC_MASK).astype(np.int64)
    else:
        array = load_npy(path, "label file")
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise CorruptFileError(f"label file {str(path)!r} holds an array of shape {array.shape}; "
                                   f"it must hold one label per point (N,)")
        labels = _label_ids(array, path, "label file")
    if n_points is not None and len(labels) != n_points:
        raise LabelCountError(f"label file {str(path)!r} holds {len(labels)} labels but its scan has {n_points} "
                              f"points; the two files do not belong to the same scan (or one is truncated)")
    return labels


def write_scan(path: str | os.PathLike[str], points: np.ndarray, columns: Sequence[str] | None = None,
               labels: np.ndarray | None = None, label_field: str = "label") -> None:
    """Write ``points`` (N, C) (columns ``columns``, default :func:`default_columns`) as the scan
    file ``path`` in the format of its suffix, atomically; ``labels`` (N,) integers go into the
    field ``label_field`` (npz, PLY, LAS; ``.bin`` and ``.npy`` take none: use :func:`write_labels`).
    ``.bin`` takes exactly x, y, z, intensity and stores float32; the other formats keep x, y, z in
    float64 (survey coordinates keep their digits): ``.npy`` and ``.npz`` store the table in float64,
    PLY x, y, z as doubles and the other columns as floats, LAS x, y, z in millimetres from the floor
    of their minimum, optionally with intensity and red, green, blue."""
    path = Path(path)
    suffix = _suffix(path, SCAN_SUFFIXES, "scan")
    points = np.asarray(points, dtype=np.float32 if suffix == ".bin" else np.float64)
    columns = default_columns(points.shape[1]) if columns is None else tuple(columns)
    if points.ndim != 2 or len(columns) != points.shape[1] or columns[:3] != XYZ:
        raise ValueError(f"{path}: points {points.shape} must be (N, C) with C column names starting x, y, z, "
                         f"got {columns}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(points),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{path}: labels must be ({len(points)},) integers, got {labels.shape} {labels.dtype}")
        if suffix in (".bin", ".npy"):
            raise ValueError(f"{path}: a {suffix} file holds no labels; write them with write_labels")
    if suffix == ".bin" and columns != default_columns(5 if path.name.lower().endswith(".pcd.bin") else 4):
        raise ValueError(f"{path}: a .bin scan holds exactly x, y, z, intensity (a nuScenes .pcd.bin also the "
                         f"ring index, feature4), got {columns}")
    buffer = io.BytesIO()
    if suffix == ".bin":
        buffer.write(points.tobytes())
    elif suffix == ".npy":
        buffer.write(npy_bytes(points))
    elif suffix == ".npz":
        np.savez(buffer, points=points, **({} if labels is None else {label_field: labels}))
    elif suffix == ".ply":
        properties = {name: points[:, i] if name in XYZ else points[:, i].astype(np.float32)
                      for i, name in enumerate(columns)}
        if labels is not None:
            properties[label_field] = labels.astype(np.int32)
        _ply_bytes(buffer, properties)
    else:
        _las_bytes(buffer, path, points, columns, labels, label_field, compress=suffix == ".laz")
    atomic_write(buffer.getbuffer(), path)


def write_labels(path: str | os.PathLike[str], labels: np.ndarray) -> None:
    """Write raw label ids (N,) as ``.label`` (uint32, ids < 2**16) or ``.npy`` (int64), atomically."""
    path = Path(path)
    suffix = _suffix(path, LABEL_SUFFIXES, "label")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be a 1-D integer array, got {labels.shape} {labels.dtype}")
    buffer = io.BytesIO()
    if suffix == ".label":
        if labels.size and (labels.min() < 0 or labels.max() > SEMANTIC_MASK):
            raise ValueError(f"{path}: a .label file holds ids 0..{SEMANTIC_MASK}, got {labels.min()}..{labels.max()}")
        buffer.write(labels.astype(np.uint32).tobytes())
    else:
        buffer.write(npy_bytes(labels.astype(np.int64)))
    atomic_write(buffer.getbuffer(), path)


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (no pickled objects)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_labelled_ply(path: str | os.PathLike[str], coord: np.ndarray, labels: np.ndarray,
                       palette: np.ndarray) -> None:
    """Write a binary PLY of vertices x, y, z (float32 where that holds ``coord`` exactly, else
    float64: survey coordinates keep their digits) with an int32 ``label`` and the uint8 ``red``,
    ``green``, ``blue`` of ``palette[label]`` ((K, 3) uint8; label -1, ignore, is grey), atomically."""
    path = Path(path)
    coord = np.asarray(coord, dtype=np.float64)
    if (coord.astype(np.float32) == coord).all():
        coord = coord.astype(np.float32)
    labels = np.asarray(labels).astype(np.int64)
    palette = np.asarray(palette, dtype=np.uint8)
    if coord.ndim != 2 or coord.shape[1] != 3 or labels.shape != (len(coord),):
        raise ValueError(f"{path}: coord must be (N, 3) and labels (N,), got {coord.shape} and {labels.shape}")
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"{path}: palette must be (K, 3) uint8, got {palette.shape}")
    if labels.size and (labels.min() < -1 or labels.max() >= len(palette)):
        raise ValueError(f"{path}: labels must lie in -1..{len(palette) - 1}, got {labels.min()}..{labels.max()}")
    colours = np.vstack([palette, np.full((1, 3), 128, dtype=np.uint8)])[labels]  # -1 picks the grey row
    buffer = io.BytesIO()
    _ply_bytes(buffer, {"x": coord[:, 0], "y": coord[:, 1], "z": coord[:, 2], "label": labels.astype(np.int32),
                        "red": colours[:, 0], "green": colours[:, 1], "blue": colours[:, 2]})
    atomic_write(buffer.getbuffer(), path)


# ----------------------------------------------------------------------------- readers per format
# (table (N, C): x, y, z in the file's frame then the other columns; the C column names; the labels
# or None; the LAS header offset or zeros)
_Read = tuple[np.ndarray, Sequence[str], "np.ndarray | None", np.ndarray]


def _read_bin(path: Path, label_field: str | None) -> _Read:
    # nuScenes names its sweeps *.pcd.bin and stores five float32 per point (x, y, z, intensity, ring
    # index; spec C): read as four, a count divisible by four would pass as garbage points
    if path.name.lower().endswith(".pcd.bin"):
        return read_records(path, np.float32, 5, "nuScenes scan file (float32 x5)"), default_columns(5), None, np.zeros(3)
    return read_records(path, np.float32, 4, "KITTI-style scan file (float32 x4)"), default_columns(4), None, np.zeros(3)


def _read_npy(path: Path, label_field: str | None) -> _Read:
    points = _float_table(load_npy(path, "scan file"), path, "array")
    return points, default_columns(points.shape[1]), None, np.zeros(3)


def _read_npz(path: Path, label_field: str | None) -> _Read:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise CorruptFileError(f"scan file {str(path)!r} cannot be read as a .npz archive ({err}); the file "
                               f"is truncated or corrupt") from err
    if "points" in arrays:
        points = _float_table(arrays["points"], path, "key 'points'")
        columns = default_columns(points.shape[1])
    elif "coord" in arrays:
        coord = _float_table(arrays["coord"], path, "key 'coord'")
        if coord.shape[1] != 3:
            raise CorruptFileError(f"scan file {str(path)!r}: key 'coord' has shape {coord.shape}, not (N, 3)")
        key = next((k for k in (INTENSITY, "strength") if k in arrays), None)
        if key is None:
            points, columns = coord, XYZ
        else:
            value = np.asarray(arrays[key]).reshape(len(coord), -1) if arrays[key].size == len(coord) else None
            if value is None:
                raise CorruptFileError(f"scan file {str(path)!r}: key {key!r} has {arrays[key].size} values "
                                       f"for {len(coord)} points")
            points, columns = np.hstack([coord, value.astype(np.float32)]), XYZ + (INTENSITY,)
    else:
        raise CorruptFileError(f"scan file {str(path)!r} has neither key 'points' nor key 'coord' "
                               f"(it has {sorted(arrays)})")
    labels = None
    if label_field is not None:
        if label_field not in arrays:
            raise CorruptFileError(f"scan file {str(path)!r} has no label key {label_field!r} "
                                   f"(it has {sorted(arrays)})")
        labels = arrays[label_field]
    return points, columns, labels, np.zeros(3)


def _read_ply(path: Path, label_field: str | None) -> _Read:
    plyfile = _optional("plyfile", path)
    try:
        data = plyfile.PlyData.read(str(path))
        vertex = data["vertex"].data
    except (plyfile.PlyParseError, ValueError, KeyError, IndexError, EOFError, OSError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"scan file {str(path)!r} cannot be read as a PLY with a 'vertex' element "
                               f"({err}); the file is truncated or corrupt") from err
    names = [n for n in vertex.dtype.names if vertex.dtype[n].shape == () and vertex.dtype[n].kind in "iuf"]
    if not set(XYZ) <= set(names):
        raise CorruptFileError(f"scan file {str(path)!r}: the PLY vertices lack x, y, z (they have {names})")
    rest = [n for n in names if n not in XYZ and n != label_field]
    intensity = [n for n in rest if n.lower() in PLY_INTENSITY_NAMES][:1]
    rest = intensity + [n for n in rest if n not in intensity]
    columns = XYZ + tuple(INTENSITY if n in intensity else n for n in rest)
    points = np.stack([np.asarray(vertex[n], dtype=np.float64) for n in XYZ + tuple(rest)], axis=1)
    labels = None
    if label_field is not None:
        if label_field not in vertex.dtype.names:
            raise CorruptFileError(f"scan file {str(path)!r} has no vertex property {label_field!r} "
                                   f"(it has {list(vertex.dtype.names)})")
        labels = np.asarray(vertex[label_field])
    return points, columns, labels, np.zeros(3)


def _read_las(path: Path, label_field: str | None) -> _Read:
    laspy = _optional("laspy", path)
    try:
        las = laspy.read(str(path))
        offset = np.asarray(las.header.offsets, dtype=np.float64)
        xyz = np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], axis=1)
    except (laspy.LaspyException, ValueError, EOFError, OSError, RuntimeError) as err:  # lazrs: RuntimeError
        raise CorruptFileError(f"scan file {str(path)!r} cannot be read as LAS/LAZ ({err}); the file is "
                               f"truncated or corrupt (a .laz needs lazrs: {SCANS_EXTRA})") from err
    dims = set(las.point_format.dimension_names)
    extra = [n for n in las.point_format.extra_dimension_names if n != label_field and np.ndim(las[n]) == 1]
    columns = XYZ + (INTENSITY,) + (LAS_COLOUR if set(LAS_COLOUR) <= dims else ()) + tuple(extra)
    points = np.hstack([xyz] + [np.asarray(las[n], dtype=np.float64)[:, None] for n in columns[3:]])
    labels = None
    if label_field is not None:
        if label_field not in dims:
            raise CorruptFileError(f"scan file {str(path)!r} has no point dimension {label_field!r} "
                                   f"(it has {sorted(dims)})")
        labels = np.asarray(las[label_field])
    return points, columns, labels, offset


# ----------------------------------------------------------------------------- helpers
def _suffix(path: Path, allowed: tuple[str, ...], what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise ValueError(f"{what} file {str(path)!r}: unknown suffix {path.suffix!r}; "
                         f"{what} files are {', '.join(allowed)}")
    return suffix


def _float_table(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    if array.ndim != 2 or array.shape[1] < 3 or array.dtype.kind not in "iuf":
        raise CorruptFileError(f"scan file {str(path)!r}: the {what} has shape {array.shape} and dtype "
                               f"{array.dtype}; it must be numbers (N, C) with C >= 3 (x, y, z, ...)")
    return array


def _label_ids(values: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Integer label ids as int64; floats are accepted only when every value is a whole number."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f" and np.isfinite(values).all() and (values == np.round(values)).all():
        return values.astype(np.int64)
    raise CorruptFileError(f"{what} {str(path)!r} holds {values.dtype} values that are not whole numbers; "
                           f"labels must be integer ids")


# The optional packages each suffix needs (the `scans` extra).
SUFFIX_PACKAGES: dict[str, tuple[str, ...]] = {".ply": ("plyfile",), ".las": ("laspy",), ".laz": ("laspy", "lazrs")}


def check_packages(suffixes: Sequence[str]) -> None:
    """Raise one ImportError line naming the missing packages when files of ``suffixes`` could not be
    read or written here: called before any work, so a missing extra does not surface mid-run."""
    import importlib.util

    missing = sorted({package for suffix in suffixes for package in SUFFIX_PACKAGES.get(suffix.lower(), ())
                      if importlib.util.find_spec(package) is None})
    if missing:
        raise ImportError(f"{', '.join(sorted(set(suffixes)))} files need {', '.join(missing)}, not installed: "
                          f"{SCANS_EXTRA}")


def _optional(module: str, path: Path):
    try:
        return __import__(module)
    except ImportError as err:
        raise ImportError(f"reading or writing {str(path)!r} needs the package {module}: {SCANS_EXTRA}") from err


def _ply_bytes(buffer: io.BytesIO, properties: dict[str, np.ndarray]) -> None:
    plyfile = _optional("plyfile", Path("<ply>"))
    vertex = np.empty(len(next(iter(properties.values()))),
                      dtype=[(name, value.dtype.str) for name, value in properties.items()])
    for name, value in properties.items():
        vertex[name] = value
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(buffer)


def _las_bytes(buffer: io.BytesIO, path: Path, points: np.ndarray, columns: tuple[str, ...],
               labels: np.ndarray | None, label_field: str, compress: bool) -> None:
    laspy = _optional("laspy", path)
    extra = set(columns[3:]) - {INTENSITY, *LAS_COLOUR}
    colour = set(LAS_COLOUR) <= set(columns)
    if extra or (set(LAS_COLOUR) & set(columns) and not colour):
        raise ValueError(f"{path}: LAS columns are x, y, z, intensity and red, green, blue; got {columns}")
    header = laspy.LasHeader(point_format=3 if colour else 1, version="1.4")
    header.scales = np.full(3, 0.001)
    header.offsets = np.floor(points[:, :3].min(axis=0)) if len(points) else np.zeros(3)
    if labels is not None and label_field not in header.point_format.dimension_names:
        header.add_extra_dim(laspy.ExtraBytesParams(name=label_field, type=np.int32))
    las = laspy.LasData(header)
    las.x, las.y, las.z = points[:, 0], points[:, 1], points[:, 2]
    for name in columns[3:]:
        las[name] = np.round(points[:, columns.index(name)]).astype(np.uint16)
    if labels is not None:
        las[label_field] = labels
    las.write(buffer, do_compress=compress)
