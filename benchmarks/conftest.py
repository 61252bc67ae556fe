"""pytest set-up of the benchmark suite: the ``--benchmark`` flag, thread pinning, sizes, JSON output.

Two modes:

- ``pytest benchmarks/`` (smoke, the CI default): every benchmark runs once at tiny sizes with
  pytest-benchmark disabled (``--benchmark-disable``), so CI checks that each measured pipeline
  still runs and returns finite, mutually consistent results.
- ``pytest benchmarks/ --benchmark``: the paper's sizes, repeated, with pytest-benchmark statistics
  written to ``benchmarks/results/bench-<UTC time>.json`` (git-ignored) unless ``--benchmark-json``
  names another file. ``python -m benchmarks.report`` turns the newest JSON into ``RESULTS.md``.

``--benchmark`` does not clash with pytest-benchmark's options: they are all ``--benchmark-<word>``,
and pytest matches option names exactly.

Threads: OMP_WAIT_POLICY=PASSIVE and one OpenMP/MKL thread per process are set before torch or
numpy start their pools (spinning OpenMP workers slow a shared 2-core machine ~10x); torch runs
with ``--torch-threads`` threads (default 1) and every measurement records the thread count it
ran with in its ``extra_info``.

Sizes: fixtures named in ``benchmarks.sizes.SIZES`` (``table6_n``, ``fig7_n``, ``fig8_n``) are
parametrised with the smoke or the full sizes by ``pytest_generate_tests``.

Measurements that must be killable or need a fresh process (the naive baseline, peak memory) run
in child processes (``benchmarks.isolated``); their records are collected here and written into
the same JSON under the key ``"isolated"`` by the ``pytest_benchmark_update_json`` hook.
"""
from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest
import torch

from benchmarks.machine import machine_info
from benchmarks.sizes import SIZES

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_RECORDS = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("topodistill", "topodistill benchmark suite")
    group.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        help="full sizes, repeated; statistics saved as JSON in benchmarks/results/ "
        "(without it: a smoke run at tiny sizes, once each)",
    )
    group.addoption(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads for every measurement (default 1; recorded in extra_info)",
    )
    group.addoption(
        "--naive-timeout",
        type=float,
        default=600.0,
        help="seconds after which one naive-baseline measurement is killed and reported as timeout",
    )
    group.addoption(
        "--naive-memory-gib",
        type=float,
        default=8.0,
        help="address-space cap (GiB above its start) of the naive baseline's child process; "
        "allocations beyond it are reported as out of memory",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Runs before pytest-benchmark reads its options (tryfirst), so the settings below take effect.
    config.stash[_RECORDS] = []
    threads = config.getoption("--torch-threads")
    if threads < 1:
        raise pytest.UsageError(f"--torch-threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    if not config.getoption("--benchmark"):
        if not config.getoption("benchmark_enable"):
            config.option.benchmark_disable = True
        return
    if config.getoption("benchmark_disable"):
        raise pytest.UsageError("--benchmark measures; it cannot be combined with --benchmark-disable")
    if config.option.benchmark_json is None:
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        config.option.benchmark_json = open(RESULTS_DIR / f"bench-{stamp}.json", "wb")  # noqa: SIM115
    config.option.benchmark_save_data = True


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    full = metafunc.config.getoption("--benchmark")
    for name, (smoke, paper) in SIZES.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, paper if full else smoke)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict[str, Any]) -> None:
    output_json["isolated"] = config.stash[_RECORDS]
    output_json["topodistill_machine"] = machine_info()


@pytest.fixture(scope="session")
def full_run(pytestconfig: pytest.Config) -> bool:
    """True under ``--benchmark`` (paper sizes, repeated), False in the smoke run."""
    return bool(pytestconfig.getoption("--benchmark"))


@pytest.fixture(scope="session")
def naive_timeout(pytestconfig: pytest.Config, full_run: bool) -> float:
    """Kill limit of one naive-baseline measurement (smoke runs use a short one)."""
    return float(pytestconfig.getoption("--naive-timeout")) if full_run else 60.0


@pytest.fixture(scope="session")
def naive_memory_mb(pytestconfig: pytest.Config) -> float:
    """Address-space cap of the naive baseline's child process, in MB."""
    return float(pytestconfig.getoption("--naive-memory-gib")) * 1024


@pytest.fixture
def record_isolated(
    pytestconfig: pytest.Config, request: pytest.FixtureRequest
) -> Callable[[dict[str, Any]], None]:
    """Append a child-process measurement (a dict) to the run's JSON under ``"isolated"``.

    The child's own ``torch_threads`` (it reports the count it ran with) wins over this process's.
    """

    def _record(record: dict[str, Any]) -> None:
        defaults = {"torch_threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0]}
        pytestconfig.stash[_RECORDS].append({**defaults, **record, "test": request.node.nodeid})

    return _record


@pytest.fixture
def thread_info() -> dict[str, Any]:
    """The thread settings a measurement runs with, for its ``extra_info``."""
    return {
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
