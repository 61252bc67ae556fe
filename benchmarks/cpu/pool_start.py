"""How long a persistence pool takes to become ready (decision 41): on a new machine, in a new clone
on a machine that has compiled the same kernels before, and warm; and, in the same three states,
how long a process's first PWCD call takes (its compiled nearest-neighbour search, ``fast.pwcd``,
runs in the training process, not in the pool).

"Ready" is what a training run waits for before its first step: a fresh Python process imports
``fast.persistence``, creates a ``PersistencePool`` of ``workers`` processes, calls ``warm()``
(every worker started with its compiled kernels loaded) and gets the diagrams of one small cloud
per worker back. Measured in a child process from its first line, so the parent's state (loaded
modules, warm caches) cannot help it. The child's user cache directory (``XDG_CACHE_HOME``, where
the kernels' cache lives, ``fast.numba_cache``) is a folder of the benchmark's, and
``NUMBA_CACHE_DIR`` is unset:

* cold: a fresh copy of the package (``fast/`` and ``reference/`` without any ``__pycache__``) and
  an empty cache folder, as on a new machine: the workers compile (each kernel part once) and the
  others load;
* clone: another fresh copy, with the cache folder that the cold copy filled, as a new clone or
  virtual environment on a machine that has compiled these kernels before;
* warm: the clone's copy again.

The child is ``python -c`` with the copy first on ``sys.path``; its time is reported beside the
parent's wall time of the whole child (interpreter start and exit included).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("fast", "reference")
# The targets (seconds to ready): a fresh clone's pool within 5 s (on this 2-core CPU with 2
# workers, on a 16-core machine with 16), and within 1 s once its caches exist.
TARGETS = {"cold": 5.0, "clone": 5.0, "warm": 1.0}
# Measured before decision 41 on this CPU (the figures): (workers, state) -> seconds. Then
# every clone was a new machine: numba's caches sat beside each copy of the sources.
BEFORE = {(2, "cold"): "9.2 (fresh clone)", (2, "clone"): "9.2 (fresh clone)", (2, "warm"): "0.6"}

CHILD = """
import time
t0 = time.perf_counter()
import json, sys
import numpy as np
from fast.persistence import PersistencePool, compute_diagrams
t_pool = time.perf_counter()
pool = PersistencePool({workers})
pool.warm()
t_warm = time.perf_counter()
clouds = [np.random.default_rng(i).normal(size=(64, 8)) for i in range({workers})]
compute_diagrams(clouds, pool=pool)
t_done = time.perf_counter()
pool.shutdown()
import resource
cpu = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
print(json.dumps({{"warm_s": t_warm - t0, "ready_s": t_done - t0, "pool_s": t_done - t_pool,
                  "parent_cpu_s": cpu[0].ru_utime + cpu[0].ru_stime,
                  "workers_cpu_s": cpu[1].ru_utime + cpu[1].ru_stime}}))
"""

FIRST_PWCD = """
import json, time
import torch
from fast.pwcd import pwcd
seconds = {}
for dtype in (torch.float64, torch.float32):
    g = torch.Generator().manual_seed(0)
    teacher = torch.rand(30, 2, generator=g, dtype=dtype).sort(dim=1).values
    student = torch.rand(25, 2, generator=g, dtype=dtype).sort(dim=1).values.requires_grad_(True)
    t = time.perf_counter()
    pwcd(teacher, student).backward()
    seconds[str(dtype).removeprefix("torch.")] = time.perf_counter() - t
print(json.dumps(seconds))
"""


def fresh_copy(dest: Path) -> Path:
    """The packages the pool needs, copied to ``dest`` without compiled caches; returns ``dest``."""
    for name in PACKAGES:
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    return dest


def _run_child(code: str, root: Path, cache_home: Path, timeout_s: float) -> tuple[dict[str, Any], float]:
    """``python -c code`` on the packages under ``root`` with ``cache_home`` as its user cache
    directory: the JSON object its last line prints, and its wall time."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(cache_home)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"start-up child failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def time_ready(root: Path, cache_home: Path, workers: int, timeout_s: float = 600.0) -> dict[str, Any]:
    """One child process on the packages under ``root``, ``cache_home`` its user cache directory:
    seconds to ``warm()`` returned and to the first diagrams (``warm_s``, ``ready_s``, from the
    child's first line), from the pool's creation to the first diagrams (``pool_s``: without the
    child's own start and imports), the child's wall time (``wall_s``), and CPU-seconds (user +
    system) of the child itself (``parent_cpu_s``) and of all its workers together, from their
    start to their exit at the pool's shutdown (``workers_cpu_s``: interpreter start, compiling or
    loading the kernels, the one task)."""
    result, wall = _run_child(CHILD.format(workers=workers), root, cache_home, timeout_s)
    return {**result, "wall_s": wall}


def time_first_pwcd(root: Path, cache_home: Path, timeout_s: float = 600.0) -> dict[str, Any]:
    """Seconds of a fresh process's first ``fast.pwcd`` forward and backward (a 30- against a
    25-point diagram) in float64, then in float32 (``float64_s``, ``float32_s``: each dtype
    compiles or loads its own search kernels), and the child's wall time (``wall_s``); packages
    and cache as in :func:`time_ready`."""
    result, wall = _run_child(FIRST_PWCD, root, cache_home, timeout_s)
    return {**{f"{dtype}_s": seconds for dtype, seconds in result.items()}, "wall_s": wall}
