"""pytest set-up of the benchmark suite: the ``--benchmark`` flag, thread pinning, sizes, the run file.

Two modes:

- ``pytest benchmarks/`` (smoke, the CI default): every benchmark runs once at tiny sizes, so CI
  checks that each measured pipeline still runs and returns finite, mutually consistent results.
- ``pytest benchmarks/ --benchmark``: the paper's sizes, repeated; the timings are written to
  ``benchmarks/results/bench-<UTC time>.json`` (git-ignored) unless ``--results-json`` names
  another file, rewritten after every measurement so a run stopped half-way keeps what it measured. ``python -m benchmarks.report`` turns the newest run into
  ``RESULTS.md``. ``--smoke-sizes`` keeps the smoke sizes and rounds while still writing the run
  file (``benchmarks/tests/test_benchmark_command.py`` runs the whole command that way).

The ``benchmark`` fixture is ours (``benchmarks.cpu.timing.Benchmark``: ``pedantic``, ``group``,
``extra_info``), so no plugin release can change what the suite measures or writes; the
pytest-benchmark plugin, if installed, is not loaded (``-p no:benchmark`` in ``pyproject.toml``).

Threads: OMP_WAIT_POLICY=PASSIVE and one OpenMP/MKL thread per process are set before torch or
numpy start their pools (spinning OpenMP workers slow a shared 2-core machine ~10x); torch runs
with ``--torch-threads`` threads (default 1) and every measurement records the thread count it
ran with in its ``extra_info``.

Sizes: fixtures named in ``benchmarks.cpu.sizes.SIZES`` (``table6_n``, ``fig7_n``, ``fig8_n``) are
parametrised with the smoke or the full sizes by ``pytest_generate_tests``.

Measurements that must be killable or need a fresh process (the naive baseline, peak memory) run
in child processes (``benchmarks.cpu.isolated``); their records are collected here and written into
the same run file under the key ``"isolated"``.
"""
from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest
import torch

from benchmarks.cpu.machine import machine_info
from benchmarks.cpu.sizes import SIZES
from benchmarks.cpu.timing import Benchmark, commit_info, run_document, write_json_atomically

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"
_RECORDS = pytest.StashKey[list]()
_BENCHMARKS = pytest.StashKey[list]()
_RUN_FILE = pytest.StashKey[Path]()
_COMMIT = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("topodistill", "topodistill benchmark suite")
    group.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        help="full sizes, repeated; timings saved as JSON in benchmarks/results/ "
        "(without it: a smoke run at tiny sizes, once each, nothing saved)",
    )
    group.addoption(
        "--smoke-sizes",
        action="store_true",
        default=False,
        help="with --benchmark: keep the smoke sizes and rounds but still write the run file "
        "(checks the whole command quickly)",
    )
    group.addoption(
        "--results-json",
        type=Path,
        default=None,
        help="with --benchmark: the run file to write (default benchmarks/results/bench-<UTC time>.json)",
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


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RECORDS] = []
    config.stash[_BENCHMARKS] = []
    threads = config.getoption("--torch-threads")
    if threads < 1:
        raise pytest.UsageError(f"--torch-threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    measuring = config.getoption("--benchmark")
    for flag in ("--smoke-sizes", "--results-json"):
        if config.getoption(flag) not in (None, False) and not measuring:
            raise pytest.UsageError(f"{flag} only applies to a measuring run; add --benchmark")
    if measuring:
        path = config.getoption("--results-json")
        if path is None:
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            path = RESULTS_DIR / f"bench-{stamp}.json"
        config.stash[_RUN_FILE] = Path(path)
        config.stash[_COMMIT] = commit_info(REPO)


def _save(config: pytest.Config) -> None:
    """Rewrite the run file of a ``--benchmark`` run with everything measured so far.

    Called after every measurement and at session finish, so a run stopped half-way (killed, out of
    time) keeps what it measured.
    """
    if _RUN_FILE in config.stash:
        document = run_document(config.stash[_BENCHMARKS], config.stash[_RECORDS], machine_info(),
                                config.stash[_COMMIT])
        write_json_atomically(document, config.stash[_RUN_FILE])


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if _RUN_FILE not in config.stash:
        return
    _save(config)
    path = config.stash[_RUN_FILE]
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"benchmark run written to {path}; render it with `python -m benchmarks.report {path}`")


def _full_sizes(config: pytest.Config) -> bool:
    return bool(config.getoption("--benchmark")) and not config.getoption("--smoke-sizes")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    full = _full_sizes(metafunc.config)
    for name, (smoke, paper) in SIZES.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, paper if full else smoke)


@pytest.fixture
def benchmark(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> Iterator[Benchmark]:
    """The test's measurement (``benchmarks.cpu.timing.Benchmark``), kept for the run file once it ran."""
    bench = Benchmark(request.node.name, request.node.nodeid)
    yield bench
    if bench.times:
        pytestconfig.stash[_BENCHMARKS].append(bench.record())
        _save(pytestconfig)


@pytest.fixture(scope="session")
def full_run(pytestconfig: pytest.Config) -> bool:
    """True under ``--benchmark`` (paper sizes, repeated), False in the smoke run and with ``--smoke-sizes``."""
    return _full_sizes(pytestconfig)


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
    """Append a child-process measurement (a dict) to the run file under ``"isolated"``.

    The child's own ``torch_threads`` (it reports the count it ran with) wins over this process's.
    """

    def _record(record: dict[str, Any]) -> None:
        defaults = {"torch_threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0]}
        pytestconfig.stash[_RECORDS].append({**defaults, **record, "test": request.node.nodeid})
        _save(pytestconfig)

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
