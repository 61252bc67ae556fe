"""Killable child-process measurements (the naive baseline of Table 6, paper App. B.4).

The paper reports sizes its naive implementation cannot finish as "Infeasible (Timeout)" or out of
memory. To measure that without endangering the test run, such a measurement runs in a child
process (``python -m benchmarks.isolated SPEC``) that:

- caps its own address space (``RLIMIT_AS``) at its size after imports plus ``memory_limit_mb``, so
  an allocation the machine cannot afford fails at once with an allocator error (reported as
  ``"out of memory"``) instead of pushing a shared machine into swap or the OOM killer; with
  ``memory_limit_mb=None`` it sets no cap (a CUDA measurement: initialising CUDA reserves far more
  address space than any cap leaves, and fails with "cudaGetDeviceCount() ... out of memory"; the
  device's memory is measured with ``torch.cuda.max_memory_allocated`` instead);
- passes a deadline to the measured function if it takes a ``deadline`` argument (it raises
  ``TimeoutError`` -> ``"timeout"``), and is killed by the parent shortly after the deadline if it
  does not stop by itself (also ``"timeout"``).

The child prints one JSON line prefixed with ``RESULT_MARKER``; any other failure (a bug) makes
``run_isolated`` raise with the child's stderr, so the benchmark test fails.
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

RESULT_MARKER = "@@isolated-result@@"
REPO_ROOT = Path(__file__).resolve().parents[2]
_KILL_GRACE_S = 20.0
_OOM_WORDS = ("not enough memory", "can't allocate memory", "cannot allocate memory", "out of memory")


def run_isolated(target: str, kwargs: dict[str, Any], timeout_s: float,
                 memory_limit_mb: Optional[float]) -> dict[str, Any]:
    """Run ``module:function(**kwargs)`` in a child process; return its dict plus run metadata.

    ``memory_limit_mb``: the child's address-space allowance beyond its imports, or None for no cap.
    The result always has ``status`` in ``ok`` | ``timeout`` | ``out of memory``, ``timeout_s``,
    ``memory_limit_mb`` and ``wall_s`` (child start to end, imports included).
    """
    if timeout_s <= 0 or (memory_limit_mb is not None and memory_limit_mb <= 0):
        raise ValueError(f"timeout_s ({timeout_s}) and memory_limit_mb ({memory_limit_mb}) must be > 0")
    spec = {"target": target, "kwargs": kwargs, "timeout_s": timeout_s, "memory_limit_mb": memory_limit_mb}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    meta = {"timeout_s": timeout_s, "memory_limit_mb": memory_limit_mb}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.cpu.isolated", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s + _KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()  # our own child, by its handle
        proc.communicate()
        return {"status": "timeout", "wall_s": time.perf_counter() - t0, "killed": True, **meta}
    wall = time.perf_counter() - t0
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_MARKER):
            return {**json.loads(line[len(RESULT_MARKER):]), "wall_s": wall, **meta}
    raise RuntimeError(
        f"isolated benchmark {target}({kwargs}) exited with code {proc.returncode} and no result; "
        f"stderr tail:\n{err[-3000:]}"
    )


def _vm_size_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmSize missing from /proc/self/status")


def _cap_address_space(memory_limit_mb: float) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_size_bytes() + int(memory_limit_mb * 2**20)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    module, name = spec["target"].split(":")
    fn = getattr(importlib.import_module(module), name)
    if spec["memory_limit_mb"] is not None:
        _cap_address_space(spec["memory_limit_mb"])
    kwargs = dict(spec["kwargs"])
    if "deadline" in inspect.signature(fn).parameters:
        kwargs["deadline"] = time.perf_counter() + spec["timeout_s"]
    try:
        return fn(**kwargs)
    except TimeoutError as exc:
        return {"status": "timeout", "message": str(exc)}
    except MemoryError as exc:
        return {"status": "out of memory", "message": f"MemoryError: {exc}"}
    except RuntimeError as exc:
        if any(w in str(exc).lower() for w in _OOM_WORDS):
            return {"status": "out of memory", "message": str(exc).splitlines()[0][:300]}
        raise


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m benchmarks.isolated '<json spec>' (see run_isolated)")
    print(RESULT_MARKER + json.dumps(_child(json.loads(sys.argv[1]))), flush=True)
