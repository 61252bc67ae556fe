"""Ctrl-C and SIGTERM in ``python -m train.condense`` (decision 80): the run stops where it is and
the command says in one line what was kept and the exact command that goes on from it, exiting
128 + the signal's number (130 for SIGINT, 143 for SIGTERM, the shells' convention).

:func:`stopping` makes the first of :data:`STOP_SIGNALS` raise :class:`Stopped` where the process
is (a :class:`BaseException`, as ``KeyboardInterrupt``: no refusal catches it) and ignores the
others while the line is written. What a stopped distillation keeps is its last checkpoint
(:mod:`train.condense.files.distill_checkpoint`, written whole or not at all); with ``--procs N`` the
launching process passes the signal on to its ranks, which stop with 128 + its number, and says
the line once they have all ended.
"""
from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """The run was stopped by ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def code(self) -> int:
        """The exit status: 128 + the signal's number."""
        return 128 + self.signum


def stopped_code(code: int) -> int | None:
    """The signal a rank's exit status ``code`` says it was stopped by, else None."""
    return code - 128 if code - 128 in STOP_SIGNALS else None


@contextmanager
def stopping() -> Iterator[None]:
    """While the block runs, the first of :data:`STOP_SIGNALS` raises :class:`Stopped` (main thread only)."""
    def stop(signum: int, frame: Any) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not break the line being written
        raise Stopped(signum)
    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
