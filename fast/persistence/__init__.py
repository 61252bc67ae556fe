"""Persistence engine of the fast path: H0/H1 pairs and critical edges for a batch of clouds.

Implements the "Ripser" / "DiffRipser" steps of paper Algorithm 1 (lines 12-13) and the pairing
map Pi of Algorithm 3, under decisions 2, 3, 6a, 6b and 6c (``docs/decisions.md``). This module
is the package's one front door: code outside ``fast/persistence/`` imports from here only.

The interface (one function, batch in, pairs and critical edges out, the engine swappable behind
it; see ``docs/design.md``): :func:`submit_diagrams` / :func:`compute_diagrams` take a batch of
selected point clouds and return (futures of) :class:`CloudPersistence`. H1 comes from an
:data:`H1Engine`, a plain function ``engine(dist, deadline) -> (birth_edges, death_edges) | None``:
a name in :data:`ENGINES` (``"native"``, the default, or ``"giotto"``), or any module-level
function with that signature. A new backend is one such function: pass it directly
(``engine=my_h1``) or add one line ``"name": my_h1`` to :data:`ENGINES` (importing it here) so it
can be chosen by name. There is no registration machinery.

Inside the package, each module holds one piece (none imports this one, so there are no cycles):

* ``contract`` - :data:`H1Engine`, the backend contract, and :class:`CloudPersistence`;
* ``cloud`` - one cloud: float64 distances, H0 from the tree, H1 read back from the engine;
* ``h0`` - the minimum spanning tree by dense Prim (:func:`prim_mst_edges`);
* ``cores`` - the cores this process may use, its share of them (:func:`worker_share`) and each
  worker's threads for one cloud (:func:`worker_threads`);
* ``pool`` - worker processes, the time budget and its miss count (decision 6c);
* ``device_batch`` - the batch path (:class:`DeviceBatch`): distances, spanning trees and apparent
  pairs of all clouds in one launch each on a device, reductions in threads; which path serves
  features on which device is :data:`DEFAULT_PATHS`;
* ``sampling`` - TPS of one cloud, compiled (:func:`tps_indices`, Algorithm 5, decision 14), run by
  the workers next to the cloud's persistence and by ``fast.tps``;
* ``giotto`` - the giotto-ph backend (:func:`giotto_h1`, decision 6b);
* ``native`` - the native exact backend (:func:`native_h1`, :func:`h1_persistence`, the batch
  form :func:`native_h1_batch`) over ``edge_stage`` (steps 1-3 per cloud, compiled),
  ``device_stage`` (steps 1-3 batched with PyTorch) and ``reduction`` (step 4, compiled);
* ``ranges`` - one cloud's row-parallel kernels on several threads at once (decision 89).

Importing this package does not import torch (the worker processes import it); only
``device_stage`` needs torch, and :func:`native_h1_batch` and :class:`DeviceBatch` import it when asked to.
"""
from __future__ import annotations

import math
import pickle
import threading
from concurrent.futures import Future
from typing import Optional, Sequence, Union

import numpy as np

from fast.persistence.cloud import deadline_after
from fast.persistence.contract import CloudPersistence, H1Engine
from fast.persistence.device_batch import DeviceBatch
from fast.persistence.giotto import giotto_h1
from fast.persistence.h0 import prim_mst_edges
from fast.persistence.native import H1Diagram, h1_persistence, native_h1, native_h1_batch
from fast.persistence.cores import available_cores, worker_share, worker_threads
from fast.persistence.pool import (
    PersistencePool,
    budget_miss_count,
    check_worker_count,
    default_pool,
    set_default_workers,
)
from fast.persistence.sampling import TPS_SKIP_CONSTANTS, farthest_point_indices, tps_indices, tps_start

__all__ = [
    "DEFAULT_ENGINE",
    "DEFAULT_PATHS",
    "ENGINES",
    "CloudPersistence",
    "DeviceBatch",
    "H1Diagram",
    "H1Engine",
    "PersistencePool",
    "Runner",
    "TPS_SKIP_CONSTANTS",
    "available_cores",
    "budget_miss_count",
    "check_time_budget",
    "check_worker_count",
    "compute_diagrams",
    "deadline_after",
    "default_pool",
    "default_runner",
    "farthest_point_indices",
    "giotto_h1",
    "h1_persistence",
    "native_h1",
    "native_h1_batch",
    "prim_mst_edges",
    "resolve_engine",
    "set_default_workers",
    "submit_diagrams",
    "submit_tps_diagrams",
    "tps_indices",
    "tps_start",
    "worker_share",
    "worker_threads",
]

ENGINES: dict[str, H1Engine] = {
    "giotto": giotto_h1,
    "native": native_h1,
}
"""Engine names accepted by ``engine=...`` -> the :data:`H1Engine` function."""

# The native engine (fast.persistence.native) is the default: exact in float64 with the
# reference's total order, and measured here 6.3x (clustered) / 7.4x (low-dimensional) faster than
# giotto-ph at N=1024, 64-d, one thread (benchmarks/tests/test_bench_h1_engine.py). giotto-ph stays
# selectable as engine="giotto".
DEFAULT_ENGINE = "native"

Runner = Union[PersistencePool, DeviceBatch]
"""Where a batch runs: the worker pool (one cloud per process) or the device batch path."""

DEFAULT_PATHS: dict[str, str] = {
    "cpu": "pool",
    "cuda": "pool",
}
"""Device type of the features -> the default path (decision 34), ``"pool"`` (:func:`default_pool`) or
``"device"`` (a :class:`DeviceBatch` on that device). Chosen by measurement: on a CPU the compiled
per-cloud stage is far cheaper than the O(B N^3) batched one (``fast/persistence/native.py``: 11 ms
against 2.0 s at N=512); the CUDA row keeps the pool until ``python -m benchmarks.gpu`` (section
``engine_paths``, which times both paths at B=12 x M=1024 and prints the row it recommends) has run
on a GPU. Device types not listed use the pool."""

_runners: dict[str, DeviceBatch] = {}
_runners_lock = threading.Lock()


def default_runner(device: str = "cpu") -> Runner:
    """The default path for features on ``device`` (a torch device string) per :data:`DEFAULT_PATHS`."""
    kind = device.split(":")[0]
    if DEFAULT_PATHS.get(kind, "pool") == "pool":
        return default_pool()
    with _runners_lock:
        if device not in _runners:
            _runners[device] = DeviceBatch(device)
        return _runners[device]


def resolve_engine(engine: Union[str, H1Engine, None]) -> H1Engine:
    """The :data:`H1Engine` for a name in :data:`ENGINES`, a callable, or None (the default)."""
    if engine is None:
        engine = DEFAULT_ENGINE
    if isinstance(engine, str):
        if engine not in ENGINES:
            raise ValueError(f"engine={engine!r} is unknown; use one of {sorted(ENGINES)} or pass an H1Engine function")
        return ENGINES[engine]
    if not callable(engine):
        raise ValueError(f"engine must be a name in {sorted(ENGINES)} or an H1Engine function, got {type(engine).__name__}")
    try:
        pickle.dumps(engine)
    except Exception as exc:  # lambdas and closures cannot reach the worker processes
        raise ValueError(
            f"engine {engine!r} cannot be pickled to the worker processes ({exc}); define it at module level"
        ) from exc
    return engine


def check_time_budget(time_budget: Optional[float]) -> None:
    """Raise ValueError unless ``time_budget`` is None (no limit) or a finite number of seconds >= 0.

    The one check of a time budget (decision 6c), for the library (:func:`submit_diagrams`,
    :func:`submit_tps_diagrams`) and for the command line (``train.options.checks.validate``,
    ``--topo-time-budget``) alike; :func:`deadline_after` turns it into a deadline when a cloud's
    H1 starts.
    """
    number = isinstance(time_budget, (int, float)) and not isinstance(time_budget, bool)
    if time_budget is not None and not (number and math.isfinite(time_budget) and time_budget >= 0):
        raise ValueError(
            f"time_budget (--topo-time-budget in training) must be None (no limit) or a finite number of "
            f"seconds >= 0, got {time_budget!r}"
        )


def _float64_clouds(points: Sequence[np.ndarray], name: str) -> list[np.ndarray]:
    arrays = []
    for b, p in enumerate(points):
        a = np.ascontiguousarray(p, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] < 1:
            raise ValueError(f"{name}[{b}] must be an (M, C) array with M >= 1, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name}[{b}] contains NaN or Inf; check the features fed to the persistence engine")
        arrays.append(a)
    return arrays


def submit_diagrams(
    points: Sequence[np.ndarray],
    engine: Union[str, H1Engine, None] = None,
    pool: Optional[Runner] = None,
    time_budget: Optional[float] = None,
    with_h1: bool = True,
    name: str = "cloud",
    device: str = "cpu",
    rows: Optional[Sequence["Future[np.ndarray]"]] = None,
) -> list["Future[CloudPersistence]"]:
    """Start the H0/H1 diagrams of a batch of clouds; returns one future per cloud at once.

    Args:
        points: per cloud an (M_b, C) array of (normalised, selected) features; converted to
            float64. Its Euclidean distances define the cloud's Rips filtration.
        engine: H1 backend: a name in :data:`ENGINES`, an :data:`H1Engine`, or None (:data:`DEFAULT_ENGINE`).
        pool: where to run: a :class:`PersistencePool` or a :class:`DeviceBatch`; None = the
            default path for ``device`` (:func:`default_runner`, :data:`DEFAULT_PATHS`).
        time_budget: seconds for the H1 of each cloud, counted from the start of that cloud's own
            H1 computation (decision 6c); None = no limit. Clouds whose H1 misses it get
            ``h1_over_budget=True`` (logged and counted).
        with_h1: False computes H0 only (e.g. ``dims=(0,)``).
        name: how the log message of a missed budget names the clouds (``"{name} {b}"``).
        device: the torch device the features came from (e.g. ``"cuda:0"``); only picks the
            default path when ``pool`` is None.
        rows: per cloud the future of the rows of ``points[b]`` to use, from
            :func:`submit_tps_diagrams` on the same ``pool`` (the other model's features of the
            same clouds); None = all rows.

    Returns:
        list of ``Future[CloudPersistence]`` in batch order.
    """
    check_time_budget(time_budget)
    arrays = _float64_clouds(points, "points")
    if rows is not None and len(rows) != len(arrays):
        raise ValueError(f"rows has {len(rows)} entries for {len(arrays)} clouds; give one selection per cloud")
    h1_engine = resolve_engine(engine)
    runner = default_runner(device) if pool is None else pool
    labels = [f"{name} {b} (budget {time_budget} s)" for b in range(len(arrays))]
    if isinstance(runner, DeviceBatch):  # one launch for the batch: the rows must be known now
        selected = arrays if rows is None else [a[r.result()] for a, r in zip(arrays, rows)]
        return runner.submit_batch(selected, h1_engine, time_budget, with_h1, labels)
    return [runner.submit(a, h1_engine, time_budget, with_h1, label=label, rows=None if rows is None else rows[b])
            for b, (a, label) in enumerate(zip(arrays, labels))]


def submit_tps_diagrams(
    clouds: Sequence[np.ndarray],
    m: int,
    seed: int = 0,
    engine: Union[str, H1Engine, None] = None,
    pool: Optional[PersistencePool] = None,
    time_budget: Optional[float] = None,
    with_h1: bool = True,
    name: str = "cloud",
) -> tuple[list["Future[np.ndarray]"], list["Future[CloudPersistence]"]]:
    """TPS (Algorithm 5, decision 14) and the H0/H1 diagrams of each cloud, in one worker per cloud.

    Cloud ``b`` (an (N_b, C) array, converted to float64) keeps ``min(m, N_b)`` points chosen by
    :func:`tps_indices` with seed ``seed + b``; its diagrams are those of the selected points.
    Other arguments as in :func:`submit_diagrams`. Returns, in batch order, the futures of the
    selected rows (each resolved as soon as its TPS is done, before the diagrams) and of the
    diagrams.
    """
    check_time_budget(time_budget)
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise ValueError(f"TPS budget m must be an integer >= 1, got {m!r}")
    arrays = _float64_clouds(clouds, "clouds")
    h1_engine = resolve_engine(engine)
    pool = default_pool() if pool is None else pool
    pairs = [
        pool.submit_sampled(a, int(m), int(seed) + b, h1_engine, time_budget, with_h1,
                            label=f"{name} {b} (budget {time_budget} s)")
        for b, a in enumerate(arrays)
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def compute_diagrams(
    points: Sequence[np.ndarray],
    engine: Union[str, H1Engine, None] = None,
    pool: Optional[Runner] = None,
    time_budget: Optional[float] = None,
    with_h1: bool = True,
) -> list[CloudPersistence]:
    """Blocking form of :func:`submit_diagrams` (same arguments): the list of results."""
    return [f.result() for f in submit_diagrams(points, engine, pool, time_budget, with_h1)]
