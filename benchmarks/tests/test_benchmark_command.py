"""The documented benchmark command end to end: ``pytest benchmarks/ --benchmark`` writes its run file
at session finish, and ``python -m benchmarks.report`` renders it (docs/benchmarks.md).

Runs in a subprocess, as a user would, at the smoke sizes (``--smoke-sizes``) on the Table 6
forward/backward rows, one naive-baseline child process, and Figures 7 and 8, so that a change
anywhere on that path (a dependency release included) fails the default test command instead of
losing a long run at its very end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_benchmark_command_writes_the_run_file_and_the_report_renders_it(tmp_path: Path) -> None:
    run_file = tmp_path / "run.json"
    done = _run(["-m", "pytest", "benchmarks/tests/test_bench_table6.py", "benchmarks/tests/test_bench_fig7_sampling.py",
                 "benchmarks/tests/test_bench_fig8_homology.py", "-k", "forward or backward or naive[12] or fig",
                 "--benchmark", "--smoke-sizes", "--results-json", str(run_file),
                 "-q", "-p", "no:cacheprovider"], timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"benchmark run written to {run_file}" in done.stdout
    run = json.loads(run_file.read_text())
    groups = {b["group"] for b in run["benchmarks"]}
    assert {"table6-forward", "table6-backward", "fig7", "fig8"} <= groups, groups
    assert all(b["stats"]["rounds"] >= 1 and b["stats"]["median"] > 0 for b in run["benchmarks"])
    assert any(r["group"] == "table6" and r["method"] == "naive" for r in run["isolated"])
    assert run["commit_info"]["id"] and run["topodistill_machine"]["versions"]["torch"]

    results = tmp_path / "RESULTS.md"
    done = _run(["-m", "benchmarks.report", str(run_file), "-o", str(results)], timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    text = results.read_text()
    for heading in ("## Table 6", "## Figure 7", "## Figure 8", "## Machine and run"):
        assert heading in text, heading

