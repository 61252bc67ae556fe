"""The GPU campaign (``python -m benchmarks.gpu``) cannot rot: its smoke mode runs every section's
code end to end on the CPU at tiny sizes, in child processes as on a GPU, and writes the report."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu import PLAN, main

REPO = Path(__file__).resolve().parent.parent


def test_smoke_campaign_runs_every_section_and_writes_the_report(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--smoke", "--out", str(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (report,) = tmp_path.glob("gpu-*.json")
    campaign = json.loads(report.read_text())
    assert list(campaign["sections"]) == list(PLAN)
    for name, section in campaign["sections"].items():
        assert section["status"] == "ok", (name, section.get("error"))
        assert section["data"]["tables"], f"section {name} reported no table"
    paths = campaign["sections"]["engine_paths"]["data"]
    assert set(paths["topo_loss_ms"]) == {"pool", "device"} and paths["recommended_default"]["cpu"] in ("pool", "device")
    assert campaign["sections"]["distill"]["data"]["steps"] == PLAN["distill"][2]["steps"]
    accelerators = campaign["sections"]["accelerators"]["data"]["tables"][0]["rows"]
    assert [r[1] for r in accelerators] == ["sdpa", "flash-attn", "ours (PyTorch)", "spconv"]
    text = report.with_suffix(".md").read_text()
    assert text.startswith("# GPU campaign") and all(f"## {name}" in text for name in PLAN)
    assert not list(tmp_path.glob("section-*.json")), "the per-section files are folded into the report"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_campaign_without_a_gpu_asks_for_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([])
    assert "use --smoke" in capsys.readouterr().err
