"""What a form of ``python -m train.condense`` may write, checked before any work (decisions 90 and 99).

Every ``--out`` is checked first, in one line naming it (:mod:`train.runtime.out_paths`): a folder
(condense, table, study) must not be a file, a file (evaluate's JSON, sample's ``.npz``, show's
``.png``) not a folder, and neither may lie under a file; an existing file is replaced only when it
is the form's own kind of output (:func:`check_replaceable`) or ``--overwrite`` is given, and then
only once its successor is complete (:func:`train.runtime.files.atomic_write`). A run folder is
then held for the run's life by a lock file, ``<out>/.condense.lock`` (:mod:`train.runtime.lock_files`,
as ``train.predict`` holds its ``--out``): a second run into the same folder is refused naming the
first.

A condense run's folder that holds another run's set (``condensed.npz``, a distillation's
``distill.pt`` or a generator) is refused unless the run goes on from that checkpoint
(``--resume``) or ``--overwrite`` is given. An ``--overwrite`` run replaces on success (decision
99): it writes its set, checkpoint, generator and feature cache into ``<out>/.replacing/``
(:func:`run_folder`), leaving the folder's own files untouched while it runs; when its set is
written it records the files it made (``ready.json``) and puts them in place, the set last, then
removes the previous run's files it did not replace (:func:`finish_replacing`). A refusal, a stop,
kill -9, an exception or a full disk before ``ready.json`` leaves the previous set byte-identical;
a run killed while putting the files in place is finished by the next run into the folder. A
stopped ``--overwrite`` run goes on with ``--overwrite --resume``.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO

from train.condense.files.condensed_file import FILE_NAME
from train.condense.methods.dd3d import GENERATOR_NAME
from train.condense.files.distill_checkpoint import CHECKPOINT_NAME
from train.condense.matching.features import CACHE_NAME, check_cache
from train.runtime.files import atomic_write, remove_temporaries
from train.runtime.lock_files import try_hold

LOCK_NAME = ".condense.lock"
RUN_FILES = (FILE_NAME, CHECKPOINT_NAME, GENERATOR_NAME)  # what one condense run leaves in its folder
STAGING_NAME = ".replacing"  # an --overwrite run's files until it has finished
READY_NAME = "ready.json"  # written in the staging folder when its run has finished: the files it made


def hold_folder(path: Path) -> IO[str]:
    """The run folder ``path`` made and locked for this run (closing the returned file releases it);
    ValueError in one line when another live run holds it."""
    fh, other = try_hold(path, LOCK_NAME)
    if other is not None:
        fh.close()
        raise ValueError(f"--out {path} is being written by another run ({other}): wait for it to end, or give "
                         "another --out")
    return fh


def check_replaceable(path: Path, own: Callable[[Path], bool], what: str, overwrite: bool) -> None:
    """ValueError in one line when the existing file ``path`` is not ``what`` this form writes
    (``own(path)`` false) and ``overwrite`` was not given: a file of another kind is replaced only
    when asked."""
    if path.is_file() and not overwrite and not own(path):
        raise ValueError(f"--out {path} exists and is not {what}: give another file, or --overwrite to replace it")


def run_folder(out: Path, overwrite: bool) -> Path:
    """Where a condense run into ``out`` writes its files: ``out``, or the staging folder inside it
    for an ``--overwrite`` run (module docstring)."""
    return out / STAGING_NAME if overwrite else out


def _sync(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mark_ready(out: Path) -> None:
    """Record, in the staging folder of ``out``, the files its finished run made (the set written)."""
    staged = out / STAGING_NAME
    made = [name for name in (CACHE_NAME, *RUN_FILES) if (staged / name).is_file()]
    atomic_write(json.dumps(made).encode(), staged / READY_NAME)


def finish_replacing(out: Path) -> bool:
    """Put a finished ``--overwrite`` run's files in place in ``out`` (module docstring): each made
    file renamed over its old one, the set last, then the old run files it did not replace removed
    and the staging folder with them. Idempotent (a run killed half-way is finished by the next);
    False when there was nothing ready."""
    staged = out / STAGING_NAME
    try:
        made = json.loads((staged / READY_NAME).read_text())
    except (OSError, ValueError):
        return False
    for name in sorted(made, key=lambda n: n == FILE_NAME):  # the set last: before it, the old set is whole
        if (staged / name).is_file():
            os.replace(staged / name, out / name)
    for name in RUN_FILES:
        if name not in made:
            (out / name).unlink(missing_ok=True)
    _sync(out)
    shutil.rmtree(staged)
    return True


def _staged_for_run(path: Path, resume: bool) -> None:
    """The staging folder of ``path`` made ready for an ``--overwrite`` run: kept to go on with
    ``resume``, else emptied and given a link to the folder's readable feature cache."""
    staged = path / STAGING_NAME
    if resume:
        if not (staged / CHECKPOINT_NAME).is_file():
            raise ValueError(f"{staged / CHECKPOINT_NAME}: no stopped --overwrite run to resume from (a run keeps its "
                             "first checkpoint after its first iteration): start the run without --resume")
        return
    shutil.rmtree(staged, ignore_errors=True)  # an earlier --overwrite run that never finished: asked to start again
    staged.mkdir()
    cache = path / CACHE_NAME
    try:
        check_cache(cache)
    except ValueError:
        return  # a damaged cache is not reused; the run's own replaces it
    if cache.is_file():
        os.link(cache, staged / CACHE_NAME)  # a cache is never written in place (atomic_write renames)


def clear_for_run(path: Path, resume: bool, overwrite: bool) -> Path:
    """Make the held condense folder ``path`` ready for a run and return where the run writes
    (:func:`run_folder`): a replacement a killed run had finished is put in place first; without
    ``overwrite``, a folder that holds another run's set, or a stopped run's files, is refused in
    one line naming what to give (module docstring), and a damaged feature cache too. The temporary
    files a killed run's writes left in the folder (it is held: no other run writes there) go first."""
    remove_temporaries(path)
    finish_replacing(path)
    if overwrite:
        _staged_for_run(path, resume)
        return run_folder(path, overwrite)
    held = [name for name in RUN_FILES if (path / name).exists()]
    check_cache(path / CACHE_NAME)
    staged = path / STAGING_NAME
    if staged.exists():
        resume = ("go on with --overwrite --resume (the same options), or " if (staged / CHECKPOINT_NAME).is_file()
                  else "")
        raise ValueError(f"--out {path} holds a stopped --overwrite run ({staged}): {resume}give --overwrite to start "
                         "again")
    if resume:
        if CHECKPOINT_NAME not in held:
            raise ValueError(f"{path / CHECKPOINT_NAME}: no checkpoint to resume from (a run keeps its first after "
                             "its first iteration): start the run without --resume")
        return path
    if FILE_NAME in held:
        raise ValueError(f"--out {path} already holds a condensed set ({path / FILE_NAME}): give another --out, or "
                         "--overwrite to replace it (the set is replaced only when the new one is written)")
    if held:
        raise ValueError(f"--out {path} holds a stopped run's {' and '.join(held)}: go on with --resume (the same "
                         "options), give another --out, or --overwrite to start again")
    return path
