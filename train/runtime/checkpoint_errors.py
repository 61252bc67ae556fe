"""The errors a refused checkpoint, teacher checkpoint, Pointcept file or data pickle raises.

Kept apart from :mod:`train.runtime.checkpoint` (which needs torch) so the data loaders, which read
untrusted pickles too (:mod:`train.data.restricted_pickle`), raise the same class without importing
torch. Every message is one line naming the file, the reason and the fix; ``python -m train.run``
prints it as ``train.run: error: <message>`` and exits with status 2, and ``--resume`` passes over a
latest checkpoint refused this way to the previous one, with a warning.
"""
from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint (or other input file) that cannot be used: truncated, corrupt, foreign, or holding code."""


class CheckpointMissingError(CheckpointError, FileNotFoundError):
    """The file named as a checkpoint does not exist (also a ``FileNotFoundError``)."""


class ResumeMismatchError(CheckpointError):
    """A readable checkpoint that this run cannot continue (written with another --seed, --batch-size or
    --iters-per-epoch).
    Raised after the checkpoint was chosen: ``--resume`` does not fall back from it."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (disk full, no permission); the files already there are intact."""


def one_line(message: str) -> str:
    """``message`` with its line breaks and runs of blanks folded into single spaces."""
    return " ".join(message.split())
