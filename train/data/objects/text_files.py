"""Text files of one point a line (ModelNet40's ``modelnet40_normal_resampled``: ``x,y,z,nx,ny,nz``;
ShapeNet-part's ``x y z nx ny nz part``): numbers separated by a delimiter, the same count on
every line. A file that is not is refused naming its first bad line and what is wrong with it, in
the file's terms (numpy's own advice and warnings are not the user's business)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..validation import CorruptFileError


def read_text_points(path: Path, delimiter: str | None, columns: int) -> np.ndarray:
    """The (M, ``columns``) numbers of a text file of one point a line; an empty file, or a short
    or unparsable line, is refused naming the file and the line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty file: refused below
            values = np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except ValueError:
        raise CorruptFileError(_first_bad_line(path, delimiter, columns)) from None
    if len(values) == 0:
        raise CorruptFileError(f"{path}: holds no points (expected {columns} numbers a line): re-extract the download")
    if values.shape[1] != columns:
        raise CorruptFileError(f"{path}: every line holds {values.shape[1]} numbers, expected {columns}")
    return values


def _first_bad_line(path: Path, delimiter: str | None, columns: int) -> str:
    """What is wrong with the first line of ``path`` that is not ``columns`` numbers."""
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(delimiter)
        if len(fields) != columns:
            return f"{path}: line {number} holds {len(fields)} values, expected {columns}: {line.strip()[:80]!r}"
        for field in fields:
            try:
                float(field)
            except ValueError:
                return f"{path}: line {number} holds {field.strip()!r}, not a number"
    return f"{path}: not a text file of {columns} numbers a line"
