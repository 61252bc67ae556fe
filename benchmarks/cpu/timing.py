"""The suite's own ``benchmark`` fixture object and run file: repeated wall-clock timings as JSON.

Why our own: the run file is the one output of ``pytest benchmarks/ --benchmark`` that
``benchmarks.report`` reads, and it used to depend on pytest-benchmark's internals (which object
its ``--benchmark-json`` option holds changed between releases 5.2 and 5.3 and lost a whole run at
session finish). The benchmarks only ever used ``benchmark.pedantic`` with explicit rounds, a
group and ``extra_info``, so :class:`Benchmark` provides exactly that, with the same meaning, and
:func:`run_document` writes the keys the report reads in the layout pytest-benchmark also uses
(``benchmarks[].{name, fullname, group, extra_info, stats}``, ``commit_info``, ``datetime``), so
runs written before the change still render.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Benchmark:
    """What a benchmark test measures: ``pedantic`` rounds of one target, a group, extra info."""

    def __init__(self, name: str, fullname: str) -> None:
        self.name = name
        self.fullname = fullname
        self.group: str | None = None
        self.extra_info: dict[str, Any] = {}
        self.times: list[float] = []

    def pedantic(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        setup: Callable[[], None] | None = None,
        rounds: int = 1,
        warmup_rounds: int = 0,
        iterations: int = 1,
    ) -> Any:
        """Run ``target(*args, **kwargs)`` for ``warmup_rounds + rounds`` rounds and time the last ``rounds``.

        ``setup`` runs before every round, outside the timing; a round calls the target
        ``iterations`` times and records the mean. Returns the target's last result.
        """
        for value, what, low in ((rounds, "rounds", 1), (warmup_rounds, "warmup_rounds", 0), (iterations, "iterations", 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"benchmark.pedantic: {what} must be an integer >= {low}, got {value!r}")
        if self.times:
            raise RuntimeError(f"{self.fullname}: benchmark.pedantic was already called; one measurement per test")
        kwargs = kwargs or {}
        result = None
        for r in range(warmup_rounds + rounds):
            if setup is not None:
                setup()
            t0 = time.perf_counter()
            for _ in range(iterations):
                result = target(*args, **kwargs)
            elapsed = (time.perf_counter() - t0) / iterations
            if r >= warmup_rounds:
                self.times.append(elapsed)
        return result

    def record(self) -> dict[str, Any]:
        """The measurement as one entry of the run file's ``benchmarks`` list."""
        data = self.times
        stats = {
            "min": min(data),
            "max": max(data),
            "mean": statistics.fmean(data),
            "median": statistics.median(data),
            "stddev": statistics.stdev(data) if len(data) > 1 else 0.0,
            "rounds": len(data),
            "data": list(data),
        }
        return {"name": self.name, "fullname": self.fullname, "group": self.group,
                "extra_info": dict(self.extra_info), "stats": stats}


def commit_info(repo: Path) -> dict[str, Any]:
    """The checked-out commit and whether the working tree differs from it ("unknown" outside git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=30).stdout

    try:
        return {"id": git("rev-parse", "HEAD").strip(), "dirty": bool(git("status", "--porcelain").strip())}
    except (OSError, subprocess.SubprocessError):
        return {"id": "unknown", "dirty": False}


def run_document(benchmarks: list[dict[str, Any]], isolated: list[dict[str, Any]], machine: dict[str, Any],
                 commit: dict[str, Any]) -> dict[str, Any]:
    """The whole run file: in-process measurements, child-process records, machine, commit, date."""
    return {
        "datetime": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit_info": commit,
        "topodistill_machine": machine,
        "benchmarks": benchmarks,
        "isolated": isolated,
    }


def write_json_atomically(document: dict[str, Any], path: Path) -> None:
    """Write ``document`` to ``path`` through a temporary file, so a reader never sees half a run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)
