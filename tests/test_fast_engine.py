"""fast.persistence (the persistence step of paper Algorithm 1 and the pairing map of Algorithm 3):
H0 by dense Prim and H1 by the swappable engine equal reference.rips_persistence, critical edges
included; giotto-ph's edges carry their reported values (decision 6b); the time budget drops H1
only, counted and logged (decision 6c); the worker pool and its failure paths."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import pytest
from hypothesis import given, settings
from scipy.spatial.distance import cdist

from fast.persistence import (
    PersistencePool,
    budget_miss_count,
    compute_diagrams,
    default_pool,
    giotto_h1,
    prim_mst_edges,
    resolve_engine,
    submit_diagrams,
    submit_tps_diagrams,
)
from fast.persistence.cloud import distances  # internal: the workers' distance matrix
from pathological import takes_a_fifth_of_a_second
from reference.persistence import rips_persistence
from reference.tps import tps_cloud
from strategies import point_clouds, tie_free_point_clouds

FEW = max(settings.default.max_examples // 10, 10)
INLINE = PersistencePool(workers=0)


@settings(max_examples=FEW)
@given(cloud=point_clouds(max_n=60, max_dim=8))
def test_h0_pairs_equal_reference_on_any_cloud_including_ties_and_duplicates(cloud: np.ndarray) -> None:
    result = compute_diagrams([cloud], pool=INLINE, with_h1=False)[0]
    want = rips_persistence(cdist(cloud, cloud), maxdim=0)[0]
    np.testing.assert_array_equal(result.h0_pairs, want.pairs)
    # Whatever tree was chosen among tied edges, each death edge has the length of its death.
    lengths = np.linalg.norm(cloud[result.h0_death_edges[:, 0]] - cloud[result.h0_death_edges[:, 1]], axis=1)
    np.testing.assert_allclose(lengths, result.h0_pairs[:, 1], rtol=1e-14)


@settings(max_examples=FEW)
@given(cloud=point_clouds(max_n=60, max_dim=8))
def test_cloud_distances_equal_scipy_cdist_bit_for_bit(cloud: np.ndarray) -> None:
    for points in (cloud, cloud[:1], cloud[:0]):
        np.testing.assert_array_equal(distances(points), cdist(points, points))


@settings(max_examples=FEW)
@given(cloud=point_clouds(max_n=60, max_dim=8))
def test_native_h0_death_edges_equal_reference_with_ties_and_duplicates(cloud: np.ndarray) -> None:
    """With H1 the native engine's H0 is the tree of its edge stage: Kruskal in the reference's
    edge order, so even among tied edges it picks the reference's death edges, in its order."""
    result = compute_diagrams([cloud], engine="native", pool=INLINE)[0]
    h0 = rips_persistence(cdist(cloud, cloud), maxdim=0)[0]
    np.testing.assert_array_equal(result.h0_pairs, h0.pairs)
    np.testing.assert_array_equal(result.h0_death_edges, h0.death_edges)


@pytest.mark.parametrize("engine", ["giotto", "native"])
@settings(max_examples=FEW)
@given(cloud=tie_free_point_clouds(max_n=22, max_dim=6))
def test_pairs_and_critical_edges_equal_reference_on_tie_free_clouds(engine: str, cloud: np.ndarray) -> None:
    result = compute_diagrams([cloud], engine=engine, pool=INLINE)[0]
    h0, h1 = rips_persistence(cdist(cloud, cloud), maxdim=1)
    np.testing.assert_array_equal(result.h0_pairs, h0.pairs)
    np.testing.assert_array_equal(result.h0_death_edges, h0.death_edges)
    np.testing.assert_array_equal(result.h1_pairs, h1.pairs)
    np.testing.assert_array_equal(result.h1_birth_edges, h1.birth_edges)
    np.testing.assert_array_equal(result.h1_death_edges, h1.death_edges)
    assert not result.h1_over_budget


def test_prim_tree_of_a_larger_cloud_is_the_reference_minimum_spanning_tree() -> None:
    x = np.random.default_rng(0).normal(size=(300, 16))
    dist = cdist(x, x)
    want = rips_persistence(dist, maxdim=0)[0].death_edges
    got = prim_mst_edges(dist)
    assert {tuple(e) for e in got} == {tuple(e) for e in want}


def test_giotto_critical_edges_have_the_length_of_their_birth_and_death() -> None:
    # Decision 6b regression: with n_threads > 1 giotto-ph reports wrong birth edges. Here the
    # diagram read from the reported edges must be the reference diagram of the same cloud.
    x = np.random.default_rng(1).normal(size=(400, 16))
    dist = cdist(x, x)
    birth, death = giotto_h1(dist)
    pairs = np.stack([dist[birth[:, 0], birth[:, 1]], dist[death[:, 0], death[:, 1]]], axis=1)
    pairs = pairs[np.lexsort((pairs[:, 0], pairs[:, 1]))]
    want = rips_persistence(dist, maxdim=1)[1].pairs
    assert len(pairs) == len(want) > 100
    np.testing.assert_allclose(pairs, want, rtol=1e-6)


def test_giotto_h1_raises_when_an_edge_disagrees_with_its_reported_value(monkeypatch: pytest.MonkeyPatch) -> None:
    import gph

    real = gph.ripser_parallel

    def wrong_birth_edge(*args: object, **kwargs: object) -> dict:
        out = real(*args, **kwargs)
        gens = out["gens"][1][0]
        gens[0, :2] = gens[1, :2]  # what the multi-thread bug does: another pair's birth edge
        return out

    monkeypatch.setattr(gph, "ripser_parallel", wrong_birth_edge)
    x = np.random.default_rng(2).normal(size=(60, 3))
    with pytest.raises(RuntimeError, match="decision 6b"):
        giotto_h1(cdist(x, x))


def test_worker_processes_give_the_inline_results() -> None:
    rng = np.random.default_rng(3)
    clouds = [rng.normal(size=(n, 5)) for n in (2, 30, 120, 7)]
    futures = submit_diagrams(clouds)  # the shared process pool
    inline = compute_diagrams(clouds, pool=INLINE)
    for future, want in zip(futures, inline):
        got = future.result()
        for field in ("h0_pairs", "h0_death_edges", "h1_pairs", "h1_birth_edges", "h1_death_edges"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    assert default_pool() is default_pool()


@pytest.mark.parametrize("pool", [INLINE, None], ids=["inline", "processes"])
def test_zero_time_budget_keeps_h0_drops_h1_and_counts_and_logs_each_cloud(
    pool: Optional[PersistencePool], caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(4)
    clouds = [rng.normal(size=(n, 3)) for n in (25, 40)]
    full = compute_diagrams(clouds, pool=pool)
    before = budget_miss_count()
    with caplog.at_level(logging.WARNING, logger="fast.persistence"):
        cut = compute_diagrams(clouds, pool=pool, time_budget=0.0)
    assert budget_miss_count() - before == len(clouds)
    assert sum("missed its time budget" in r.getMessage() for r in caplog.records) == len(clouds)
    for c, f in zip(cut, full):
        assert c.h1_over_budget and len(c.h1_pairs) == 0 < len(f.h1_pairs)
        np.testing.assert_array_equal(c.h0_pairs, f.h0_pairs)


def test_a_cloud_past_its_budget_is_stopped_and_the_pool_keeps_working() -> None:
    # Unit-normalised 64-d Gaussian features are the pathological case of decision 13 (minutes
    # of H1 at 512 points); the budget stops it and the worker is replaced.
    rng = np.random.default_rng(5)
    slow = rng.normal(size=(600, 64))
    slow /= np.linalg.norm(slow, axis=1, keepdims=True)
    pool = PersistencePool(workers=1)
    try:
        before = budget_miss_count()
        result = compute_diagrams([slow], engine="giotto", pool=pool, time_budget=0.3)[0]
        assert result.h1_over_budget and len(result.h0_pairs) == 599
        assert budget_miss_count() - before == 1
        small = rng.normal(size=(30, 3))
        again = compute_diagrams([small], pool=pool)[0]
        want = compute_diagrams([small], pool=INLINE)[0]
        np.testing.assert_array_equal(again.h1_pairs, want.h1_pairs)
    finally:
        pool.shutdown()


def _engine_that_fails(dist: np.ndarray, deadline: Optional[float]) -> tuple[np.ndarray, np.ndarray]:
    raise ArithmeticError(f"engine cannot handle {dist.shape}")


def _engine_that_gives_up(dist: np.ndarray, deadline: Optional[float]) -> None:
    return None


def test_an_engine_error_in_a_worker_reaches_the_caller_and_the_pool_recovers() -> None:
    pool = PersistencePool(workers=1)
    try:
        cloud = np.random.default_rng(6).normal(size=(12, 2))
        with pytest.raises(RuntimeError, match="ArithmeticError: engine cannot handle"):
            compute_diagrams([cloud], engine=_engine_that_fails, pool=pool)
        assert len(compute_diagrams([cloud], pool=pool)[0].h0_pairs) == 11
    finally:
        pool.shutdown()


def test_an_engine_returning_none_counts_as_a_missed_budget() -> None:
    before = budget_miss_count()
    result = compute_diagrams([np.eye(5)], engine=_engine_that_gives_up, pool=INLINE, time_budget=60.0)[0]
    assert result.h1_over_budget and budget_miss_count() - before == 1


@pytest.mark.parametrize(
    "engine, message",
    [("ripser", "unknown"), (lambda d, t: None, "pickled"), (3, "H1Engine function")],
)
def test_engine_selection_rejects_unknown_names_and_unpicklable_functions(engine: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_engine(engine)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "points, budget, message",
    [
        ([np.array([[0.0, np.nan]])], None, r"points\[0\] contains NaN"),
        ([np.zeros(3)], None, r"points\[0\] must be an \(M, C\) array"),
        ([np.zeros((3, 2))], -1.0, "time_budget"),
    ],
)
def test_submit_diagrams_rejects_bad_input(points: list, budget: Optional[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        submit_diagrams(points, pool=INLINE, time_budget=budget)


def test_prim_rejects_a_non_square_matrix() -> None:
    with pytest.raises(ValueError, match="square"):
        prim_mst_edges(np.zeros((3, 4)))


def test_the_budget_counts_each_clouds_own_h1_not_its_time_in_the_queue() -> None:
    # One worker, six clouds whose H1 takes 0.2 s each: together they exceed the 1 s budget, so a
    # deadline for the whole batch would drop the last ones; each cloud's own H1 fits (decision 6c).
    pool = PersistencePool(workers=1)
    try:
        rng = np.random.default_rng(8)
        clouds = [rng.normal(size=(20, 3)) for _ in range(6)]
        before = budget_miss_count()
        results = compute_diagrams(clouds, engine=takes_a_fifth_of_a_second, pool=pool, time_budget=1.0)
        assert budget_miss_count() == before and not any(r.h1_over_budget for r in results)
    finally:
        pool.shutdown()


@pytest.mark.parametrize("pool", [INLINE, None], ids=["inline", "processes"])
def test_tps_in_the_worker_selects_the_reference_rows_and_both_models_use_them(pool: Optional[PersistencePool]) -> None:
    rng = np.random.default_rng(9)
    teacher = [rng.normal(size=(n, 6)) for n in (5, 90, 140)]
    teacher[2][::7] = teacher[2][3]  # duplicated points: ties in the TPS argmax
    student = [t + 0.1 * rng.normal(size=t.shape) for t in teacher]
    rows, teacher_futures = submit_tps_diagrams(teacher, 40, seed=11, pool=pool)
    student_futures = submit_diagrams(student, pool=pool, rows=rows)
    for b, (t, s) in enumerate(zip(teacher, student)):
        want = tps_cloud(t, 40, 11 + b)
        np.testing.assert_array_equal(rows[b].result(), want)
        for got, points in ((teacher_futures[b], t), (student_futures[b], s)):
            expected = compute_diagrams([points[want]], pool=INLINE)[0]
            for field in ("h0_pairs", "h0_death_edges", "h1_pairs", "h1_birth_edges", "h1_death_edges"):
                np.testing.assert_array_equal(getattr(got.result(), field), getattr(expected, field))
