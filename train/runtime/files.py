"""Files written whole or not at all, without torch: the checkpoints' writer
(:mod:`train.runtime.checkpoint`), the scan and label writers and the prediction's outputs use it,
the last also where torch is never imported (labelling through onnxruntime, decision 55).

:func:`atomic_write`: the bytes go to a temporary file (suffix :data:`TEMP_SUFFIX`) in the target
directory, are flushed and fsynced, an existing target is first renamed to ``previous`` when asked,
the temporary file is renamed over the target with ``os.replace`` (atomic on POSIX) and the
directory is fsynced. A process killed at any moment leaves the old file or the new one, and at
most a stray temporary file.
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

TEMP_SUFFIX = ".tmp"
_TOKEN_BYTES = 8  # a temporary file is <target>.<2 x 8 hex digits>.tmp
_TEMPORARY = re.compile(rf".\.[0-9a-f]{{{2 * _TOKEN_BYTES}}}{re.escape(TEMP_SUFFIX)}$")


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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete every temporary file of :func:`atomic_write` under ``folder`` (those a killed process
    left); only for a folder no process is writing to. Returns how many there were."""
    found = [Path(root) / name for root, _, names in os.walk(folder) for name in names if _TEMPORARY.search(name)]
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)

