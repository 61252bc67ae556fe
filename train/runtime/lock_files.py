"""Lock files that say who holds them: one is held (``flock``) by a live process and released by
the kernel when that process exits, however it exits, so a killed run never leaves a stale lock.
Two runs by mistake into one output folder use them to refuse each other: ``train.predict``'s
shards (decision 77, :mod:`train.prediction.shards`) and a condensation's ``--out`` (decision 90,
:mod:`train.condense.cli.out_folder`)."""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO


def open_lock(folder: Path, name: str) -> IO[str]:
    """``folder / name`` opened to append, the folder made first; made again if a process that ends
    a run removes it in between (:mod:`train.prediction.shards` removes it once it is empty)."""
    for _ in range(3):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            return open(folder / name, "a+")
        except FileNotFoundError:
            continue
    return open(folder / name, "a+")  # a third removal in a row: its own error


def try_lock(fd: int) -> bool:
    """Whether this process now holds the lock of the open file ``fd`` (False: another live process holds it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def holder(fh: IO[str]) -> str:
    """Who holds the lock file ``fh``, as its holder wrote it."""
    fh.seek(0)
    return fh.read().strip() or "a process"


def try_hold(folder: Path, name: str) -> tuple[IO[str], str | None]:
    """The lock file ``folder / name`` opened and locked without waiting: the open file and None,
    this process's id and host written in it; or, when another live process holds it, the file and
    who that is. Closing the file releases the lock."""
    fh = open_lock(folder, name)
    if not try_lock(fh.fileno()):
        return fh, holder(fh)
    fh.truncate(0)
    fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    fh.flush()
    return fh, None
