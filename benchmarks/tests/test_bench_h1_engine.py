"""Native exact H1 engine (``fast.persistence.native``) against giotto-ph, in the same run.

Two measurements (decision 6c: structured 64-d clouds are the representative case, the
unstructured ones the worst case):

* ``test_h1_per_cloud``: one cloud's exact H1 (pairs and critical edges) from its float64
  distance matrix, at N = 256, 512, 1024, for the cloud families of ``benchmarks.cpu.clouds``
  (``clusters``, ``latent`` low-dimensional, ``shell`` i.i.d. Gaussian) and ``sphere`` (the
  Gaussian cloud projected on the unit sphere, pathological for every engine), each normalised
  per cloud (``scale``, decision 13). Engines: ``native`` and ``giotto`` (giotto-ph
  ``ripser_parallel``, ``n_threads=1``, decision 6b). giotto-ph on ``sphere`` takes minutes
  past N = 256 (decision 13), so it is measured there at N = 256 only. Each native measurement
  is checked against giotto-ph's diagram (float32 engine: relative 1e-6, decision 6a).
* ``test_h1_training_step``: the H1 of one training step, B = 24 clouds of M = 1024 (teacher and
  student features of 12 clouds) on all cores: through the project's pool
  (``fast.persistence.compute_diagrams``, one worker process per core, distances and H0 included)
  with either engine, the native batch form with one thread per core on precomputed
  distances (its kernels release the GIL), and (marked ``cuda``) the batch form with distances
  and the parallel stage on the GPU (the native engine's target there: at most 0.3 s per step).

Without ``--benchmark`` every case runs once at tiny sizes (smoke run, see conftest.py).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.cpu.clouds import student_teacher, teacher_features
from fast.persistence import (
    PersistencePool,
    available_cores,
    compute_diagrams,
    giotto_h1,
    h1_persistence,
    native_h1,
    native_h1_batch,
)
from reference.distances import pairwise_distances
from reference.normalize import normalize_cloud

FAMILIES = ("clusters", "latent", "shell", "sphere")
FULL_SIZES = (256, 512, 1024)
SMOKE_SIZE = {256: 24, 512: 40, 1024: 64}
GIOTTO_SPHERE_MAX = 256


def cloud_distances(family: str, n: int, seed: int) -> np.ndarray:
    """Float64 distances of one normalised 64-d cloud of ``family`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    if family == "sphere":
        x = teacher_features(n, "shell", rng)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    else:
        x = teacher_features(n, family, rng)
    return pairwise_distances(normalize_cloud(x, "scale"))


def _giotto_pairs(dist: np.ndarray) -> np.ndarray:
    birth, death = giotto_h1(dist)
    pairs = np.stack([dist[birth[:, 0], birth[:, 1]], dist[death[:, 0], death[:, 1]]], axis=1)
    pairs = pairs[pairs[:, 1] > pairs[:, 0]]
    return pairs[np.lexsort((pairs[:, 0], pairs[:, 1]))]


@pytest.mark.parametrize("engine", ["native", "giotto"])
@pytest.mark.parametrize("full_n", FULL_SIZES, ids=lambda n: f"N{n}")
@pytest.mark.parametrize("family", FAMILIES)
def test_h1_per_cloud(benchmark: Any, full_run: bool, thread_info: dict, family: str, full_n: int, engine: str) -> None:
    n = full_n if full_run else SMOKE_SIZE[full_n]
    if engine == "giotto" and family == "sphere" and n > GIOTTO_SPHERE_MAX:
        pytest.skip(f"giotto-ph on unit-sphere clouds takes minutes at N={n} (decision 13); measured at N<=256")
    dist = cloud_distances(family, n, seed=n)
    run = (lambda: h1_persistence(dist)) if engine == "native" else (lambda: giotto_h1(dist))
    (h1_persistence if engine == "native" else giotto_h1)(cloud_distances(family, 16, seed=0))  # warm-up (numba's cache)
    rounds = (1 if family == "sphere" and n > 256 else 5 if n <= 512 else 3) if full_run else 1
    result = benchmark.pedantic(run, rounds=rounds, iterations=1)
    n_pairs = len(result.pairs) if engine == "native" else len(result[0])
    benchmark.extra_info.update(thread_info, family=family, n=n, engine=engine, h1_pairs=n_pairs)
    if engine == "native" and (family != "sphere" or n <= GIOTTO_SPHERE_MAX):
        ours = result.pairs
        np.testing.assert_allclose(ours[np.lexsort((ours[:, 0], ours[:, 1]))], _giotto_pairs(dist), rtol=1e-6)


def _step_clouds(full_run: bool, family: str) -> list[np.ndarray]:
    """Teacher and student features of 12 clouds (B = 24 clouds of M points), normalised."""
    clouds, m = (12, 1024) if full_run else (2, 48)
    out = []
    for c in range(clouds):
        student, teacher = student_teacher(m, family, seed=100 + c)
        out += [normalize_cloud(teacher.numpy(), "scale"), normalize_cloud(student.detach().numpy(), "scale")]
    return out


@pytest.fixture(scope="module")
def pool() -> Iterator[PersistencePool]:
    p = PersistencePool(workers=available_cores())
    yield p
    p.shutdown()


@pytest.mark.parametrize(
    "variant",
    ["pool-native", "pool-giotto", "threads-native", pytest.param("cuda-native", marks=pytest.mark.cuda)],
)
@pytest.mark.parametrize("family", ["clusters", "latent"])
def test_h1_training_step(benchmark: Any, full_run: bool, thread_info: dict, pool: PersistencePool, family: str, variant: str) -> None:
    points = _step_clouds(full_run, family)
    cores = available_cores()
    if variant == "threads-native":
        dists = [pairwise_distances(p) for p in points]

        def run() -> list:
            return native_h1_batch(dists, threads=cores)
    elif variant == "cuda-native":
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")
        batch = torch.tensor(np.stack(points), device="cuda")

        def run() -> list:  # distances and the parallel stage on the GPU, reductions on the CPU threads
            out = native_h1_batch(points=batch, threads=cores)
            torch.cuda.synchronize()
            return out
    else:
        engine = native_h1 if variant == "pool-native" else "giotto"

        def run() -> list:
            return compute_diagrams(points, engine=engine, pool=pool)

    run()  # warm-up: starts the workers, loads the compiled kernels in each
    results = benchmark.pedantic(run, rounds=3 if full_run else 1, iterations=1)
    benchmark.extra_info.update(
        thread_info, family=family, variant=variant, clouds=len(points), m=len(points[0]), cores=cores
    )
    pairs = [r.h1_pairs if variant.startswith("pool") else r.pairs for r in results]
    assert len(pairs) == len(points) and all(np.isfinite(p).all() and len(p) > 0 for p in pairs)
