"""How the persistence pool starts (decision 41): every worker at once, compiled code loaded.

``PersistencePool.warm`` returns once every worker is running with its kernels loaded; the
warm-up parts together compile everything a real task uses and no kernel twice; the workers
never import the calling script, so a script without an ``if __name__ == "__main__":`` guard
works, and an engine defined in such a script is refused with one clear sentence; the compiled
kernels are shared by every copy of the package with the same kernel sources, in a directory no
one else may write to.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from numba.core import config as numba_config
from numba.core.registry import CPUDispatcher

from fast.persistence import PersistencePool, compute_diagrams, native_h1
from fast.persistence.edge_stage import cpu_edge_stage
from fast.jit import kernel
from fast.numba_cache import (PACKAGE_DIR, PERSISTENCE_DIR, UNUSED_DAYS, cache_directory, choose_cache_directory, kernel_sources_version,
                              remove_unused_versions)
from fast.persistence.worker import _TINY_DIST, COMPILE_COSTS, WARM_UP_PARTS, _run_task, compile_shares, warm_up

REPO = Path(__file__).resolve().parents[1]


def test_warm_starts_every_worker_with_its_kernels_loaded() -> None:
    pool = PersistencePool(workers=2)
    try:
        pool.warm()
        slots = pool._slots  # internal: the worker processes themselves
        assert len(slots) == 2 and all(s.ready.is_set() and s.start_error is None for s in slots)
        assert all(s.process is not None and s.process.poll() is None for s in slots)
        assert len({s.process.pid for s in slots}) == 2
        cloud = np.random.default_rng(0).normal(size=(40, 3))
        assert len(compute_diagrams([cloud, cloud], pool=pool)[1].h0_pairs) == 39
    finally:
        pool.shutdown()
    assert all(s.process is None for s in slots)


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 5, 16])
def test_compile_shares_give_each_part_to_exactly_one_worker(workers: int) -> None:
    shares = compile_shares(workers)
    assert len(shares) == workers
    assert sorted(p for share in shares for p in share) == list(range(len(WARM_UP_PARTS)))
    assert len(COMPILE_COSTS) == len(WARM_UP_PARTS)
    if workers >= len(WARM_UP_PARTS):
        assert all(len(share) <= 1 for share in shares)


def _kernel_signatures() -> dict[str, list]:
    found = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("fast.persistence"):
            for attr, obj in vars(module).items():
                if isinstance(obj, CPUDispatcher):
                    found[f"{obj.__module__}.{attr}"] = list(obj.signatures)
    return found


class _Discard:
    def send(self, message: object) -> None:
        pass


def test_the_warm_up_covers_every_kernel_a_real_task_calls() -> None:
    # A kernel called with argument types the warm-up did not use would compile (seconds) in
    # the middle of a training step; the warm-up's tiny cloud also takes the truncated path.
    assert cpu_edge_stage(_TINY_DIST, truncate=True).truncated
    warm_up(range(len(WARM_UP_PARTS)))
    before = _kernel_signatures()
    rng = np.random.default_rng(1)
    for (n, c), threads in zip(((300, 8), (90, 130)), (1, 3)):  # 130 columns: the multi-block summation of TPS
        points = rng.normal(size=(n, c))
        _run_task(_Discard(), (points, native_h1, None, True, (64, 0), threads), [native_h1])
        _run_task(_Discard(), (points[:50], native_h1, 10.0, True, None, threads), [native_h1])
    assert _kernel_signatures() == before


def _run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_a_script_without_a_main_guard_works(tmp_path: Path) -> None:
    result = _run_script(tmp_path, """
        import torch
        import fast
        from fast.persistence import set_default_workers
        set_default_workers(2)
        g = torch.Generator().manual_seed(0)
        student = torch.randn(60, 4, generator=g, dtype=torch.float64, requires_grad=True)
        teacher = torch.randn(60, 4, generator=g, dtype=torch.float64)
        loss = fast.topo_loss(student, teacher, torch.tensor([30, 60]), m=20)
        loss.backward()
        print("loss", float(loss.detach()))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("loss ") and result.stderr == ""


def test_a_worker_loads_numba_without_importing_scipy_linalg_and_numba_blas_still_works() -> None:
    # A fresh interpreter as a worker is (BOOT): the loader, then a kernel loaded, then numba's
    # BLAS path compiled on first use, as in an engine that calls np.dot.
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from numba import njit
        from fast.persistence.worker import _load_numba_arrays_without_blas, _warm_sampling
        _load_numba_arrays_without_blas()
        _warm_sampling()
        print(sorted(m for m in ("scipy.linalg", "scipy.linalg.cython_blas") if m in sys.modules))
        a = np.arange(6.0).reshape(2, 3)
        print(njit(lambda x: np.dot(x, x.T))(a).tolist(), "scipy.linalg.cython_blas" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "[[5.0, 14.0], [14.0, 50.0]] True"]


def _minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


@pytest.mark.skipif(not Path("/proc/self/stat").exists() or platform.libc_ver()[0] != "glibc",
                    reason="page-fault counts from /proc, malloc tuning of glibc")
def test_a_worker_reuses_the_memory_of_its_previous_task() -> None:
    # Before the worker kept its freed memory, each repeat of this task faulted ~2,900 pages
    # (its large arrays came from fresh mmap pages every time); now it faults none.
    pool = PersistencePool(workers=1)
    try:
        pool.warm()
        pid = pool._slots[0].process.pid
        cloud = [np.random.default_rng(0).normal(size=(800, 16))]
        compute_diagrams(cloud, pool=pool)
        faults = []
        for _ in range(3):
            before = _minor_faults(pid)
            compute_diagrams(cloud, pool=pool)
            faults.append(_minor_faults(pid) - before)
    finally:
        pool.shutdown()
    assert max(faults) < 300, faults


def user_engine(dist: np.ndarray, deadline: Optional[float]) -> None:
    return None


def test_an_engine_from_the_script_being_run_is_refused_in_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(user_engine, "__module__", "__main__")
    pool = PersistencePool(workers=1)
    try:
        with pytest.raises(ValueError, match=r"^engine user_engine is defined in the script being run.*workers=0\)\)$"):
            pool.submit(np.eye(3), user_engine, None)
    finally:
        pool.shutdown()


_CACHE_PROBE = textwrap.dedent("""
    import numpy as np
    from fast.numba_cache import PACKAGE_DIR, PERSISTENCE_DIR, cache_directory
    from fast.persistence.cloud import _distance_rows
    from fast.persistence.worker import _warm_distances
    from fast.pwcd import _nearest_ties, _sweep
    _warm_distances()
    p, q, starts = np.array([0.5, 0.1]), np.array([0.25]), np.array([0, 1])
    _nearest_ties(p[:1], p[1:], q, q, p[:1], q, starts, starts)
    for kernel, directory in ((_distance_rows, PERSISTENCE_DIR), (_sweep, PACKAGE_DIR)):
        stats = kernel.stats
        print(cache_directory(directory), sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
""")


def _copy_of_the_package(dest: Path) -> Path:
    for name in ("fast", "reference"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _cache_probe(root: Path, cache_home: Path) -> list[tuple[str, int, int]]:
    """In a fresh interpreter on the copy at ``root`` with ``cache_home`` as the user's cache
    directory: for a kernel of ``fast/persistence`` (the distances) and one of ``fast`` (PWCD's
    search), the cache directory of its kernels and its cache hits and misses."""
    result = subprocess.run([sys.executable, "-c", _CACHE_PROBE], cwd=root, capture_output=True, text=True,
                            timeout=600, env={"PYTHONPATH": str(root), "XDG_CACHE_HOME": str(cache_home),
                                              "HOME": str(cache_home), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    return [(directory, int(hits), int(misses)) for directory, hits, misses in map(str.split, result.stdout.splitlines())]


def test_copies_of_the_package_share_the_kernels_of_one_version_and_only_of_that(tmp_path: Path) -> None:
    # A second clone loads what the first compiled; a copy whose kernel sources differ (here in a
    # file other than the kernel's own, which numba's own stamp would not see) compiles its own, in
    # that directory only; a change in how kernels are compiled (fast/jit.py) reaches every directory.
    cache_home = tmp_path / "cache"
    first = _cache_probe(_copy_of_the_package(tmp_path / "first"), cache_home)
    second = _cache_probe(_copy_of_the_package(tmp_path / "second"), cache_home)
    changed = {}
    for name in ("persistence/h0.py", "jit.py"):
        copy = _copy_of_the_package(tmp_path / name.replace("/", "-"))
        with open(copy / "fast" / name, "a") as f:
            f.write("# another version\n")
        changed[name] = _cache_probe(copy, cache_home)
    persistence, package = 0, 1  # the probe's kernels: fast/persistence's distances, fast/pwcd's search
    for kernel in (persistence, package):
        assert first[kernel][0] == second[kernel][0] and Path(first[kernel][0]).parent == cache_home / "topodistill"
        assert (first[kernel][1], first[kernel][2] > 0) == (0, True)  # compiled and written
        assert (second[kernel][1] > 0, second[kernel][2]) == (True, 0)  # loaded, nothing compiled
        assert changed["jit.py"][kernel][0] != first[kernel][0] and changed["jit.py"][kernel][1] == 0
    assert first[persistence][0] != first[package][0]
    h0 = changed["persistence/h0.py"]
    assert h0[persistence][0] != first[persistence][0] and (h0[persistence][1], h0[persistence][2] > 0) == (0, True)
    assert h0[package][0] == first[package][0] and (h0[package][1] > 0, h0[package][2]) == (True, 0)


def test_a_cache_directory_others_may_write_to_is_not_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # numba's cache files are pickles: a directory another user may write to could hold code.
    monkeypatch.setattr(numba_config, "CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert choose_cache_directory(PERSISTENCE_DIR) == str(tmp_path / "topodistill" / kernel_sources_version(PERSISTENCE_DIR))
    (tmp_path / "topodistill").chmod(0o777)  # the user's cache directory, writable by all
    fallback = tmp_path / "tmp" / f"topodistill-{os.getuid()}"
    assert choose_cache_directory(PERSISTENCE_DIR) == str(fallback / kernel_sources_version(PERSISTENCE_DIR))
    (fallback / kernel_sources_version(PERSISTENCE_DIR)).chmod(0o770)  # its version's directory, by the group
    assert choose_cache_directory(PERSISTENCE_DIR) is None
    (tmp_path / "topodistill").chmod(0o700)
    (tmp_path / "topodistill" / kernel_sources_version(PERSISTENCE_DIR)).rmdir()
    (tmp_path / "topodistill" / kernel_sources_version(PERSISTENCE_DIR)).symlink_to(fallback / kernel_sources_version(PERSISTENCE_DIR))
    assert choose_cache_directory(PERSISTENCE_DIR) is None  # a link is refused, wherever it points
    monkeypatch.setattr(numba_config, "CACHE_DIR", str(tmp_path / "numba"))  # NUMBA_CACHE_DIR first
    assert choose_cache_directory(PERSISTENCE_DIR) == str(tmp_path / "numba" / "topodistill" / kernel_sources_version(PERSISTENCE_DIR))


def test_versions_no_process_used_for_a_month_are_removed_and_nothing_else(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    monkeypatch.setattr(numba_config, "CACHE_DIR", str(tmp_path / "numba"))
    root = tmp_path / "numba" / "topodistill"
    ours = root / kernel_sources_version(PERSISTENCE_DIR)
    # the other directory's kernels of this same copy, not yet chosen by this process when it prunes
    sibling = root / kernel_sources_version(PACKAGE_DIR)
    old = UNUSED_DAYS * 86400 + 3600
    stale, recent, elsewhere = root / "0123456789abcdef", root / "fedcba9876543210", tmp_path / "elsewhere"
    for path in (ours, sibling, stale / "kept", recent, root / "notes", elsewhere):
        path.mkdir(parents=True)
    (stale / "kept" / "kernel.nbc").write_bytes(b"x")
    (root / "00000000000000aa").write_bytes(b"a file")  # named like a version, but not a directory
    (root / "00000000000000bb").symlink_to(elsewhere)  # a link: neither it nor what it points to
    for path in (ours, sibling, stale, recent, root / "notes", elsewhere, root / "00000000000000aa"):
        age = old if path != recent else old - 7200  # recent: last used an hour short of the limit
        os.utime(path, (os.stat(path).st_atime - age, os.stat(path).st_mtime - age))
    # the version chosen is marked used first (it is as old as the stale one), then the others looked at
    assert cache_directory.__wrapped__(PERSISTENCE_DIR) == str(ours)
    assert {p.name for p in root.iterdir()} == {"00000000000000aa", "00000000000000bb", ours.name, sibling.name,
                                                "fedcba9876543210", "notes"}
    assert elsewhere.is_dir() and abs(os.stat(ours).st_mtime - os.stat(root / "notes").st_mtime) > old - 60
    # a version removed by another process just before it is marked: nothing to do, no error
    assert remove_unused_versions(str(tmp_path / "gone" / ours.name)) == []


def test_kernels_whose_sources_are_not_files_get_no_cache(tmp_path: Path) -> None:
    # In a zip or a frozen application no version can be read: a shared cache could serve stale kernels.
    inside_a_zip = tmp_path / "application.zip" / "fast" / "persistence"
    assert kernel_sources_version(inside_a_zip) is None and choose_cache_directory(inside_a_zip) is None
    assert kernel_sources_version(PERSISTENCE_DIR) is not None


def test_a_kernel_outside_the_versioned_directories_is_refused() -> None:
    def square(x: float) -> float:
        return x * x

    message = (r"^test_a_kernel_outside_the_versioned_directories_is_refused\.<locals>\.square is defined in "
               r".*test_persistence_start\.py; the kernels of fast\.jit must be defined in one of \[.*\], whose "
               r"sources version the shared cache$")
    with pytest.raises(ValueError, match=message):
        kernel(square)


def test_warm_up_passes_over_a_part_another_process_compiles_and_loads_it_once_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two training processes (DDP ranks) with a pool each: a part whose lock is held elsewhere is
    passed over for the next one, then warmed (loaded from the cache) once the lock is free."""
    import threading

    from fast.persistence import worker

    order: list[int] = []
    monkeypatch.setattr(worker, "WARM_UP_PARTS", tuple((lambda p=p: order.append(p)) for p in range(3)))
    with worker._part_lock(0, wait=True) as held:  # "another process" compiles part 0
        assert held
        thread = threading.Thread(target=worker.warm_up, args=([0, 1, 2],))
        thread.start()
        for _ in range(500):
            if order == [1, 2]:
                break
            threading.Event().wait(0.01)
        assert order == [1, 2]  # parts 1 and 2 first, part 0 not yet
        assert thread.is_alive()  # waiting for part 0's lock
    thread.join(timeout=30)
    assert not thread.is_alive() and order == [1, 2, 0]
