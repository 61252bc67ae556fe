"""The condensed-set file, ``<out>/condensed.npz`` (decision 70): one writer, one reader.

Arrays (a plain ``.npz``, read with ``allow_pickle=False``):

- ``points`` (M, N, 3) float32, M = K x CPC (a file written before decision 90 may hold fewer
  where a class had fewer training clouds than CPC), the clouds class by class;
- ``labels`` (M,) int64 class ids into the provenance's ``class_names``;
- ``parts`` (M, N) int64 part ids, for part segmentation only;
- ``provenance``: a 0-d unicode array holding one JSON object, what produced the set
  (:data:`PROVENANCE_FIELDS`: method, data set, setting, task, CPC, the method's seed, the data
  set's seed and size (those of :func:`train.data.objects.load_objects`, which key a generated
  set's content), commit, class names, the part names for part segmentation, the ``frame``
  the clouds live in: the rotator's record, :func:`train.condense.files.rotator.frame_record`, decision
  86; a file written before the frame was recorded reads as the data's own frame, ``none``), and
  ``distill``, what a distillation ran (its iterations, loops and learning rates, decision 92; the
  explicit clouds' optimiser and each iteration's matching loss, decision 93;
  :func:`train.condense.methods.distill_record`; null for a coreset and for a file written before
  it was recorded), and, when gradient matching added its persistence term, ``topo``: its reading
  and weight (decision 96).

:func:`write_condensed` checks what it writes as :func:`read_condensed` checks what it reads (one
check, :func:`check_condensed`) and writes atomically (:func:`train.runtime.files.atomic_write`);
the reader refuses a malformed file in one line naming the file and what is wrong. The members
carry a fixed date, so the same set is the same bytes (a seed gives the same file).
"""
from __future__ import annotations

import io
import json
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from train.condense.files.rotator import Rotator, frame_record, rotator_of
from train.runtime.files import atomic_write

FILE_NAME = "condensed.npz"
PROVENANCE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "method": str, "dataset": str, "setting": str, "task": str, "cpc": int, "seed": int, "data_seed": int,
    "size": (int, type(None)), "commit": str, "class_names": list, "part_names": (list, type(None)), "frame": dict,
    "distill": (dict, type(None)),
}
OPTIONAL_FIELDS: dict[str, type] = {"topo": dict}  # gradient matching's persistence term, when on (decision 96)
ARRAYS = ("points", "labels", "parts", "provenance")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # every member's date: the same set gives the same bytes


class CondensedFileError(ValueError):
    """A condensed-set file that cannot be used (its message names the file)."""


@dataclass(frozen=True)
class CondensedSet:
    """A condensed training set: the arrays of the module docstring and its provenance (a dict)."""

    points: np.ndarray
    labels: np.ndarray
    provenance: dict[str, Any]
    parts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


def current_commit() -> str:
    """The repository's HEAD commit (with ``+dirty`` when files differ from it), or ``unknown``."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def check_condensed(cset: CondensedSet, source: str) -> None:
    """CondensedFileError, one line starting with ``source``, for anything malformed (module docstring)."""
    prov = cset.provenance
    if not set(PROVENANCE_FIELDS) <= set(prov) <= set(PROVENANCE_FIELDS) | set(OPTIONAL_FIELDS):
        raise CondensedFileError(f"{source}: provenance must hold exactly {sorted(PROVENANCE_FIELDS)} (and may hold "
                                 f"{sorted(OPTIONAL_FIELDS)}), got {sorted(prov)}")
    for key, kind in {**PROVENANCE_FIELDS, **OPTIONAL_FIELDS}.items():
        if key in prov and (not isinstance(prov[key], kind) or isinstance(prov[key], bool)):
            raise CondensedFileError(f"{source}: provenance {key} {prov[key]!r} is not a {kind}")
    try:
        rotator_of(prov["frame"])
    except ValueError as err:
        raise CondensedFileError(f"{source}: provenance frame: {err}") from None
    names = prov["class_names"]
    if not names or not all(isinstance(n, str) for n in names) or prov["cpc"] < 1:
        raise CondensedFileError(f"{source}: provenance needs class names and cpc >= 1, got "
                                 f"{len(names)} names and cpc {prov['cpc']}")
    points, labels = cset.points, cset.labels
    if points.dtype != np.float32 or points.ndim != 3 or points.shape[2] != 3 or len(points) == 0:
        raise CondensedFileError(f"{source}: points must be (M, N, 3) float32 with M >= 1, got "
                                 f"{points.shape} {points.dtype}")
    if not np.isfinite(points).all():
        raise CondensedFileError(f"{source}: points hold NaN or infinite values")
    if labels.dtype != np.int64 or labels.shape != (len(points),):
        raise CondensedFileError(f"{source}: labels must be ({len(points)},) int64, got {labels.shape} {labels.dtype}")
    if labels.min() < 0 or labels.max() >= len(names):
        raise CondensedFileError(f"{source}: labels must lie in [0, {len(names)}), got {labels.min()}..{labels.max()}")
    most = int(np.bincount(labels, minlength=len(names)).max())
    if most > prov["cpc"]:
        raise CondensedFileError(f"{source}: a class has {most} clouds, more than cpc {prov['cpc']}")
    with_parts = prov["task"] == "parts"
    if with_parts != (cset.parts is not None) or with_parts != (prov["part_names"] is not None):
        raise CondensedFileError(f"{source}: task {prov['task']!r} needs parts and part names exactly when it is "
                                 "'parts'")
    if cset.parts is not None:
        parts = cset.parts
        if parts.dtype != np.int64 or parts.shape != points.shape[:2]:
            raise CondensedFileError(f"{source}: parts must be {points.shape[:2]} int64, got {parts.shape} {parts.dtype}")
        if parts.min() < 0 or parts.max() >= len(prov["part_names"]):
            raise CondensedFileError(f"{source}: parts must lie in [0, {len(prov['part_names'])}), got "
                                     f"{parts.min()}..{parts.max()}")


def set_path(source: str | Path) -> Path:
    """The condensed-set file a ``--from`` names: a run folder's :data:`FILE_NAME`, or the file itself."""
    path = Path(source)
    return path / FILE_NAME if path.is_dir() else path


def write_condensed(cset: CondensedSet, path: str | Path) -> Path:
    """Write ``cset`` to ``path`` (a file name, or a folder that gets :data:`FILE_NAME`), atomically."""
    target = Path(path)
    if target.suffix != ".npz":
        target = target / FILE_NAME
    check_condensed(cset, str(target))
    arrays = {"points": cset.points, "labels": cset.labels,
              "provenance": np.array(json.dumps(cset.provenance, sort_keys=True))}
    if cset.parts is not None:
        arrays["parts"] = cset.parts
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # np.savez's layout, fixed dates
        for name, array in arrays.items():
            with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE), "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    atomic_write(buffer.getbuffer(), target)
    return target


def read_condensed(path: str | Path) -> CondensedSet:
    """The set of a file :func:`write_condensed` wrote; CondensedFileError (one line) for any other."""
    source = str(path)
    if not Path(path).is_file():
        raise CondensedFileError(f"{source}: no such file (give a run's --out folder or its {FILE_NAME})")
    if not zipfile.is_zipfile(path):
        raise CondensedFileError(f"{source}: not a readable .npz file (not a zip archive of arrays: a condensed set "
                                 f"is the {FILE_NAME} a condense run writes)")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            if not {"points", "labels", "provenance"} <= keys or not keys <= set(ARRAYS):
                raise CondensedFileError(f"{source}: a condensed set holds {', '.join(ARRAYS)} (parts optional), "
                                         f"got {sorted(keys)}")
            arrays = {k: data[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, CondensedFileError):
            raise
        raise CondensedFileError(f"{source}: not a readable .npz file (damaged, or arrays of another program: "
                                 f"{type(err).__name__})") from None
    prov_array = arrays["provenance"]
    if prov_array.shape != () or prov_array.dtype.kind != "U":
        raise CondensedFileError(f"{source}: provenance must be one JSON string, got {prov_array.shape} {prov_array.dtype}")
    try:
        provenance = json.loads(str(prov_array))
    except json.JSONDecodeError as err:
        raise CondensedFileError(f"{source}: provenance is not JSON ({err})") from None
    if not isinstance(provenance, dict):
        raise CondensedFileError(f"{source}: provenance must be a JSON object, got {type(provenance).__name__}")
    provenance.setdefault("frame", frame_record(Rotator("none")))  # sets were in their data's frame before decision 86
    provenance.setdefault("distill", None)  # not recorded before decision 92
    cset = CondensedSet(arrays["points"], arrays["labels"], provenance, arrays.get("parts"))
    check_condensed(cset, source)
    return cset
