"""An ``--out`` path checked before any work, in one line naming it (decisions 90 and 99): a folder
must not be a file, a file not a folder, and neither may lie under a file. Shared by the
condensation command's forms and the functions they call (``train.condense``'s pictures check the
file they are given); the rest of what may be written is each command's own.
"""
from __future__ import annotations

from pathlib import Path


def _under_file(path: Path) -> Path | None:
    """The first ancestor of ``path`` that exists and is not a folder (None: there is none)."""
    return next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)


def check_folder_out(path: Path) -> None:
    """ValueError in one line when the folder ``path`` cannot be made or used (module docstring)."""
    above = _under_file(path)
    if above is not None:
        raise ValueError(f"--out {path} lies under the file {above}: give a folder")
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file: this form writes a folder; give a folder")


def check_file_out(path: Path, suffix: str | None = None, what: str = "file") -> None:
    """ValueError in one line when the file ``path`` cannot be written (module docstring);
    ``suffix``: the kind of file ``what`` is (e.g. ``.png``, a picture)."""
    above = _under_file(path)
    if above is not None:
        raise ValueError(f"--out {path} lies under the file {above}: give a file in a folder")
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder: this form writes one file; give a file name"
                         + (f" ending in {suffix}" if suffix else ""))
    if suffix is not None and path.suffix.lower() != suffix:
        raise ValueError(f"--out {path}: the {what} is a {suffix} file")

