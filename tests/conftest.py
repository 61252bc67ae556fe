"""Shared test settings: thread pinning and the hypothesis profiles.

Threads: one OpenMP thread per process with OMP_WAIT_POLICY=PASSIVE (set before torch or numpy
start their pools), because on a 2-core machine under load torch ops at 2 threads ran ~10x slower
than at 1 thread.

Hypothesis profiles (select with ``--hypothesis-profile=NAME``):
- ``ci`` (default, the README's test command): 500 examples per property test, derandomized (the
  examples are a fixed function of each test, no example database), so the test command gives the
  same result on every run and machine; the persistence property tests together run at least
  2,000 examples.
- ``thorough``: 5,000 random examples per property test (20,000+ across the persistence tests):
  the random search for new counter-examples.
- ``dev``: 25 examples, for quick local iteration.
- ``device``: 50 examples, derandomized as ``ci``: the GPU campaign's CUDA rows
  (``benchmarks/gpu_campaign/cuda_tests.py`` sets ``TOPODISTILL_HYPOTHESIS_PROFILE=device``, which works for
  any test path, where the command-line option fails for files beside no conftest), so that they
  finish inside its time box (at 500 the twins' CUDA rows alone outlasted it on an H100); the CPU
  rows of the test command keep ``ci``'s 500.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

from hypothesis import HealthCheck, settings

PROFILE_VARIABLE = "TOPODISTILL_HYPOTHESIS_PROFILE"  # the default profile, when set (the GPU campaign's)
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=500, derandomize=True, database=None, **_COMMON)
settings.register_profile("thorough", max_examples=5000, **_COMMON)
settings.register_profile("dev", max_examples=25, **_COMMON)
settings.register_profile("device", max_examples=50, derandomize=True, database=None, **_COMMON)
settings.load_profile(os.environ.get(PROFILE_VARIABLE, "ci"))

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the reference tests need no torch
    pass
