"""Write ``benchmarks/RESULTS.md`` from a benchmark run's JSON (paper Table 6, batch, Figures 7-8).

Usage::

    pytest benchmarks/ --benchmark            # writes benchmarks/results/bench-<UTC time>.json
    python -m benchmarks.report [RUN.json] [-o benchmarks/RESULTS.md]

Without a path the newest ``benchmarks/results/*.json`` is used. One markdown table per paper
table/figure, with the paper's own numbers quoted beside ours (Table 6 of App. B.4; Figures 7 and 8
give no numbers in the text, so their claims are quoted), the machine, library versions, date and
load. Speedups are ratios of medians measured in the same run. Benchmark groups this module does
not know (e.g. a later ``test_bench_*.py``) are listed in a generic table, so nothing measured is
left out.

This module is the command and the page's frame (headline order, machine, other groups, the
partial ``--update``); the sections beside the paper are :mod:`benchmarks.report_writers.paper`, those on
the training step :mod:`benchmarks.report_writers.steps`, both made of :mod:`benchmarks.report_writers.tables`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.report_writers.paper import (batch_section, fig7_section, fig8_section, profile_section,
                                             summary_section, table6_section)
from benchmarks.report_writers.predict import predict_section
from benchmarks.report_writers.steps import host_work_section, ops_section, pool_section, topo_split_section
from benchmarks.report_writers.tables import fmt, median, table

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "RESULTS.md"

KNOWN_GROUPS = ("table6-forward", "table6-backward", "batch", "batch-profile", "fig7", "fig8", "step-ops",
                "pool-start", "host-work", "topo-split", "predict", "predict-profile")


def newest_run(directory: Path = RESULTS_DIR) -> Path:
    """Newest non-empty JSON in ``directory`` (a run in progress has an empty file until it ends)."""
    runs = sorted((p for p in directory.glob("*.json") if p.stat().st_size > 0), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise FileNotFoundError(
            f"no benchmark JSON in {directory}; run `pytest benchmarks/ --benchmark` first "
            "or pass the JSON path"
        )
    return runs[-1]


def _machine_section(run: dict[str, Any], path: Path) -> list[str]:
    m = run.get("topodistill_machine", {})
    v = m.get("versions", {})
    loads = [b["extra_info"].get("load_average_1min") for b in run.get("benchmarks", [])]
    loads = [x for x in loads if x is not None] + [r.get("load_average_1min") for r in run.get("isolated", []) if r.get("load_average_1min") is not None]
    cores = m.get("cpu_affinity") or m.get("cpu_count") or 0
    threads = sorted({b["extra_info"].get("torch_threads") for b in run.get("benchmarks", [])} - {None})
    lines = [
        "## Machine and run",
        "",
        f"- Date (UTC): {m.get('date_utc', run.get('datetime', 'unknown'))}; source JSON `{path.name}`; "
        f"commit `{run.get('commit_info', {}).get('id', 'unknown')[:10]}`"
        + (" (working tree dirty)" if run.get("commit_info", {}).get("dirty") else ""),
        f"- CPU: {m.get('cpu_model', 'unknown')}, {m.get('cpu_count')} logical cores "
        f"({cores} usable), {m.get('memory_gib')} GiB RAM; GPU: {m.get('gpu') or 'none'}",
        f"- Python {m.get('python')}; " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- Threads: torch intra-op threads per measurement {threads}; OMP_WAIT_POLICY=PASSIVE, "
        "OMP_NUM_THREADS=1; the fast path's persistence engine runs one worker process per core.",
    ]
    if loads:
        lo, hi = min(loads), max(loads)
        note = (
            f"- Load: 1-minute load average {lo:.1f} to {hi:.1f} during the measurements on {cores} cores."
        )
        if cores and hi > cores:
            note += (
                " **Timings were taken under load** (other jobs shared the machine), so absolute times "
                "are pessimistic and noisy; ratios within the run are the meaningful numbers."
            )
        lines.append(note)
    return lines + [""]


def _other_section(run: dict[str, Any]) -> list[str]:
    others = [b for b in run["benchmarks"] if b.get("group") not in KNOWN_GROUPS]
    if not others:
        return []
    rows = []
    for b in sorted(others, key=lambda b: (str(b.get("group")), b["name"])):
        extra = ", ".join(f"{k}={v}" for k, v in b.get("extra_info", {}).items()
                          if k not in ("torch_threads", "omp_num_threads", "omp_wait_policy", "load_average_1min"))
        rows.append([b.get("group") or "-", f"`{b['name']}`", fmt(median(b)), fmt(float(b["stats"]["min"])),
                     str(b["stats"]["rounds"]), extra or "-"])
    return [
        "## Other benchmarks in this run",
        "",
        *table(["group", "benchmark", "median (s)", "min (s)", "rounds", "extra info"], rows),
    ]


def render(run: dict[str, Any], path: Path) -> str:
    lines = [
        "# Efficiency results",
        "",
        "Generated by `python -m benchmarks.report` from `pytest benchmarks/ --benchmark`; do not edit by "
        "hand. Every baseline is measured in the same run as our numbers.",
        "",
        *summary_section(run),
        *_machine_section(run, path),
        *table6_section(run),
        *batch_section(run),
        *profile_section(run),
        *fig7_section(run),
        *fig8_section(run),
        *ops_section(run),
        *pool_section(run),
        *host_work_section(run),
        *topo_split_section(run),
        *predict_section(run),
        *_other_section(run),
    ]
    return "\n".join(lines).rstrip() + "\n"


def _sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The text before the first ``## `` heading, and (heading, section text) pairs."""
    parts = text.split("\n## ")
    return parts[0], [(p.split("\n", 1)[0], "## " + p) for p in parts[1:]]


def update_sections(old: str, new: str, keep: tuple[str, ...] = ("Headline", "Machine and run")) -> str:
    """``old`` with every section of ``new`` except ``keep`` put in place of the one of the same heading
    (appended when ``old`` has none): a run of some groups refreshes their tables alone."""
    head, sections = _sections(old)
    fresh = {h: body for h, body in _sections(new)[1] if h not in keep}
    merged = [fresh.pop(h, body) for h, body in sections]
    return "\n".join([head.rstrip("\n") + "\n", *(m.rstrip("\n") + "\n" for m in merged + list(fresh.values()))])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="?", type=Path, help="benchmark JSON (default: newest in benchmarks/results)")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT, help="markdown file to write")
    parser.add_argument("--update", action="store_true",
                        help="replace only the sections this run renders in the existing output file "
                        "(e.g. after `pytest benchmarks/tests/test_bench_ops.py --benchmark`)")
    args = parser.parse_args(argv)
    path = args.json or newest_run()
    if not path.is_file():
        raise FileNotFoundError(f"benchmark JSON {path} does not exist; pass the run file that `pytest benchmarks/ --benchmark` wrote")
    with open(path, encoding="utf-8") as f:
        run = json.load(f)
    if "benchmarks" not in run:
        raise ValueError(f"{path} is not a benchmark run file (no 'benchmarks' key)")
    text = render(run, path)
    if args.update and args.output.is_file():
        text = update_sections(args.output.read_text(encoding="utf-8"), text)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} from {path}")

