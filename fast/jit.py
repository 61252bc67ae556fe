"""How the package's numba kernels are compiled: one decorator per kind of function.

Every compiled function (in ``fast/persistence/``: TPS of paper Algorithm 5, the distances, the
edge stage and the H1 reduction behind Algorithm 1's "Ripser" step; in ``fast/pwcd.py``: the
nearest-neighbour search of the PWCD, Eq. (2)-(3)) runs without the GIL (threads on different
clouds run in parallel) and is cached on disk, so a process loads what an earlier one compiled
(decision 41). Compiling is most of a new machine's pool start, so the kinds differ only in what
they cost to compile:

* :data:`kernel` - called from Python (and by tests).
* :data:`helper` - called only from other compiled functions: numba builds no CPython wrapper
  for it, about 0.035 CPU-s less per function in every fresh cache (measured here, decision 41).
* :data:`inlined` - a small function inlined into its callers in numba's IR (no call at all).

Each is cached in the directory of its sources' version (``fast.numba_cache``), shared by every
copy of the package, so a machine compiles a version of the kernels once; a kernel must be
defined in one of the directories ``fast.numba_cache.KERNEL_DIRS`` names.

No kind gets numba's C-callable wrapper (``no_cfunc_wrapper``): it serves only taking a compiled
function's address (``cfunc``, first-class function values), which nothing here does, and
building it for every function cost 0.3-1.2 CPU-s of a fresh cache (decision 41).

Compile-time rules for the bodies (decision 41): allocate with ``np.empty(size, dtype)`` (``size``
an integer or a tuple of two, ``dtype`` a numpy scalar type) and fill with loops, never
``np.zeros``/``np.full``: each of those, per dtype and shape, compiles numba's allocation,
fill and dispatch implementations again in every fresh process; copy arrays with loops (a slice
assignment of one array to another brings numba's shape-mismatch message); call compiled
functions with typed arguments (``np.int64(0)``, not ``0``: a literal compiles a second copy).
"""
from __future__ import annotations

from typing import Any, Callable

from numba import njit
from numba.core.dispatcher import Dispatcher

from fast.numba_cache import enable_kernel_cache


def _cached(**options: Any) -> Callable[[Callable], Dispatcher]:
    compile_lazily = njit(nogil=True, no_cfunc_wrapper=True, **options)
    return lambda py_func: enable_kernel_cache(compile_lazily(py_func))


kernel = _cached()
helper = _cached(no_cpython_wrapper=True)
inlined = _cached(inline="always")
