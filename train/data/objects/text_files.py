"""Text files of one point a line (ModelNet40's ``modelnet40_normal_resampled``: ``x,y,z,nx,ny,nz``;
ShapeNet-part's ``x y z nx ny nz part``): numbers separated by a delimiter, the same count on
every line."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..validation import CorruptFileError


def read_text_points(path: Path, delimiter: str | None, columns: int) -> np.ndarray:
    """The (M, ``columns``) numbers of a text file of one point a line; a short or unparsable
    line is refused naming the file."""
    try:
        values = np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise CorruptFileError(f"{path}: not a text file of {columns} numbers a line ({err})") from err
    if values.shape[1] != columns or len(values) == 0:
        raise CorruptFileError(f"{path}: expected {columns} numbers a line, got {values.shape[1]} "
                               f"on {len(values)} line(s)")
    return values
