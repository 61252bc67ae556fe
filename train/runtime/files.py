"""Files written whole or not at all, without torch: the checkpoints' writer
(:mod:`train.runtime.checkpoint`), the scan and label writers and the prediction's outputs use it,
the last also where torch is never imported (labelling through onnxruntime, decision 55).

:func:`atomic_write`: the bytes go to a temporary file (suffix :data:`TEMP_SUFFIX`) in the target
directory, are flushed and fsynced, an existing target is first renamed to ``previous`` when asked,
the temporary file is renamed over the target with ``os.replace`` (atomic on POSIX) and the
directory is fsynced. A process killed at any moment leaves the old file or the new one, and at
most a stray temporary file. A full disk (or quota) while writing raises :class:`NoRoomError`, one
line naming the folder, the bytes the file needs and the bytes free there (decision 99).
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from pathlib import Path

TEMP_SUFFIX = ".tmp"
_TOKEN_BYTES = 8  # a temporary file is <target>.<2 x 8 hex digits>.tmp
_TEMPORARY = re.compile(rf".\.[0-9a-f]{{{2 * _TOKEN_BYTES}}}{re.escape(TEMP_SUFFIX)}$")
NO_ROOM = (errno.ENOSPC, errno.EDQUOT)  # the OS's "out of room" errors


class NoRoomError(OSError):
    """A file could not be written for want of room on its disk; the message, one line, names the
    folder, the size needed and the free space. The file it would have replaced is unchanged."""

    def __str__(self) -> str:
        return str(self.strerror)  # the one line, without OSError's "[Errno 28]" prefix


def _size(n: int) -> str:
    """``n`` bytes in the largest decimal unit that keeps a digit before the point."""
    unit = next((u for u in ("TB", "GB", "MB", "kB") if n >= 10 ** (3 * ("kMGT".index(u[0]) + 1))), "B")
    return f"{n:,} B" if unit == "B" else f"{n / 10 ** (3 * ('kMGT'.index(unit[0]) + 1)):,.1f} {unit}"


def no_room(err: OSError, folder: Path, needed: int) -> NoRoomError:
    """The :class:`NoRoomError` of the OS's ``err`` (an errno of :data:`NO_ROOM`) writing ``needed``
    bytes into ``folder``."""
    try:
        free = _size(shutil.disk_usage(folder).free)
    except OSError:
        free = "an unknown amount"
    return NoRoomError(err.errno, f"no room to write {_size(needed)} in {folder} ({os.strerror(err.errno)}; "
                       f"{free} free there): free at least that much there, or write elsewhere, and run again")


def atomic_write(data: bytes | memoryview, path: str | os.PathLike[str], previous: str | os.PathLike[str] | None = None
                 ) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring); an existing ``path`` is
    first renamed to ``previous`` when given. On an error no temporary file is left behind."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{target.name}.{secrets.token_hex(_TOKEN_BYTES)}{TEMP_SUFFIX}"
    # os.open with mode 0o666 lets the umask (and a folder's default ACL) set the permissions, as for
    # any file a program writes; tempfile.mkstemp would make every output 0600 (private)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if previous is not None and target.exists():
            os.replace(target, previous)
        os.replace(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # makes the renames themselves survive a power loss
        finally:
            os.close(dir_fd)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, NoRoomError) and err.errno in NO_ROOM:
            raise no_room(err, target.parent, len(data)) from err
        raise


def remove_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete every temporary file of :func:`atomic_write` under ``folder`` (those a killed process
    left); only for a folder no process is writing to. Returns how many there were."""
    found = [Path(root) / name for root, _, names in os.walk(folder) for name in names if _TEMPORARY.search(name)]
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)

