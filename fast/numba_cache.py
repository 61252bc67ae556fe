"""Where numba keeps this package's compiled kernels: one private directory per user and per version
of the kernels' sources, shared by every copy of the package (decision 41).

Part of decision 41 (the persistence pool is ready at once): every compiled kernel of the package
(TPS of paper Algorithm 5, the distances, the edge stage and the H1 reduction of Algorithm 1's
"Ripser" step in ``fast/persistence/``; the nearest-neighbour search of the PWCD, Eq. (2)-(3), in
``fast/pwcd.py``) is cached on disk, so a process loads what an earlier one compiled. numba's own
locations tie a cache to one copy of the sources (``__pycache__`` beside them, or a user-wide
directory named after their absolute path), so every clone, worktree or virtual environment paid
the whole compilation again. Here the cache of a version of the kernels is found by that version
alone. The kernels of one directory of :data:`KERNEL_DIRS` have one version,
:func:`kernel_sources_version`: a hash of every source file of that directory (a kernel's code
includes the helpers it calls from other files, which numba's own stamp, the hash of the kernel's
file, does not cover) and of the two files that say how kernels are compiled and cached
(``fast/jit.py`` and this one). The kernels of every copy with those sources share
``<cache root>/<version>``, where the cache root is ``$NUMBA_CACHE_DIR/topodistill`` when numba's
variable is set, else the user's cache directory for topodistill (``$XDG_CACHE_HOME/topodistill``
or ``~/.cache/topodistill`` on Linux), else ``topodistill-<uid>`` in the system's temporary
directory. numba's cache files are pickles, so a root is used only when this process's
user owns it and no one else may write to it (checked before anything there is read); where none
qualifies the kernels are not cached and every process compiles them, with one warning per
directory of kernels. :func:`cache_directory` names the directory chosen for a directory of
kernels; the persistence workers keep their warm-up locks in that of ``fast/persistence``.
Each process marks the directories it chose as used, and removes those of other versions under
the same root that no process has used for :data:`UNUSED_DAYS` days
(:func:`remove_unused_versions`), so that the cache does not grow with every edit of the kernels.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import os
import re
import shutil
import stat
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

from numba.core import config
from numba.core.caching import CompileResultCacheImpl, FunctionCache, _CacheLocator
from numba.core.dispatcher import Dispatcher
from numba.misc.appdirs import AppDirs

PACKAGE_DIR = Path(__file__).resolve().parent
PERSISTENCE_DIR = PACKAGE_DIR / "persistence"
PLAN_KERNELS_DIR = PACKAGE_DIR.parent / "train" / "models" / "plan_kernels"
KERNEL_DIRS = (PACKAGE_DIR, PERSISTENCE_DIR, PLAN_KERNELS_DIR)
"""The directories whose kernels (declared through ``fast.jit``) are kept in the shared cache: the
persistence engine's, the PWCD search's and the batch plan's (``train.models.plan_kernels``)."""


@functools.lru_cache(maxsize=None)
def kernel_sources_version(directory: Path) -> Optional[str]:
    """16 hex digits of SHA-256 over the names and bytes of every ``*.py`` file of ``directory`` (one
    of :data:`KERNEL_DIRS`) and of ``fast/jit.py`` and this file: two copies of the package share
    the compiled kernels of that directory exactly when these files are equal. None where the
    sources cannot be read as files (a zip or frozen application): no version, no cache."""
    configuration = {PACKAGE_DIR / "jit.py", Path(__file__).resolve()}
    sources = set(directory.glob("*.py"))
    if not sources or not all(path.is_file() for path in configuration):
        return None
    digest = hashlib.sha256()
    for path in sorted(sources | configuration):
        digest.update(str(path.relative_to(PACKAGE_DIR.parent)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def private_directory(path: str) -> bool:
    """Create ``path`` (mode 0700) if needed; whether it is a real directory (not a link) owned by
    this process's user that neither its group nor others may write to."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and os.access(path, os.W_OK))


def choose_cache_directory(directory: Path) -> Optional[str]:
    """The directory for the kernels of ``directory`` (one of :data:`KERNEL_DIRS`): the one of their
    version (:func:`kernel_sources_version`) under the first of ``$NUMBA_CACHE_DIR/topodistill``,
    the user's cache directory for topodistill and ``<temporary directory>/topodistill-<uid>``
    that is private with it (:func:`private_directory`); None if none is, or if the sources have
    no version."""
    version = kernel_sources_version(directory)
    if version is None:
        return None
    roots = ([os.path.join(config.CACHE_DIR, "topodistill")] if config.CACHE_DIR else []) + [
        AppDirs("topodistill", appauthor=False).user_cache_dir,
        os.path.join(tempfile.gettempdir(), f"topodistill-{os.getuid()}")]
    for root in roots:
        path = os.path.join(root, version)
        if private_directory(root) and private_directory(path):
            return path
    return None


UNUSED_DAYS = 30
"""A version's directory that no process has chosen for this many days is removed (about 1.3 MB
for ``fast/persistence``, 0.3 MB for ``fast/``): a clone in use keeps its versions, since every
process that starts marks them used."""

_VERSION_NAME = re.compile(r"[0-9a-f]{16}")


def remove_unused_versions(path: str) -> list[str]:
    """Mark ``path`` (a version's directory chosen by :func:`choose_cache_directory`) as used now,
    and remove the other versions' directories under its root that have not been marked or
    written for :data:`UNUSED_DAYS` days; returns the removed paths. Only real directories of
    this user named like a version are touched, and never a version of this copy's
    :data:`KERNEL_DIRS` (the directory of kernels this process chooses next may not be marked
    yet). Every process marks its versions when it starts
    (numba's dispatchers ask for the directory when they are defined, at import), so only a process
    that has run for longer than that can lose its version's directory; the kernels it loaded stay
    loaded, and a worker it starts afterwards makes the directory again and compiles."""
    # Only a cache is at stake, and processes start side by side (a pool's workers): an entry that
    # another process removes meanwhile, even this one (numba makes it again when it saves), is
    # passed over, and nothing here stops the import.
    limit = time.time() - UNUSED_DAYS * 86400
    in_use = {os.path.basename(path)} | {kernel_sources_version(directory) for directory in KERNEL_DIRS}
    removed: list[str] = []
    try:
        os.utime(path)
        with os.scandir(os.path.dirname(path)) as entries:
            for entry in entries:
                if entry.name in in_use or not _VERSION_NAME.fullmatch(entry.name):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and info.st_mtime < limit:
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(entry.path)
    except OSError:
        pass
    return removed


@functools.lru_cache(maxsize=None)
def cache_directory(directory: Path) -> Optional[str]:
    """Where this process keeps and finds the compiled kernels of ``directory`` (one of
    :data:`KERNEL_DIRS`, chosen once per process by :func:`choose_cache_directory`, then marked
    used by :func:`remove_unused_versions`); None where they are not cached."""
    path = choose_cache_directory(directory)
    if path is not None:
        remove_unused_versions(path)
    else:
        warnings.warn(f"the compiled kernels of {directory} are not cached: their sources are not files, or there is "
                      "no private writable directory under NUMBA_CACHE_DIR, the user's cache directory or the temporary "
                      "directory; every process compiles them (seconds)",
                      RuntimeWarning, stacklevel=2)
    return path


class _VersionLocator(_CacheLocator):
    """numba's locator for a kernel of one of :data:`KERNEL_DIRS`: the shared directory of its
    sources' version, that version as the sources' stamp, the kernel's first line to tell
    same-named kernels apart."""

    def __init__(self, py_func: Callable, directory: Path, path: str) -> None:
        self._lineno = py_func.__code__.co_firstlineno
        self._directory = directory
        self._path = path

    def get_cache_path(self) -> str:
        return self._path

    def get_source_stamp(self) -> str:
        return kernel_sources_version(self._directory)

    def get_disambiguator(self) -> str:
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func: Callable, py_file: str) -> Optional["_VersionLocator"]:
        directory = Path(py_file).resolve().parent  # one of KERNEL_DIRS (enable_kernel_cache)
        path = cache_directory(directory)
        return None if path is None else cls(py_func, directory, path)


class _KernelCacheImpl(CompileResultCacheImpl):
    _locator_classes = [_VersionLocator]


class _KernelCache(FunctionCache):
    _impl_class = _KernelCacheImpl


def enable_kernel_cache(dispatcher: Dispatcher) -> Dispatcher:
    """Cache ``dispatcher`` (a kernel defined in one of :data:`KERNEL_DIRS`) in its directory's
    :func:`cache_directory`, where there is one; returns it. Raises ValueError for a kernel
    defined elsewhere: its sources have no version here."""
    py_file = inspect.getfile(dispatcher.py_func)
    directory = Path(py_file).resolve().parent
    if directory not in KERNEL_DIRS:
        raise ValueError(f"{dispatcher.py_func.__qualname__} is defined in {py_file}; the kernels of fast.jit must be "
                         f"defined in one of {[str(d) for d in KERNEL_DIRS]}, whose sources version the shared cache")
    if cache_directory(directory) is not None:
        dispatcher._cache = _KernelCache(dispatcher.py_func)  # numba's Dispatcher.enable_caching, our cache class
    return dispatcher
