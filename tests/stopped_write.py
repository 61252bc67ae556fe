"""``python tests/stopped_write.py MODULE ARGS``: ``python -m MODULE ARGS`` (a command whose module has
``main(argv)``) that signals itself while it writes a chosen file (the subprocess entry of
``tests/test_nothing_lost.py``).

``STOP_AT=NAME``: when the bytes of the file named NAME have reached its temporary file (the write of
:func:`train.runtime.files.atomic_write`, seen as a file created as ``NAME.<token>.tmp``), they are cut
back to half, as if the write were in progress, and the process sends itself ``STOP_WITH`` (a signal
number: 9 for ``kill -9``, 15 for SIGTERM, 2 for Ctrl-C), then sleeps, so that the signal's own
action ends it. A command that opens NAME itself to write it (``open``, ``Path.write_text``: the file
truncated first) is signalled the same way once half of its first write is flushed there. The hooks
wrap ``os.open``, ``os.fsync`` and ``open`` in this process; production code has no test hooks.
"""
from __future__ import annotations

import builtins
import importlib
import io
import os
import signal
import sys
import time


def _install(name: str, signum: int) -> None:
    real_open, real_fsync = os.open, os.fsync
    temporary: set[int] = set()

    def open_(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_CREAT and os.path.basename(os.fspath(path)).startswith(name + "."):
            temporary.add(fd)
        return fd

    def fsync(fd: int) -> None:
        if fd in temporary:
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            os.kill(os.getpid(), signum)
            time.sleep(30)  # the signal ends the process meanwhile (Ctrl-C: KeyboardInterrupt raised here)
        real_fsync(fd)

    class _Stopped:
        """A file opened to write NAME in place: half of the first write reaches it, then the signal."""

        def __init__(self, file: object) -> None:
            self._file = file

        def write(self, data):  # type: ignore[no-untyped-def]
            self._file.write(data[: len(data) // 2])
            self._file.flush()
            os.kill(os.getpid(), signum)
            time.sleep(30)

        def __enter__(self) -> _Stopped:
            return self

        def __exit__(self, *exc: object) -> None:
            self._file.close()

        def __getattr__(self, attr: str) -> object:
            return getattr(self._file, attr)

    real_builtin_open = builtins.open

    def builtin_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        opened = real_builtin_open(file, mode, *args, **kwargs)
        named = not isinstance(file, int) and os.path.basename(os.fspath(file)) == name
        return _Stopped(opened) if named and any(c in mode for c in "wax+") else opened

    os.open = open_
    os.fsync = fsync
    builtins.open = io.open = builtin_open


if __name__ == "__main__":
    _install(os.environ["STOP_AT"], signal.Signals(int(os.environ["STOP_WITH"])))
    module = importlib.import_module(sys.argv[1])
    sys.exit(module.main(sys.argv[2:]))
