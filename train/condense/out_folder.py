"""What a form of ``python -m train.condense`` may write, checked before any work (decision 90).

Every ``--out`` is checked first, in one line naming it: a folder (condense, table, study) must not
be a file, a file (evaluate's JSON, sample's ``.npz``, show's ``.png``) not a folder, and neither
may lie under a file. A run folder is then held for the run's life by a lock file,
``<out>/.condense.lock`` (:mod:`train.runtime.lock_files`, as ``train.predict`` holds its
``--out``): a second run into the same folder is refused naming the first. A condense run's folder
that holds another run's set (``condensed.npz``, a distillation's ``distill.pt`` or a generator)
is refused unless the run goes on from that checkpoint (``--resume``) or ``--overwrite`` is
given, which removes those files before the run starts: a set is never replaced, nor left beside
another run's checkpoint, without being asked.
"""
from __future__ import annotations

from pathlib import Path
from typing import IO

from train.condense.condensed_file import FILE_NAME
from train.condense.dd3d import GENERATOR_NAME
from train.condense.distill_checkpoint import CHECKPOINT_NAME
from train.runtime.lock_files import try_hold

LOCK_NAME = ".condense.lock"
RUN_FILES = (FILE_NAME, CHECKPOINT_NAME, GENERATOR_NAME)  # what one condense run leaves in its folder


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


def hold_folder(path: Path) -> IO[str]:
    """The run folder ``path`` made and locked for this run (closing the returned file releases it);
    ValueError in one line when another live run holds it."""
    fh, other = try_hold(path, LOCK_NAME)
    if other is not None:
        fh.close()
        raise ValueError(f"--out {path} is being written by another run ({other}): wait for it to end, or give "
                         "another --out")
    return fh


def clear_for_run(path: Path, resume: bool, overwrite: bool) -> None:
    """Make the held condense folder ``path`` ready for a run: refuse in one line a folder that
    holds another run's set (module docstring), remove it with ``overwrite``."""
    held = [name for name in RUN_FILES if (path / name).exists()]
    if overwrite and resume:
        raise ValueError("--resume goes on from the checkpoint that --overwrite would remove: give one of them")
    if overwrite:
        for name in held:
            (path / name).unlink()
        return
    if resume:
        if CHECKPOINT_NAME not in held:
            raise ValueError(f"{path / CHECKPOINT_NAME}: no checkpoint to resume from (a run keeps its first after "
                             "its first iteration): start the run without --resume")
        return
    if FILE_NAME in held:
        raise ValueError(f"--out {path} already holds a condensed set ({path / FILE_NAME}): give another --out, or "
                         "--overwrite to replace it")
    if held:
        raise ValueError(f"--out {path} holds a stopped run's {' and '.join(held)}: go on with --resume (the same "
                         "options), give another --out, or --overwrite to start again")
