"""One cloud's persistence on several threads equals it on one thread, bit for bit (decision 89).

Claims checked:
- the distances, every array of the edge stage (ranks, endpoints, neighbour lists up to each
  degree, list positions, columns, tree, partners, whether and at which try the prefix was cut)
  and the H0 and H1 diagrams are the same at 2, 3, 4 and 7 threads as at one, on clouds of every
  family of ``tests/strategies.py`` (exact ties, duplicated points), on 1, 2 and 3 points, on
  sizes no thread count divides, and with more threads than rows, tiles or edges;
- the certificate's answer is the one-thread answer at every budget of vertex visits, including
  budgets that no thread's own rows exceed but their sum does; a bad matrix names the same entry;
- through the worker pool and inline, a cloud's diagrams are the same at any thread count; the
  pool's thread count defaults to its process's share of the cores divided among its workers
  (1 where there are as many workers as cores, and inline) and is checked;
- one thread starts no helper thread.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from fast.persistence import PersistencePool, native_h1, tps_indices, worker_threads
from fast.persistence import edge_stage, ranges
from fast.persistence.cloud import cloud_persistence, distances
from fast.persistence.edge_stage import EdgeStage, cpu_edge_stage, edges_apparent_between, enclosing_radius
from strategies import build_cloud, point_clouds

THREADS = (2, 3, 4, 7)
_DIAGRAM = ("h0_pairs", "h0_death_edges", "h1_pairs", "h1_birth_edges", "h1_death_edges")
_ARRAYS = ("u", "v", "rank", "deg", "pu", "pv", "columns", "tree", "partner")


def _assert_same_stage(got: EdgeStage, want: EdgeStage) -> None:
    for field in _ARRAYS:
        a, b = getattr(got, field), getattr(want, field)
        assert a.dtype == b.dtype, field
        np.testing.assert_array_equal(a, b, err_msg=field)
    for a, k in enumerate(want.deg):  # past its degree a row of nbr is never read nor written
        np.testing.assert_array_equal(got.nbr[a, :k], want.nbr[a, :k])
    assert (got.truncated, got.attempt) == (want.truncated, want.attempt)


def _assert_same_cloud(points: np.ndarray, threads: int) -> None:
    """Distances, both edge stages (cut and at the radius) and the diagrams at ``threads`` and at one."""
    want_dist = distances(points)
    got_dist = distances(points, threads)
    np.testing.assert_array_equal(got_dist, want_dist)
    assert got_dist.tobytes() == want_dist.tobytes()  # the same bits, signed zeros included
    if len(points) == 0:
        return
    for truncate in (True, False):
        _assert_same_stage(cpu_edge_stage(want_dist, truncate=truncate, threads=threads),
                           cpu_edge_stage(want_dist, truncate=truncate))
    want = cloud_persistence(points, native_h1, None, True)
    got = cloud_persistence(points, native_h1, None, True, threads)
    for field in _DIAGRAM:
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)


@settings(max_examples=max(1, settings.default.max_examples // 5))
@given(point_clouds(min_n=1, max_n=90), st.sampled_from(THREADS))
def test_threads_give_the_one_thread_cloud_on_every_family(points: np.ndarray, threads: int) -> None:
    _assert_same_cloud(points, threads)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 33, 65, 101])
@pytest.mark.parametrize("threads", THREADS)
def test_threads_give_the_one_thread_cloud_at_small_and_odd_sizes(n: int, threads: int) -> None:
    # 1-3 points: more threads than rows; 33, 65: one row past a tile; 101: no count divides it
    _assert_same_cloud(build_cloud("duplicated", n, 4, seed=n), threads)
    _assert_same_cloud(np.round(build_cloud("gaussian", n, 3, seed=n), 1), threads)  # many exact ties


@pytest.mark.parametrize("seed", [0, 3])
def test_threads_give_the_one_thread_cloud_when_a_later_try_is_taken(seed: int) -> None:
    """TPS clouds of a 30-d Gaussian (the training features' effective dimension): the first one's
    first prefix fails its certificate, the second's has a class that outlives it, so the
    reduction asks for the next try's stage (decision 83), on the same threads."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1024, 30))
    x = x[tps_indices(x, 300, 0)]
    d = distances(x)
    assert cpu_edge_stage(d, truncate=True).attempt == (1 if seed == 0 else 0)
    for threads in (2, 3):
        _assert_same_cloud(x, threads)
        _assert_same_stage(cpu_edge_stage(d, truncate=True, attempt=1, threads=threads),
                           cpu_edge_stage(d, truncate=True, attempt=1))


@pytest.mark.parametrize("threads", THREADS)
def test_the_certificate_gives_the_one_thread_answer_at_every_budget(monkeypatch: pytest.MonkeyPatch,
                                                                    threads: int) -> None:
    # The budget of vertex visits is checked on the rows' counts in row order; with a budget
    # below a cloud's whole search the answer turns False, on one thread and on several alike,
    # also where each thread's own rows stay under it.
    x = np.random.default_rng(8).normal(size=(120, 6))
    d = cdist(x, x)
    radius, centre, _ = enclosing_radius(d)
    lo = float(np.quantile(d[d > 0], 0.5))  # every edge above it has a witness
    monkeypatch.setattr(edge_stage, "_CERTIFICATE_WORK", 0)
    answers = []
    for floor in [0, *np.unique(np.geomspace(1, 4 * d.shape[0] ** 2, 60).astype(int))]:
        monkeypatch.setattr(edge_stage, "_CERTIFICATE_FLOOR", int(floor))
        want = edges_apparent_between(d, lo, radius, centre)
        assert edges_apparent_between(d, lo, radius, centre, threads) == want, floor
        answers.append(want)
    assert answers[0] is False and answers[-1] is True  # both outcomes were met


@pytest.mark.parametrize("threads", THREADS)
def test_a_bad_matrix_names_the_same_entry_on_threads(threads: int) -> None:
    x = np.random.default_rng(3).normal(size=(70, 3))
    for i, j, value in ((0, 1, -1.0), (40, 65, np.nan), (69, 68, 5.0), (50, 50, 1e-9)):
        d = cdist(x, x)
        d[i, j] = value
        d[60, 61] = np.inf  # a later bad entry, in another thread's rows: the first one is named
        assert enclosing_radius(d, threads) == enclosing_radius(d)
        with pytest.raises(ValueError, match=r"not a distance matrix at \[") as one:
            cpu_edge_stage(d)
        with pytest.raises(ValueError) as several:
            cpu_edge_stage(d, threads=threads)
        assert str(several.value) == str(one.value)


def test_the_pool_gives_the_one_thread_diagrams_at_any_thread_count() -> None:
    # workers and inline, whole clouds and clouds sampled by TPS in the worker first
    rng = np.random.default_rng(12)
    clouds = [rng.normal(size=(n, 8)) for n in (1, 2, 3, 150)] + [np.round(rng.normal(size=(150, 3)), 1)]
    one = PersistencePool(workers=0, threads=1)
    pools = [PersistencePool(workers=1, threads=3), PersistencePool(workers=0, threads=2)]
    try:
        for pool in pools:
            whole = [pool.submit(c, native_h1, None) for c in clouds]
            sampled = [pool.submit_sampled(c, 100, 0, native_h1, None) for c in clouds]
            for c, got, (rows, got_sampled) in zip(clouds, whole, sampled):
                for cloud, result in ((c, got), (c[rows.result()], got_sampled)):
                    want = one.submit(cloud, native_h1, None).result()
                    for field in _DIAGRAM:
                        np.testing.assert_array_equal(getattr(result.result(), field), getattr(want, field))
    finally:
        for pool in pools:
            pool.shutdown()


@pytest.mark.parametrize(("share", "workers", "threads"), [(2, 2, 1), (2, 1, 2), (16, 16, 1), (16, 8, 2),
                                                           (16, 3, 5), (16, 32, 1), (16, 0, 1)])
def test_a_worker_gets_the_share_of_the_cores_divided_among_the_workers(monkeypatch: pytest.MonkeyPatch,
                                                                       share: int, workers: int, threads: int) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: share)  # a machine of ``share`` cores, one process on it
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(share)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert worker_threads(workers) == threads
    assert PersistencePool(workers=0).threads == 1
    assert PersistencePool(workers=0, threads=4).threads == 4


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_a_bad_thread_count_is_refused(threads: object) -> None:
    with pytest.raises(ValueError, match="threads must be None"):
        PersistencePool(workers=0, threads=threads)


def test_one_thread_starts_no_helper_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(count: int) -> None:
        raise AssertionError(f"{count} helper threads asked for")

    monkeypatch.setattr(ranges, "_helpers", refuse)
    x = np.random.default_rng(4).normal(size=(80, 5))
    cloud_persistence(x, native_h1, None, True, threads=1)
    for n, threads in ((0, 3), (1, 3), (5, 1)):
        assert len(ranges.split(n, threads)) == min(n, 1)
    with pytest.raises(AssertionError, match="helper threads"):
        cloud_persistence(x, native_h1, None, True, threads=2)


@pytest.mark.parametrize("triangular", [False, True])
@pytest.mark.parametrize("n", [2, 3, 7, 64, 1000])
@pytest.mark.parametrize("threads", [2, 3, 4, 7, 50])
def test_ranges_cover_every_row_once_in_order(n: int, threads: int, triangular: bool) -> None:
    parts = ranges.split(n, threads, triangular)
    assert parts[0][0] == 0 and parts[-1][1] == n and len(parts) <= min(threads, n)
    assert all(lo < hi for lo, hi in parts) and all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
