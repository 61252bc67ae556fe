"""Full disks simulated in this process, for the nothing-lost tests (decision 99); nothing fills a
real disk.

- :func:`full_disk`: every write of a file under a folder fails with ``ENOSPC`` after half of its
  bytes, through Python's ``open``, ``os.fdopen`` (the writer of
  :func:`train.runtime.files.atomic_write`) and ``os.sendfile`` (``shutil``'s copies); reads and
  files elsewhere are untouched; :func:`full_disk_for` lets through the files a test names.
- :func:`no_room_at`: writing a file of one name fails at its ``fsync``, as a full disk does when
  the data reach it (``atomic_write``'s temporary file of that name, wherever it is).
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
        if buffering == 0:
            return raw
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


@contextmanager
def full_disk_for(folder: Path, keep: Callable[[Path], bool]) -> Iterator[None]:
    """:func:`full_disk` for the files under ``folder`` that ``keep`` does not let through."""
    real = _FullDisk.write

    def write(self: _FullDisk, data: Any) -> int:
        if keep(Path(os.readlink(f"/proc/self/fd/{self.fileno()}"))):
            return io.FileIO.write(self, data)
        return real(self, data)

    _FullDisk.write = write  # type: ignore[method-assign]
    try:
        with full_disk(folder):
            yield
    finally:
        _FullDisk.write = real  # type: ignore[method-assign]


def no_room_at(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Writing a file named ``name`` (its temporary file) fails as a full disk does."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(name + "."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
