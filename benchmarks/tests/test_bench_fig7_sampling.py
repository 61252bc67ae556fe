"""Paper Figure 7: TPS (Algorithm 5) vs random sampling time as the cloud grows, M = 128.

TPS is M sequential farthest-point steps over all N points (O(N M)); random sampling is one
permutation. Methods: ``fast.tps`` (ours, torch), ``reference.tps_cloud`` (the NumPy loop, paper style)
and random sampling (``torch.randperm``). Each result is checked: M distinct in-range indices, and
both TPS implementations pick the same points.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.cpu.clouds import teacher_features
from fast.tps import tps as fast_tps
from reference.tps import tps_cloud

M = 128


def _random(feats: torch.Tensor, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(feats.shape[0], generator=gen)[:M].numpy()


def _fast(feats: torch.Tensor, seed: int) -> np.ndarray:
    return fast_tps(feats, [feats.shape[0]], M, seed)[0].numpy()


def _reference(feats: torch.Tensor, seed: int) -> np.ndarray:
    return tps_cloud(feats.numpy(), M, seed)


SAMPLERS: dict[str, Callable[[torch.Tensor, int], np.ndarray]] = {
    "random": _random,
    "tps-ours": _fast,
    "tps-reference": _reference,
}


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_fig7_sampling_time(benchmark: Any, sampler: str, fig7_n: int, full_run: bool,
                            thread_info: dict[str, Any]) -> None:
    benchmark.group = "fig7"
    feats = torch.tensor(teacher_features(fig7_n, "latent", np.random.default_rng(fig7_n)))
    fn = SAMPLERS[sampler]
    idx = benchmark.pedantic(fn, args=(feats, 0), rounds=10 if full_run else 1, warmup_rounds=int(full_run))
    assert len(idx) == M and len(np.unique(idx)) == M and idx.min() >= 0 and idx.max() < fig7_n
    if sampler == "tps-ours":
        np.testing.assert_array_equal(idx, _reference(feats, 0))
    benchmark.extra_info.update(thread_info)
    benchmark.extra_info.update(method=sampler, n=fig7_n, m=M)
