"""How a rank process ends: the Python half of an interpreter's exit, then ``os._exit`` (decision 46).

A rank of a run on more than one process (``--procs`` or torchrun) keeps gloo's threads past
``destroy_process_group`` once DDP was built (two ``pt_gloo_runloop``, ``gloo_tcp_loop``; rank 0
also ``pt_tcpstore_uv``): the group stays alive, held from C++, until the process ends. A run-loop
thread that finishes a collective drops the work's tensors, and freeing a tensor that has a Python
object takes the GIL. When the rank's interpreter is finalizing by then (the thread asked for the
GIL in the last milliseconds of the rank's Python), CPython (3.11) ends the asking thread with
``pthread_exit``, whose unwinding through the tensor's destructor (``noexcept``) calls
``std::terminate``: "terminate called without an active exception", SIGABRT, after the checkpoint
was written, and the launcher reported 134 instead of 75. The threads cannot be joined
from Python, so :func:`leave` never finalizes: it does what the interpreter's exit does in Python
(waits for the threads Python started that are not daemons, runs the ``atexit`` functions: the
persistence pool's shutdown, ``logging.shutdown``, multiprocessing's end of the loader workers),
flushes ``sys.stdout`` and ``sys.stderr`` and ends the process with ``os._exit``: the
interpreter's finalization (collections, module teardown) and the C++ static destructors are
skipped, and the group's threads end with the process. Account: ``docs/notes/preempted-rank-exit.md``.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def leave(code: int) -> NoReturn:
    """End this process with exit status ``code`` after the Python part of an interpreter's exit,
    without its finalization (see the module docstring). An ``atexit`` function that fails prints
    its traceback and the rest still run, as at a normal exit."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # the functions an interpreter's exit runs (and then forgets)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed stream, a full disk: nothing more can be said there
            pass
    os._exit(code)
