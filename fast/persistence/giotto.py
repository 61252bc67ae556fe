"""The giotto-ph H1 backend (``engine="giotto"``): giotto-ph's ``ripser_parallel``, single-threaded.

An :data:`~fast.persistence.contract.H1Engine` for the H1 part of the "Ripser" step of paper
Algorithm 1 (line 12), under decision 6b.

Why giotto-ph was the first H1 backend (measured on this 2-core machine when it was chosen):
giotto-ph's ``ripser_parallel(..., return_generators=True)`` is the fastest engine on PyPI that
returns the critical simplices (~0.45 s at N=1024, 64-d, one core); ``ripser`` takes ~1.4 s and
returns no critical simplices; gudhi builds the whole Rips complex (N^3/6 triangles at N=1024)
before computing. giotto-ph is always called with ``n_threads=1``: with more threads it reports
wrong H1 *birth* edges (decision 6b; re-measured here: 3.2% of the pairs at N=1024, 64-d, with
``n_threads=2``), so :func:`giotto_h1` also checks every reported critical edge against the reported
value and raises if they ever disagree. The project's own float64 engine
(``fast.persistence.native``) follows the reference's total order exactly and is the default
because it is exact and several times faster; giotto-ph stays selectable.
"""
from __future__ import annotations

import threading
from typing import Optional

import numpy as np

# giotto-ph's bindings are not safe to enter from several threads of one process at once: three
# threads of fast.persistence.device_batch calling ripser_parallel together deadlocked here (all
# idle, one inside the binding's result conversion, one in an import it triggers). The pool's
# worker processes never share it; threads in one process take turns.
_GIOTTO_LOCK = threading.Lock()


def giotto_h1(dist: np.ndarray, deadline: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
    """:data:`H1Engine` backed by giotto-ph ``ripser_parallel`` (``n_threads=1``, decision 6b).

    giotto-ph cannot be interrupted, so ``deadline`` is not used here (the pool enforces it).
    Raises RuntimeError if a reported critical edge's length (rounded to float32, giotto-ph's
    precision) differs from the value giotto-ph reports for it: that is the multi-thread bug of
    decision 6b, and a wrong edge would silently route gradients to the wrong distance.
    """
    from gph import ripser_parallel  # imported here: the workers and callers that use it pay

    with _GIOTTO_LOCK:
        out = ripser_parallel(dist, metric="precomputed", maxdim=1, n_threads=1, return_generators=True)
    finite_h1 = out["gens"][1]
    gens = finite_h1[0] if len(finite_h1) else np.empty((0, 4), dtype=np.int64)
    values = out["dgms"][1]
    values = values[np.isfinite(values[:, 1])]
    if len(gens) != len(values):
        raise RuntimeError(f"giotto_h1: giotto-ph returned {len(gens)} H1 generators for {len(values)} finite pairs")
    birth = np.sort(gens[:, :2].astype(np.int64), axis=1)
    death = np.sort(gens[:, 2:].astype(np.int64), axis=1)
    edge_values = np.stack([dist[birth[:, 0], birth[:, 1]], dist[death[:, 0], death[:, 1]]], axis=1)
    bad = np.float32(edge_values) != values
    if bad.any():
        raise RuntimeError(
            f"giotto_h1: {int(bad.any(axis=1).sum())} of {len(values)} H1 critical edges have a length that "
            "differs from the reported birth/death (decision 6b: giotto-ph with n_threads > 1); "
            "check the giotto-ph version and that n_threads=1"
        )
    return birth, death
