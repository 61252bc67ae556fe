"""The GPU campaign (``python -m benchmarks.gpu``) cannot rot: its smoke mode runs every section's
code end to end on the CPU at tiny sizes, in child processes as on a GPU, and writes the report; the
time boxes fit the budget, and a section that fails or overruns is recorded (and killed) while the
rest continues."""
from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_campaign import campaign as gpu
from benchmarks.gpu_campaign.campaign import CAMPAIGN, PLAN, main
from benchmarks.gpu_campaign.training import STEP_CASES

REPO = Path(__file__).resolve().parents[2]


def test_smoke_campaign_runs_every_section_and_writes_the_report(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    results = tmp_path / "RESULTS.md"
    results.write_text("# Efficiency results\n\n## Headline\n\nkept\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--smoke", "--out", str(tmp_path), "--sections",
                           *PLAN, "--results", str(results)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=2400, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (report,) = tmp_path.glob("gpu-*.json")
    campaign = json.loads(report.read_text())
    assert list(campaign["sections"]) == list(PLAN)
    for name, section in campaign["sections"].items():
        assert section["status"] == "ok", (name, section.get("error"))
        assert section["data"]["tables"], f"section {name} reported no table"
    cuda = campaign["sections"]["cuda_tests"]["data"]  # the profile it names exists (else the conftest fails)
    assert "TOPODISTILL_HYPOTHESIS_PROFILE=device" in cuda["command"] and cuda["returncode"] == 0, cuda["output_tail"]
    paths = campaign["sections"]["engine_paths"]["data"]
    assert set(paths["topo_loss_ms"]) == {"pool", "device"} and paths["recommended_default"]["cpu"] in ("pool", "device")
    assert campaign["sections"]["distill"]["data"]["steps"] == PLAN["distill"][2]["steps"]
    accelerators = campaign["sections"]["accelerators"]["data"]["tables"][0]["rows"]
    assert [r[1] for r in accelerators] == ["sdpa", "flash-attn", "ours (PyTorch)", "spconv"]
    text = report.with_suffix(".md").read_text()
    assert text.startswith("# GPU campaign") and all(f"## {name}" in text for name in PLAN)
    assert not list(tmp_path.glob("section-*.json")), "the per-section files are folded into the report"
    steps = campaign["sections"]["step_kernels"]["data"]["steps"]
    assert [row[1] for row in steps] == [name for _, name in STEP_CASES]
    cost_rows = campaign["sections"]["cost"]["data"]["tables"][0]["rows"]
    cost_size = PLAN["cost"][2]
    assert [row[0] for row in cost_rows] == [cost_size["teacher"], cost_size["student"], "teacher / student"]
    tps_rows = campaign["sections"]["tps"]["data"]["tables"][0]["rows"]
    assert [row[3] for row in tps_rows] == ["host (workers)", "device, one program per cloud",
                                            "device, split, 64 rows per program", "device, split, 512 rows per program"]
    assert all(row[7] == "yes" for row in tps_rows), tps_rows
    written = results.read_text()
    assert written.startswith("# Efficiency results\n\n## Headline\n\nkept\n"), written[:200]
    assert f"## {gpu.RESULTS_SECTION}" in written and "On **cpu**" in written and "smoke run" in written
    assert all(f"### {campaign['sections'][n]['data']['tables'][0]['title']}" in written for n in gpu.RESULTS_TABLES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_campaign_without_a_gpu_asks_for_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([])
    assert "use --smoke" in capsys.readouterr().err


def test_time_boxes_fit_the_budget_and_leave_later_sections_their_share(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    boxes: dict[str, float] = {}

    def fake_child(name: str, size: dict, device: str, out: Path, seconds: float, soft_s: float) -> dict:
        boxes[name] = seconds
        assert soft_s == pytest.approx(seconds - gpu.STARTUP_S) and size == PLAN[name][1]
        return {"status": "ok", "seconds": 0.0, "time_box_s": seconds, "data": {"tables": [], "notes": []}}

    monkeypatch.setattr(gpu, "_child", fake_child)
    planned = sum(PLAN[n][0] for n in CAMPAIGN)
    assert gpu.TOTAL_S >= planned, "the default budget must hold every section's full box"
    assert gpu.TOTAL_S <= 8 * 60 - 60, "the campaign and the machine's start fit 8 minutes of device time"
    gpu.campaign(False, "cpu", tmp_path, CAMPAIGN, budget_s=0.9 * planned)
    assert list(boxes) == CAMPAIGN and sum(boxes.values()) <= 0.9 * planned + 1e-6
    assert all(boxes[n] == pytest.approx(0.9 * PLAN[n][0], rel=0.05) for n in CAMPAIGN)
    boxes.clear()
    md = gpu.campaign(False, "cpu", tmp_path / "short", CAMPAIGN, budget_s=30)
    assert not boxes, "no section fits 30 s once its start-up share is kept"
    assert md.read_text().count("| skipped |") == len(CAMPAIGN)


def test_a_failing_or_overrunning_section_is_recorded_and_the_overrun_killed(tmp_path: Path) -> None:
    failed = gpu._child("table6", {"n": [12]}, "cpu", tmp_path, seconds=300, soft_s=300)  # no "rounds"
    assert failed["status"] == "error" and "KeyError: 'rounds'" in failed["error"]
    sleeper = tmp_path / "test_sleeper.py"
    sleeper.write_text("import time\n\nimport pytest\n\n\n@pytest.mark.cuda\ndef test_sleeps() -> None:\n"
                       "    time.sleep(600)\n")
    hung = gpu._child("cuda_tests", {"paths": [str(sleeper)]}, "cpu", tmp_path, seconds=15, soft_s=600)
    assert hung["status"] == "timeout" and hung["seconds"] < 60
    time.sleep(1)
    left = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            left += [proc.name] if str(sleeper).encode() in (proc / "cmdline").read_bytes() else []
        except OSError:
            continue
    assert not left, f"processes of the killed section are still running: {left}"


def test_engine_paths_keeps_the_pool_numbers_when_the_device_path_fails(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    import fast.persistence
    from benchmarks.gpu_campaign.record import Recorder
    from benchmarks.gpu_campaign.topo import engine_paths

    def broken(self: object, device: str) -> None:
        raise RuntimeError(f"no batch path on {device}")

    monkeypatch.setattr(fast.persistence.DeviceBatch, "__init__", broken)
    rec = Recorder(tmp_path / "section.json")
    engine_paths(PLAN["engine_paths"][2], torch.device("cpu"), rec, deadline=float("inf"))
    assert rec.data["topo_loss_ms"]["pool"] > 0 and rec.data["recommended_default"] == {"cpu": "pool"}
    assert "RuntimeError: no batch path on cpu" in rec.data["errors"]["device"]
    assert json.loads((tmp_path / "section.json").read_text())["tables"][0]["rows"][0][3] == "n/a"


def test_cost_measures_the_student_first_so_a_short_box_still_gives_it(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    """The deployed model comes first: when the time box ends after one model, the student's row is
    the one kept (the teacher outlasted the box on two H100 runs)."""
    from benchmarks.gpu_campaign import models as gpu_models
    from benchmarks.gpu_campaign.record import Recorder

    clock = itertools.chain([0.0], itertools.repeat(100.0))  # past the deadline after the first check
    monkeypatch.setattr(gpu_models.time, "monotonic", lambda: next(clock))
    rec = Recorder(tmp_path / "cost.json")
    size = PLAN["cost"][2]
    gpu_models.cost(size, torch.device("cpu"), rec, deadline=50.0)
    assert list(rec.data["models"]) == [size["student"]]
    assert f"stopped before {size['teacher']} at the section's time box" in rec.data["notes"]


def test_tps_says_when_its_time_box_cut_the_rounds(tmp_path: Path) -> None:
    """A family reached after the box ends keeps only its warm-up call (its indices are still compared)
    and the report says so, rather than a row of n/a beside 'same indices: yes' with nothing said (an
    H100 run, 2026-11-27)."""
    from benchmarks.gpu_campaign.record import Recorder
    from benchmarks.gpu_campaign.topo import tps

    rec = Recorder(tmp_path / "tps.json")
    # the host path only: Triton's interpreter must be chosen before fast.tps_device is first imported,
    # which another test of this process may have done (the campaign runs each section in a child)
    size = {**PLAN["tps"][2], "interpret": False}
    tps(size, torch.device("cpu"), rec, deadline=-math.inf)
    rows = rec.data["tables"][0]["rows"]
    assert rows and all(row[-2:] == ["yes", "0"] for row in rows)
    for family in size["families"]:
        assert f"{family}: stopped after 0 of {size['rounds']} rounds at the section's time box " \
               "(its indices are the warm-up call's)" in rec.data["notes"]


def test_condense_times_gm_and_dd3d_per_cpc_and_stops_at_its_box(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    """Four rows per CPC, GM first, then DD3D at GM's points and at the low resolution and GM with
    decision 95's last layer, each with its time over GM's at that CPC, then a profiled iteration
    of each method; a box that ends after the first measurement keeps that row and says where it
    stopped."""
    from benchmarks.gpu_campaign import condense as gpu_condense
    from benchmarks.gpu_campaign.record import Recorder

    size = PLAN["condense"][2]
    high, low = str(size["points"]), str(size["low_points"])
    rec = Recorder(tmp_path / "condense.json")
    gpu_condense.condense({**size, "cpcs": [1, 2]}, torch.device("cpu"), rec, deadline=float("inf"))
    rows = rec.data["tables"][0]["rows"]
    as_95 = "explicit GM, last layer as decision 95"
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("explicit GM", high, "1"), ("DD3D", high, "1"), ("DD3D", low, "1"), (as_95, high, "1"),
        ("explicit GM", high, "2"), ("DD3D", high, "2"), ("DD3D", low, "2"), (as_95, high, "2")]
    seconds = rec.data["seconds"]
    assert rows[0][5] == "n/a" and rows[4][5] == "n/a"
    assert rows[2][5] == f"{seconds[f'dd3d-{low}-1'] / seconds[f'gm-{high}-1']:.3g}"
    assert rows[3][5] == f"{seconds[f'gm-{high}-1-95'] / seconds[f'gm-{high}-1']:.3g}"
    assert rows[5][5] == f"{seconds[f'dd3d-{high}-2'] / seconds[f'gm-{high}-2']:.3g}"
    assert all(r[6] == "n/a" for r in rows)  # no device memory on a CPU
    profiled = rec.data["tables"][1]
    assert profiled["title"].startswith("Where one outer iteration's time goes")
    assert [(r[0], r[2]) for r in profiled["rows"]] == [("explicit GM", "1"), ("DD3D", "1")]
    # the milliseconds carry a thousands separator from 1,000 on (a loaded machine gets there)
    assert all(float(r[3].replace(",", "")) > 0 and r[4] == "n/a" and r[5] == "0"
               for r in profiled["rows"])  # no kernels on a CPU
    clock = itertools.chain([0.0], itertools.repeat(100.0))  # past the deadline after the first check
    monkeypatch.setattr(gpu_condense.time, "monotonic", lambda: next(clock))
    rec = Recorder(tmp_path / "short.json")
    gpu_condense.condense(size, torch.device("cpu"), rec, deadline=50.0)
    assert [r[0] for r in rec.data["tables"][0]["rows"]] == ["explicit GM"]
    assert rec.data["notes"] == [f"stopped before DD3D at {high} points, CPC 1, at the section's time box"]
