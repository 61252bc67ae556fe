"""The campaign's ``cuda_tests`` section: ``pytest -m cuda``, every CUDA-only test of the suite,
with its outcome per test."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from typing import Any

import torch

from benchmarks.gpu_campaign.record import REPO, Recorder


HYPOTHESIS_PROFILE = "device"  # tests/conftest.py: 50 derandomized examples a property, to fit the time box
PROFILE_VARIABLE = "TOPODISTILL_HYPOTHESIS_PROFILE"  # read by tests/conftest.py

_OUTCOME = re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_SUMMARY = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$")


def cuda_tests(size: dict[str, Any], device: torch.device, rec: Recorder, deadline: float) -> None:
    log = rec.path.with_suffix(".pytest.txt")
    # A test module whose optional import is missing on the GPU machine (gudhi, ripser) is reported
    # as a collection error; the other modules still run.
    cmd = [sys.executable, "-m", "pytest", *size["paths"], "-m", "cuda", "-v", "-rfE", "-p", "no:cacheprovider",
           "--continue-on-collection-errors"]
    rec.put("command", f"{PROFILE_VARIABLE}={HYPOTHESIS_PROFILE} " + " ".join(cmd[1:]))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           PROFILE_VARIABLE: HYPOTHESIS_PROFILE}
    finished = True
    with log.open("w", encoding="utf-8") as fh:
        try:
            done = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True,
                                  timeout=max(deadline - time.monotonic(), 1.0), check=False)
            rec.put("returncode", done.returncode)
        except subprocess.TimeoutExpired:
            finished = False
    text = log.read_text(encoding="utf-8", errors="replace")
    rec.put("output_tail", text[-3000:])
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    for line in text.splitlines():
        if m := _OUTCOME.match(line):
            outcomes[m.group(1)] = m.group(2)
        elif m := _SUMMARY.match(line):
            messages[m.group(2)] = (m.group(3) or "")[:200]
            outcomes.setdefault(m.group(2), m.group(1))  # e.g. a module that failed to import
    counts = {k: sum(v == k for v in outcomes.values()) for k in ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")}
    rec.put("counts", counts)
    rec.table("CUDA tests (pytest -m cuda)", ["finished", *counts], [["yes" if finished else "no (time box)", *counts.values()]])
    bad = [[node, kind, messages.get(node, "")] for node, kind in outcomes.items() if kind in ("FAILED", "ERROR")]
    if bad:
        rec.table("CUDA tests that failed", ["test", "outcome", "message"], bad)
    rec.note(f"property tests ran with the hypothesis profile {HYPOTHESIS_PROFILE!r} (tests/conftest.py); the test "
             "command's CPU rows run the 'ci' profile")
    if not finished:
        rec.note("pytest -m cuda did not finish within the section's time box; the counts are the tests it reached")
    if device.type != "cuda":
        rec.note("no CUDA device: every CUDA test is skipped (smoke run)")
