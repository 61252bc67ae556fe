"""Where numba keeps this package's compiled kernels: a writable place, else a temporary one.

Part of decision 41 (the persistence pool is ready at once): every kernel of the persistence engine
(TPS of paper Algorithm 5, the edge stage and the H1 reduction of Algorithm 1's "Ripser" step) is
cached on disk (``fast.persistence.jit``), so a worker loads what an earlier process compiled.
numba looks for a writable place in turn: ``NUMBA_CACHE_DIR``, ``__pycache__`` next to the sources,
the user's cache directory; when there is none (a read-only installation and home) it refuses to
define a cached function at all, and importing the package would fail.
:func:`ensure_cache_location` then points numba at a directory under the system's temporary
directory instead, before the kernels are defined; the worker processes, importing the package the
same way, choose the same one. :func:`cache_directory` names the directory chosen, where the
warm-up also keeps its locks.
"""
from __future__ import annotations

import os
import tempfile
from typing import Optional

from numba.core import config
from numba.core.caching import FunctionCache


def _probe() -> None:
    """A function of this directory: whether numba can cache it is whether it can cache the kernels."""


def ensure_cache_location() -> Optional[str]:
    """None if numba can cache the kernels where it looks by default; else the temporary cache
    directory it has been pointed at (``numba.config.CACHE_DIR``)."""
    try:
        FunctionCache(_probe)
        return None
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        config.CACHE_DIR = os.path.join(tempfile.gettempdir(), f"topodistill-numba-cache-{os.getuid()}")
        return config.CACHE_DIR


def cache_directory() -> str:
    """The directory where numba keeps this package's compiled kernels (after
    :func:`ensure_cache_location`): what a process writes there belongs to that cache."""
    return FunctionCache(_probe).cache_path
