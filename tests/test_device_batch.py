"""fast.persistence's batch path (``DeviceBatch``: the "Ripser" step of paper Algorithm 1 for all
clouds in one launch per stage) returns the reference's pairs and critical edges, the worker
pool's results, and the same topological loss and gradient; the default path per device comes
from DEFAULT_PATHS; the time budget drops H1 only (decision 6c)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fast.persistence import (
    DEFAULT_PATHS,
    DeviceBatch,
    PersistencePool,
    budget_miss_count,
    compute_diagrams,
    default_pool,
    default_runner,
)
from fast.persistence.device_stage import batched_distances
from fast.topo_loss import topo_loss
from reference.persistence import rips_persistence
from strategies import point_clouds

CPU_BATCH = DeviceBatch("cpu", threads=2)
INLINE = PersistencePool(workers=0)


def _device_distances(cloud: np.ndarray) -> np.ndarray:
    return batched_distances(torch.tensor(cloud[None])).numpy()[0]


FIELDS = ("h0_pairs", "h0_death_edges", "h1_pairs", "h1_birth_edges", "h1_death_edges", "h1_over_budget")


@settings(max_examples=max(1, settings.default.max_examples // 10))
@given(st.integers(2, 14).flatmap(lambda n: st.lists(point_clouds(min_n=n, max_n=n, max_dim=6), min_size=1, max_size=3)))
def test_batch_path_equals_reference_including_ties_and_duplicates(clouds: list[np.ndarray]) -> None:
    # Kruskal in the reference's edge order: even H0 death edges match it when lengths tie. The
    # reference gets the batch path's own float64 distances (torch sums the squared differences in
    # another order than scipy, so the last bit may differ).
    results = compute_diagrams(clouds, pool=CPU_BATCH)
    for cloud, got in zip(clouds, results):
        h0, h1 = rips_persistence(_device_distances(cloud), maxdim=1)
        np.testing.assert_array_equal(got.h0_pairs, h0.pairs)
        np.testing.assert_array_equal(got.h1_pairs, h1.pairs)
        if len(cloud) >= 3:
            np.testing.assert_array_equal(got.h0_death_edges, h0.death_edges)
        np.testing.assert_array_equal(got.h1_birth_edges, h1.birth_edges)
        np.testing.assert_array_equal(got.h1_death_edges, h1.death_edges)


def _assert_same_results(a: list, b: list) -> None:
    for x, y in zip(a, b, strict=True):
        for field in FIELDS:
            np.testing.assert_allclose(getattr(x, field), getattr(y, field), rtol=1e-13, err_msg=field)


def test_batch_path_equals_worker_pool_on_mixed_sizes_and_other_engines() -> None:
    rng = np.random.default_rng(3)
    clouds = [rng.normal(size=(n, 8)) for n in (40, 40, 2, 25, 40)]
    for engine in ("native", "giotto"):
        _assert_same_results(compute_diagrams(clouds, engine=engine, pool=CPU_BATCH),
                             compute_diagrams(clouds, engine=engine, pool=INLINE))
    h0_only = compute_diagrams(clouds, pool=CPU_BATCH, with_h1=False)
    assert all(len(r.h1_pairs) == 0 and not r.h1_over_budget for r in h0_only)


def test_batch_path_gives_the_same_topological_loss_and_gradient() -> None:
    rng = np.random.default_rng(4)
    teacher = torch.tensor(rng.normal(size=(90, 16)))
    start = rng.normal(size=(90, 16))
    results = []
    for pool in (CPU_BATCH, INLINE):
        student = torch.tensor(start, requires_grad=True)
        loss = topo_loss(student, teacher, [30, 60, 90], m=20, pool=pool)
        loss.backward()
        results.append((float(loss.detach()), student.grad))
    (loss_batch, grad_batch), (loss_pool, grad_pool) = results
    assert loss_batch > 0 and loss_batch == pytest.approx(loss_pool, rel=1e-12)
    torch.testing.assert_close(grad_batch, grad_pool, rtol=1e-10, atol=1e-13)


def test_missed_budget_drops_h1_only_and_is_counted() -> None:
    rng = np.random.default_rng(6)
    clouds = [rng.normal(size=(30, 4)) for _ in range(2)]
    before = budget_miss_count()
    results = compute_diagrams(clouds, pool=CPU_BATCH, time_budget=0.0)
    assert all(r.h1_over_budget and len(r.h1_pairs) == 0 and len(r.h0_pairs) == 29 for r in results)
    assert budget_miss_count() - before == 2


def test_default_path_per_device_comes_from_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEFAULT_PATHS["cpu"] == "pool" and default_runner("cpu") is default_pool()
    assert default_runner("xla") is default_pool()  # unlisted device types use the pool
    monkeypatch.setitem(DEFAULT_PATHS, "cpu", "device")
    runner = default_runner("cpu")
    assert isinstance(runner, DeviceBatch) and default_runner("cpu") is runner


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="threads must be >= 1"):
        DeviceBatch("cpu", threads=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            DeviceBatch("cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batch_path_on_cuda_equals_worker_pool_and_reference() -> None:
    rng = np.random.default_rng(8)
    generic = [rng.normal(size=(128, 64)) for _ in range(4)]
    on_cuda = DeviceBatch("cuda")
    _assert_same_results(compute_diagrams(generic, pool=on_cuda), compute_diagrams(generic, pool=INLINE))
    grid = rng.integers(0, 3, (64, 3)).astype(float)  # many ties and duplicated points
    got = compute_diagrams([grid], pool=on_cuda)[0]
    h0, h1 = rips_persistence(_device_distances(grid), maxdim=1)
    np.testing.assert_array_equal(got.h0_death_edges, h0.death_edges)
    np.testing.assert_array_equal(got.h1_birth_edges, h1.birth_edges)
    np.testing.assert_array_equal(got.h1_death_edges, h1.death_edges)
