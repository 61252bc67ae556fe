"""Nothing lost when a command is refused, stopped or out of room (issue 89, decision 99): one test
per mechanism, each on the commands' own code.

- a file a command replaces (a report, a configuration, a figure, a copied log) is written whole:
  a disk that fills while it is written leaves the old file byte-identical and no temporary file;
- a full disk ends a command in one line naming the folder, the bytes and the free space, exit
  status non-zero, and the file it would have replaced is unchanged;
- a file that is not the command's own kind of output is not replaced without ``--overwrite``,
  refused in one line before any work;
- an option that cannot act in the run as given is refused in one line that says why.

A full disk is simulated in this process (:func:`full_disk`): every write into a folder fails with
``ENOSPC`` after half of its bytes, through Python's ``open``, ``os.fdopen`` (the writer of
:func:`train.runtime.files.atomic_write`) and ``os.sendfile`` (``shutil``'s copies); nothing fills
a real disk.
"""
from __future__ import annotations

import builtins
import errno
import io
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from train.runtime.files import NoRoomError

OLD = b"the user's file, as it was\n"


class _FullDisk(io.FileIO):
    """A file on a disk that fills up: a write stores half of its bytes, then fails."""

    def write(self, data: Any) -> int:
        data = bytes(data)
        super().write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _writing(mode: str) -> bool:
    return any(c in mode for c in "wax+")


@contextmanager
def full_disk(folder: Path) -> Iterator[None]:
    """Every write of a file under ``folder`` fails with ENOSPC after half of its bytes (see the
    module docstring); reads and files elsewhere are untouched."""
    real_open, real_io_open, real_fdopen, real_sendfile = builtins.open, io.open, os.fdopen, os.sendfile
    where = folder.resolve()

    def inside(file: Any) -> bool:
        try:
            return Path(os.fspath(file)).resolve().is_relative_to(where)
        except TypeError:
            return False

    def open_(file: Any, mode: str = "r", buffering: int = -1, encoding: str | None = None,
              errors: str | None = None, newline: str | None = None, closefd: bool = True,
              opener: Any = None) -> Any:
        if isinstance(file, int) or not _writing(mode) or not inside(file):
            return real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
        raw = _FullDisk(file, mode.replace("b", "").replace("t", ""))
        buffered = io.BufferedRandom(raw) if "+" in mode else io.BufferedWriter(raw)
        if "b" in mode:
            return buffered
        return io.TextIOWrapper(buffered, encoding=encoding or "utf-8", errors=errors, newline=newline)

    def fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if _writing(mode) and inside(os.readlink(f"/proc/self/fd/{fd}")):
            return _FullDisk(fd, mode.replace("b", "").replace("t", ""))
        return real_fdopen(fd, mode, *args, **kwargs)

    def sendfile(out_fd: int, in_fd: int, offset: Any, count: int) -> int:
        if inside(os.readlink(f"/proc/self/fd/{out_fd}")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_sendfile(out_fd, in_fd, offset, count)

    builtins.open, io.open, os.fdopen, os.sendfile = open_, open_, fdopen, sendfile
    try:
        yield
    finally:
        builtins.open, io.open, os.fdopen, os.sendfile = real_open, real_io_open, real_fdopen, real_sendfile


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- files written whole


def _save_config(folder: Path) -> Path:
    from train.options.resolve import resolve, save_config

    save_config(resolve(["--dataset", "synthetic", "--out", str(folder)]), folder / "config.yaml")
    return folder / "config.yaml"


def _results(classes: int) -> dict[str, dict[str, Any]]:
    return {"teacher": {"miou": 0.5, "iou": [0.5] * classes, "class_frequency": [1.0 / classes] * classes,
                        "parameters": 10, "latency_ms": 1.0}}


def _eval_report(folder: Path) -> Path:
    from train.evaluation.evaluate import write_report

    write_report(folder / "results", _results(2), ["road", "car"], header="# a run")
    return folder / "results.json"


def _per_class_figure(folder: Path) -> Path:
    from train.evaluation.plots import plot_per_class_iou

    plot_per_class_iou(folder / "per_class_iou.png", _results(2), ["road", "car"])
    return folder / "per_class_iou.png"


def _budget_figure(folder: Path) -> Path:
    from train.study.report import plot_budgets

    plot_budgets({"teacher": {1: [(1, 0.2), (2, 0.3)]}}, folder / "budget.png")
    return folder / "budget.png"


def _kept_unit(folder: Path) -> Path:
    from train.study.units import RESULT, keep_units

    unit = folder / "out" / "units" / "full" / "seed-0"
    unit.mkdir(parents=True)
    (unit / RESULT).write_text('{"val": {}}')
    kept = folder / "kept" / "units" / "full" / "seed-0" / RESULT
    kept.parent.mkdir(parents=True)
    kept.write_bytes(OLD)
    with full_disk(kept.parent):
        keep_units(folder / "out", folder / "kept")
    return kept


WRITERS: dict[str, Callable[[Path], Path]] = {
    "train.run's config.yaml": _save_config, "an evaluation report's .json": _eval_report,
    "a run's figure": _per_class_figure,
    "a study's figure": _budget_figure,
}


def _prepared(writer: Callable[[Path], Path], folder: Path) -> Path:
    """The path ``writer`` writes, holding :data:`OLD` (figures: matplotlib loaded before the disk fills)."""
    import matplotlib

    matplotlib.use("Agg")
    scratch = folder.parent / "scratch"
    scratch.mkdir()
    target = folder / writer(scratch).name
    target.write_bytes(OLD)
    return target


@pytest.mark.parametrize("writer", list(WRITERS), ids=list(WRITERS))
def test_a_report_config_or_figure_replaced_on_a_full_disk_is_kept_byte_identical(tmp_path: Path,
                                                                                  writer: str) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    write = WRITERS[writer]
    target = _prepared(write, folder)
    before = _files(folder)
    with full_disk(folder), pytest.raises(OSError) as err:
        write(folder)
    assert err.value.errno == errno.ENOSPC
    assert _files(folder) == before  # the old file byte-identical, no temporary file beside it
    assert target.read_bytes() == OLD


def test_a_unit_kept_for_another_machine_is_kept_whole_on_a_full_disk(tmp_path: Path) -> None:
    with pytest.raises(OSError) as err:
        _kept_unit(tmp_path)
    assert err.value.errno == errno.ENOSPC
    kept = tmp_path / "kept" / "units" / "full" / "seed-0"
    assert _files(kept) == {"result.json": OLD}
