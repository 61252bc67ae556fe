"""The GPU campaign: what a GPU can tell us about the method's cost, in one command within 8 minutes.

Usage::

    python -m benchmarks.gpu                 # on a CUDA machine: the campaign at the paper's sizes
    python -m benchmarks.gpu --smoke         # anywhere: the same code at tiny sizes (CPU if no GPU)
    python -m benchmarks.gpu --sections tps cost --out DIR

It writes ``gpu-<UTC time>.md`` and ``.json`` to ``--out`` (default ``benchmarks/results``,
git-ignored) and puts the GPU's name, every section's status and the tables of the training
steps, TPS and inference into the campaign's section of ``benchmarks/RESULTS.md`` (``--results``;
the smoke run writes none unless asked). The sections of :data:`CAMPAIGN`
(``benchmarks.gpu_campaign.sections``): the CUDA tests; the student CE, KD + saliency and full-objective
steps at the paper presets as training runs them (the batch plan built ahead), with wall time,
kernel time and the GPU's busy share; TPS alone (the former one-program kernel against the kernel
split over programs, same indices asserted); teacher and student inference at 30,000 points; the
topological term's cost per step; the persistence paths. Others run on request (a few hundred
distillation steps, one outer iteration of dataset condensation, Table 6 on the device, optional
accelerators). Each runs in a child process with a time box, in that order; a section that fails, runs out of memory or overruns is recorded
with its error and partial results, and the rest continues. A section's child is killed at the
end of its time box; the boxes of :data:`CAMPAIGN` add up to at most :data:`TOTAL_S`, and a
section is shortened when the earlier ones left less time than planned.

Needs only torch, numpy, scipy, numba and pytest (no package index): the training path's other
dependencies are imported only where they are used (YAML by ``--config`` files, tqdm and
TensorBoard by ``train.run``'s logging, giotto-ph by ``engine="giotto"``, ripser by the paper-style
baseline), and flash-attn / spconv / Triton (the device TPS kernel) are measured only when
installed. Which optional packages were present is part of the report.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "benchmarks" / "results"
TOTAL_S = 420.0
"""The campaign's sections (:data:`CAMPAIGN`) on one H100 or H200: 7 minutes, so that with the
machine's start the campaign fits 8 minutes of device time."""
SMOKE_BOX_S = 240.0
"""Time box of each section in the smoke run: a safety net only (tiny sizes, no soft deadline), so a
loaded CPU slows the smoke run down but never makes a section stop early."""
STARTUP_S = 20.0
"""Part of a section's time box kept for its child's start-up (interpreter, torch, CUDA context) and
for finishing its last measurement: the section's own deadline is this much before the box ends."""

PAPER_PRESETS = {"teacher": "teacher", "student": "student"}
DEMO_PRESETS = {"teacher": "teacher-demo", "student": "student-demo"}

# section -> (time box in seconds, sizes of the campaign, sizes of the smoke run). The boxes were
# resized after the H100 run of docs/notes/gpu-campaign-h100.md, and again after the H200 run of
# docs/notes/gpu-campaign-h200-2026-11-30.md: there `cost` (40 s) stopped before the teacher and
# `topo_step` (45 s) completed none of its rounds (both finished alone in 60 and 125 s boxes),
# while cuda_tests, step_kernels, tps and topo_split used 114, 78, 21 and 36 s of 145, 100, 35, 55.
PLAN: dict[str, tuple[float, dict[str, Any], dict[str, Any]]] = {
    # the whole ``-m cuda`` selection took 145 s on an H100, 114 s on the H200
    "cuda_tests": (130.0, {"paths": ["tests", "benchmarks"]}, {"paths": ["tests/test_device_batch.py"]}),
    "step_kernels": (90.0, {"paper": {**PAPER_PRESETS, "clouds": 4, "points": 30_000},
                            "demo": {"teacher": "teacher-demo", "student": "teacher-demo", "clouds": 2,
                                     "points": 12_000}, "m": 1024, "steps": 6},
                     {"paper": {**DEMO_PRESETS, "clouds": 2, "points": 300},
                      "demo": {"teacher": "teacher-demo", "student": "teacher-demo", "clouds": 2, "points": 300},
                      "m": 16, "steps": 1}),
    "tps": (30.0, {"clouds": 8, "points": 30_000, "m": 1024, "families": ["latent", "clusters"],
                   "rows_per_program": [256, 512, 1024, 2048], "rounds": 2},
            {"clouds": 2, "points": 300, "m": 16, "families": ["latent"], "rows_per_program": [64, 512], "rounds": 1,
             "interpret": True}),
    "cost": (55.0, {**PAPER_PRESETS, "points": 30_000, "batch": 4, "repeats": 10},
             {**DEMO_PRESETS, "points": 400, "batch": 2, "repeats": 1}),
    "topo_step": (70.0, {**PAPER_PRESETS, "clouds": 4, "points": 30_000, "m": 1024, "steps": 4},
                  {**DEMO_PRESETS, "clouds": 2, "points": 300, "m": 16, "steps": 1}),
    "topo_split": (45.0, {**PAPER_PRESETS, "clouds": 4, "points": 30_000, "m": 1024, "rounds": 6},
                   {**DEMO_PRESETS, "clouds": 2, "points": 300, "m": 16, "rounds": 1}),
    # on request (--sections): not in the 8-minute campaign
    "engine_paths": (30.0, {"clouds": 12, "points": 4096, "m": 1024, "rounds": 3},
                     {"clouds": 3, "points": 64, "m": 24, "rounds": 1}),
    "distill": (50.0, {**PAPER_PRESETS, "clouds": 4, "points": 30_000, "m": 1024, "steps": 300,
                        "distinct_batches": 2},
                {**DEMO_PRESETS, "clouds": 2, "points": 300, "m": 16, "steps": 3, "distinct_batches": 2}),
    # one outer iteration of GM and DD3D at CPC 1 and 10 (decision 95), DD3D also at a quarter of the points;
    # 55 s of the 150 on the H200 of 2026-11-30 before the quarter-resolution rows
    "condense": (150.0, {"classes": 40, "points": 1024, "low_points": 256, "cpcs": [1, 10]},
                 {"classes": 2, "points": 16, "low_points": 8, "cpcs": [1]}),
    "table6": (45.0, {"n": [30, 60, 100, 200, 400, 800, 1024], "rounds": 3}, {"n": [12], "rounds": 1}),
    "accelerators": (30.0, {"kind": "student", "points": 30_000, "repeats": 5},
                     {"kind": "student-demo", "points": 300, "repeats": 1}),
}
CAMPAIGN = ["cuda_tests", "step_kernels", "tps", "cost", "topo_step", "topo_split"]
"""The sections a plain run measures, in order: the CUDA tests, the training steps, TPS, inference,
then the topological term's cost and its split into parts; their boxes add up to at most
:data:`TOTAL_S`. ``engine_paths`` (the pool against the device batch, decision 34, settled on the
H100 runs) runs on request."""
RESULTS_SECTION = "GPU campaign (python -m benchmarks.gpu)"
"""Heading of the section of ``benchmarks/RESULTS.md`` a campaign replaces."""
RESULTS_TABLES = {"step_kernels": 1, "tps": 1, "cost": 1, "topo_split": 1}
"""Sections whose first table goes into ``benchmarks/RESULTS.md`` (the full report stays in ``--out``)."""
OPTIONAL_PACKAGES = ("flash_attn", "spconv", "triton", "gph", "ripser", "gudhi", "yaml", "tqdm", "tensorboard",
                     "matplotlib")


def run_section(name: str, size: dict[str, Any], device: str, result: Path, seconds: float) -> None:
    """Child-process entry: run one section with a soft deadline ``seconds`` from now."""
    import torch

    from benchmarks.gpu_campaign.record import Recorder
    from benchmarks.gpu_campaign.sections import SECTIONS

    deadline = time.monotonic() + seconds
    rec = Recorder(result)
    SECTIONS[name](size, torch.device(device), rec, deadline)


def _child(name: str, size: dict[str, Any], device: str, out: Path, seconds: float, soft_s: float) -> dict[str, Any]:
    """Run one section in a child process (its own session, killed as a group after ``seconds``);
    the section itself stops starting new measurements ``soft_s`` seconds after its start."""
    result = out / f"section-{name}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--run-section", name, "--size-json", json.dumps(size),
           "--device", device, "--result", str(result), "--seconds", f"{soft_s:.1f}"]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=seconds)
        status = "ok" if proc.returncode == 0 else "error"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        status = "timeout"
    except BaseException:  # the campaign itself is stopped (Ctrl-C, SIGTERM): take the section down too
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    entry: dict[str, Any] = {"status": status, "seconds": round(time.monotonic() - t0, 1), "time_box_s": seconds,
                             "returncode": proc.returncode}
    if status != "ok":
        entry["error"] = output[-4000:]
    try:
        entry["data"] = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        entry["data"] = {"tables": [], "notes": []}
    return entry


def _environment(device: str) -> dict[str, Any]:
    import importlib.util

    import torch

    from benchmarks.cpu.machine import machine_info
    from benchmarks.cpu.timing import commit_info
    from fast.persistence import DEFAULT_PATHS, available_cores

    info = machine_info()
    info.update(
        device=device,
        device_name=torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        cuda=torch.version.cuda,
        optional_packages={m: importlib.util.find_spec(m) is not None for m in OPTIONAL_PACKAGES},
        default_paths=dict(DEFAULT_PATHS),
        persistence_workers=available_cores(),
        commit=commit_info(REPO),
    )
    return info


def render(campaign: dict[str, Any]) -> str:
    """The campaign's Markdown report: environment, one status row per section, then each section's tables."""
    env = campaign["environment"]
    lines = [
        "# GPU campaign",
        "",
        f"Generated by `python -m benchmarks.gpu{' --smoke' if campaign['smoke'] else ''}` on {env['date_utc']} "
        f"(commit `{env['commit']['id'][:10]}`{', working tree dirty' if env['commit']['dirty'] else ''}); "
        f"total {campaign['total_s']:.0f} s" + ("." if campaign["smoke"] else f" of a {campaign['budget_s']:.0f} s budget."),
        "",
        f"- Device: {env['device_name']} (`{env['device']}`), CUDA {env['cuda']}; CPU {env['cpu_model']}, "
        f"{env['cpu_count']} cores ({env['persistence_workers']} persistence workers), {env['memory_gib']} GiB",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "- Optional packages present: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in env["optional_packages"].items()),
        "- `fast.persistence.DEFAULT_PATHS` at this commit: " + ", ".join(f"{k} -> {v}" for k, v in env["default_paths"].items()),
    ]
    if campaign["smoke"]:
        lines.append("- **Smoke run**: tiny sizes and demo presets; the numbers only show that every section runs.")
    lines += ["", "## Sections", "", "| section | status | seconds | time box (s) |", "|---|---|---|---|"]
    for name, s in campaign["sections"].items():
        lines.append(f"| {name} | {s['status']} | {s['seconds']} | {s['time_box_s']:.0f} |")
    lines.append("")
    for name, s in campaign["sections"].items():
        lines += [f"## {name}", ""]
        for t in s["data"].get("tables", []):
            lines += _table_lines(t)
        lines += [f"- {n}" for n in s["data"].get("notes", [])]
        if s["status"] != "ok":
            lines += [f"- **{s['status']}**; last output:", "", "```", s.get("error", "").strip()[-1500:], "```"]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _table_lines(table: dict[str, Any]) -> list[str]:
    """A section's table as Markdown under a ``###`` title, then a blank line."""
    return [f"### {table['title']}", "", "| " + " | ".join(table["header"]) + " |",
            "|" + "|".join("---" for _ in table["header"]) + "|",
            *("| " + " | ".join(row) + " |" for row in table["rows"]), ""]


def results_section(campaign: dict[str, Any], report: Path) -> str:
    """The campaign's section of ``benchmarks/RESULTS.md``: the GPU, the status of every section and
    the first table of each of :data:`RESULTS_TABLES` (the training steps, TPS, inference)."""
    env = campaign["environment"]
    lines = [f"## {RESULTS_SECTION}", "",
             f"On **{env['device_name']}** (`{env['device']}`, CUDA {env['cuda']}), {env['date_utc']}, commit "
             f"`{env['commit']['id'][:10]}`{' (working tree dirty)' if env['commit']['dirty'] else ''}"
             + (", **smoke run** (tiny sizes: the numbers only show that the code runs)" if campaign["smoke"] else "")
             + f"; full report: `{report.name}`.", "",
             "Sections: " + ", ".join(f"{name} {s['status']} ({s['seconds']} s)"
                                      for name, s in campaign["sections"].items()) + ".", ""]
    for name in RESULTS_TABLES:
        tables = campaign["sections"].get(name, {}).get("data", {}).get("tables", [])
        if tables:
            lines += _table_lines(tables[0])
    split = campaign["sections"].get("topo_split", {}).get("data", {}).get("topo_split")
    if split:
        lines += [f"L_topo per step: {split['measured_ms']:.0f} ms (full objective {split['step_with_ms']:.0f} ms, "
                  f"KD + saliency {split['step_without_ms']:.0f} ms: "
                  f"{split['step_with_ms'] / split['step_without_ms']:.2f}x).", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_results(path: Path, section: str) -> None:
    """Put ``section`` in place of the campaign's section of the Markdown file ``path`` (appended if
    it has none; the file is created if missing), atomically."""
    from benchmarks.report_writers.results import update_sections

    old = path.read_text(encoding="utf-8") if path.is_file() else "# Efficiency results\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(update_sections(old, "\n" + section), encoding="utf-8")
    os.replace(tmp, path)


def campaign(smoke: bool, device: str, out: Path, sections: list[str], budget_s: float,
             results_md: Path | None = None) -> Path:
    """Run ``sections`` in order within ``budget_s`` seconds; write the report (and its section of
    ``results_md``, when given); return the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    start = time.monotonic()
    planned = sum(PLAN[n][0] for n in sections)
    results: dict[str, Any] = {}
    scale = min(1.0, budget_s / planned)
    for i, name in enumerate(sections):
        box, full, tiny = PLAN[name]
        if smoke:
            seconds, soft = SMOKE_BOX_S, SMOKE_BOX_S
        else:
            # its box, scaled down if the plan exceeds the budget, never eating the later sections' share
            left = budget_s - (time.monotonic() - start)
            seconds = min(box * scale, left - scale * sum(PLAN[n][0] for n in sections[i + 1 :]))
            soft = seconds - STARTUP_S
        if soft < 5:
            results[name] = {"status": "skipped", "seconds": 0.0, "time_box_s": max(seconds, 0.0),
                             "error": "no time left in the campaign's budget", "data": {"tables": [], "notes": []}}
            continue
        print(f"[benchmarks.gpu] {name}: up to {seconds:.0f} s", flush=True)
        results[name] = _child(name, tiny if smoke else full, device, out, seconds, soft)
        print(f"[benchmarks.gpu] {name}: {results[name]['status']} in {results[name]['seconds']} s", flush=True)
    document = {"smoke": smoke, "budget_s": budget_s, "total_s": time.monotonic() - start,
                "environment": _environment(device), "sections": results}
    json_path, md_path = out / f"gpu-{stamp}.json", out / f"gpu-{stamp}.md"
    json_path.write_text(json.dumps(document, indent=1, default=str), encoding="utf-8")
    md_path.write_text(render(document), encoding="utf-8")
    if results_md is not None:
        write_results(results_md, results_section(document, md_path))
    for name in sections:
        (out / f"section-{name}.json").unlink(missing_ok=True)
    print(f"[benchmarks.gpu] wrote {md_path} and {json_path.name}", flush=True)
    return md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and demo presets (runs on a CPU)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder of the report (default benchmarks/results)")
    parser.add_argument("--sections", nargs="+", choices=list(PLAN), default=CAMPAIGN,
                        help=f"sections to run, in order (default: {' '.join(CAMPAIGN)})")
    parser.add_argument("--results", type=Path, default=None,
                        help="Markdown file whose campaign section is replaced (default: benchmarks/RESULTS.md; "
                        "the smoke run: none)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available; the smoke run: cpu otherwise)")
    parser.add_argument("--budget-s", type=float, default=TOTAL_S,
                        help=f"seconds for the whole campaign (default {TOTAL_S:.0f}; the smoke run has no budget)")
    # the child-process side of a section (used by the campaign itself)
    parser.add_argument("--run-section", choices=list(PLAN), help=argparse.SUPPRESS)
    parser.add_argument("--size-json", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_section:
        run_section(args.run_section, json.loads(args.size_json), args.device, args.result, args.seconds)
        return 0
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {device}: no CUDA device is visible; run on a GPU machine or use --smoke")
    if not args.smoke and not device.startswith("cuda"):
        parser.error("the campaign measures a GPU and none is visible; use --smoke to check it on a CPU")
    # SIGTERM unwinds like Ctrl-C, so the running section's process group is killed on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.budget_s <= 0:
        parser.error(f"--budget-s must be > 0, got {args.budget_s}")
    results = args.results or (None if args.smoke else REPO / "benchmarks" / "RESULTS.md")
    campaign(args.smoke, device, args.out, args.sections, args.budget_s, results)
    return 0

