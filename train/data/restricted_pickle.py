"""Reading pickled data files that another program wrote, without letting them run code.

A pickle names the callables that rebuild its objects, and ``pickle.load`` imports and calls
whatever it names: loading an untrusted pickle can run any code. :func:`load_data_pickle` resolves
names from a fixed table instead: the few numpy functions that rebuild arrays, dtypes and scalars
(under their numpy 1 and numpy 2 module paths, for every pickle protocol) and a handful of plain
builtin types. Dicts, lists, tuples, strings, numbers, booleans and None need no name at all.
Anything else (a class, ``os.system``, ``builtins.eval``, ...) is refused before it is called.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np

from train.runtime.checkpoint_errors import CheckpointError, one_line

from .validation import CorruptFileError


class UnsafePickleError(CheckpointError):
    """A pickle names a callable outside the data-only table; it was refused, not run."""


class RefusedPickleError(CorruptFileError, CheckpointError):
    """A pickle file that is truncated, no pickle at all, or does not hold what a file of its kind holds."""


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """What protocol-2 pickles call (``_codecs.encode(text, 'latin1')``) to rebuild ``bytes``."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"bytes encoded as {encoding!r}; protocol 2 writes 'latin1'")
    return text.encode("latin1")


def _allowed_callables() -> dict[tuple[str, str], Callable[..., Any]]:
    # The rebuilding functions are taken from numpy's own pickles, so the table holds the objects
    # this numpy uses whatever their module is called; pickles written by numpy 1 name
    # numpy.core.*, numpy 2 names numpy._core.*.
    reconstruct = np.zeros(1).__reduce_ex__(2)[0]
    from_buffer = np.zeros(1).__reduce_ex__(5)[0]
    scalar = np.float64(0).__reduce__()[0]
    table: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{core}.multiarray", "scalar")] = scalar
        table[(f"{core}.numeric", "_frombuffer")] = from_buffer
    for builtins in ("builtins", "__builtin__"):  # protocol 2 writes the Python 2 name
        for kind in (set, frozenset, bytes, bytearray, complex):
            table[(builtins, kind.__name__)] = kind
    return table


_ALLOWED = _allowed_callables()


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Callable[..., Any]:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"pickle file {str(self.path)!r} names {module}.{name}, which a data file has no "
                f"reason to call; refused without running it (only plain containers, strings, "
                f"numbers and numpy arrays are loaded). Re-create the file with the tool that "
                f"should have written it, and do not open it with pickle.load.")
        return found


def load_data_pickle(path: Path, what: str) -> Any:
    """The object pickled in ``path`` (``what`` names the file kind in errors), refusing code.

    Raises :class:`UnsafePickleError` when the pickle names a callable outside the table, and
    :class:`RefusedPickleError` (a :class:`CorruptFileError`) when it is truncated or not a
    pickle; both are :class:`train.runtime.checkpoint_errors.CheckpointError` lines naming the file.
    """
    path = Path(path)
    with path.open("rb") as fh:
        try:
            return _DataUnpickler(fh, path).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
                KeyError, AttributeError) as err:
            raise RefusedPickleError(f"{what} {str(path)!r} is not a readable pickle "
                                        f"({type(err).__name__}: {one_line(str(err))}); re-create it") from None
