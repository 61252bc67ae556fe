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
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"
# Batch speed-up over the paper-style pipeline that the representative cases must reach: first 20x,
# raised to 30x with the GPU work on the persistence pool (TPS in the workers, one copy per batch).
BATCH_TARGET = 30.0

KNOWN_GROUPS = ("table6-forward", "table6-backward", "batch", "batch-profile", "fig7", "fig8", "step-ops",
                "pool-start", "host-work", "predict", "predict-profile")
# Paper Table 9 (ms per 30,000-point scan, GPU) and this code on an H200 (benchmarks.gpu's cost section).
PAPER_LATENCY_MS = {"student": 36.2, "teacher": 59.2}
H200_LATENCY_MS = {"student": 54.8, "teacher": 61.7}

# Paper Table 6 (App. B.4): N -> (naive fwd s, naive bwd s, naive MB, ours fwd s, ours bwd s, ours MB,
# speedup). None = "Infeasible (Timeout)".
PAPER_TABLE6: dict[int, tuple[Any, ...]] = {
    30: (19.31, 0.12, 17.1, 0.24, 0.002368, 8.2, "79x"),
    60: (321.12, 0.32, 40.2, 0.05, 0.000250, 16.5, "6,039x"),
    100: (963.30, 1.06, 128.6, 0.14, 0.000254, 17.3, "6,743x"),
    200: (None, None, None, 0.36, 0.000271, 22.7, "-"),
    400: (None, None, None, 0.30, 0.000265, 29.1, "-"),
    800: (None, None, None, 0.40, 0.000236, 42.0, "-"),
    1024: (None, None, None, 0.37, 0.000258, 49.1, "-"),
}


def newest_run(directory: Path = RESULTS_DIR) -> Path:
    """Newest non-empty JSON in ``directory`` (a run in progress has an empty file until it ends)."""
    runs = sorted((p for p in directory.glob("*.json") if p.stat().st_size > 0), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise FileNotFoundError(
            f"no benchmark JSON in {directory}; run `pytest benchmarks/ --benchmark` first "
            "or pass the JSON path"
        )
    return runs[-1]


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "-"
    r = a / b
    return f"{r:,.0f}x" if r >= 100 else f"{r:.3g}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _median(bench: dict[str, Any]) -> float:
    return float(bench["stats"]["median"])


def _by(benchmarks: list[dict[str, Any]], group: str) -> list[dict[str, Any]]:
    return [b for b in benchmarks if b.get("group") == group]


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


def _naive_cell(rec: dict[str, Any] | None) -> list[str]:
    if rec is None:
        return ["not run"] * 3
    if rec["status"] != "ok":
        if rec["status"] == "timeout":
            text = f"timeout (> {rec['timeout_s']:.0f} s)"
        else:
            cap = rec["memory_limit_mb"]
            text = "out of memory" + ("" if cap is None else f" (cap {cap / 1024:.0f} GiB)")
        return [text, "-", "-"]
    return [_fmt(rec["forward_s"]), _fmt(rec["backward_s"]), _fmt(rec.get("rss_peak_mb"))]


def _engines(run: dict[str, Any]) -> str:
    names = sorted({b["extra_info"].get("engine") for b in run["benchmarks"]
                    if b["extra_info"].get("method") == "ours" and b["extra_info"].get("engine")})
    return ", ".join(f"`{n}`" for n in names) or "unrecorded"


def _table6_section(run: dict[str, Any]) -> list[str]:
    fwd = {(b["extra_info"]["method"], b["extra_info"]["device"], b["extra_info"]["n"]): b
           for b in _by(run["benchmarks"], "table6-forward")}
    bwd = {(b["extra_info"]["method"], b["extra_info"]["device"], b["extra_info"]["n"]): _median(b)
           for b in _by(run["benchmarks"], "table6-backward")}
    naive = {r["n"]: r for r in run.get("isolated", []) if r.get("group") == "table6" and r.get("method") == "naive"}
    memory = {(r["method"], r["device"], r["n"]): r for r in run.get("isolated", [])
              if r.get("group") == "table6-memory" and r.get("status") == "ok"}
    sizes = sorted({k[2] for k in fwd} | set(naive))
    if not sizes:
        return []
    rows_methods = sorted({(k[0], k[1]) for k in fwd}, key=lambda md: (md[0] != "paper-style", md[0] != "ours", md))

    def total(method: str, device: str, n: int) -> float | None:
        key = (method, device, n)
        if key not in fwd or key not in bwd:
            return None
        return _median(fwd[key]) + bwd[key]

    header = ["N", "Naive fwd (s)", "Naive bwd (s)", "Naive mem (MB)"]
    for method, device in rows_methods:
        label = f"{method} ({device})"
        header += [f"{label} fwd (s)", f"{label} bwd (s)", f"{label} mem (MB)"]
    baselines = [md for md in rows_methods if md[0] != "ours"]
    header += ["Speedup ours vs naive", *(f"Speedup ours vs {m} ({d})" for m, d in baselines), "Loss spread"]
    rows = []
    for n in sizes:
        rec = naive.get(n)
        row = [str(n), *_naive_cell(rec)]
        losses = [rec["loss"]] if rec and rec["status"] == "ok" else []
        for method, device in rows_methods:
            b = fwd.get((method, device, n))
            if b is None:
                row += ["-", "-", "-"]
                continue
            m = memory.get((method, device, n), {})
            mem = m.get("cuda_peak_mb") if device == "cuda" else m.get("rss_peak_mb")
            row += [_fmt(_median(b)), _fmt(bwd.get((method, device, n))), _fmt(mem)]
            losses.append(b["extra_info"]["loss"])
        ours = total("ours", "cpu", n)
        naive_total = rec["forward_s"] + rec["backward_s"] if rec and rec["status"] == "ok" else None
        row.append(_ratio(naive_total, ours))
        row += [_ratio(total(m, d, n), ours) for m, d in baselines]
        spread = (max(losses) - min(losses)) / max(abs(max(losses)), 1e-300) if len(losses) > 1 else None
        row.append(_fmt(spread, 2) if spread is not None else "-")
        rows.append(row)

    mem_rows = []
    for n in sizes:
        rec = naive.get(n)
        if rec and rec["status"] == "ok":
            mem_rows.append([str(n), "naive (cpu)", _fmt(rec.get("rss_peak_mb")), _fmt(rec.get("tracemalloc_peak_mb")), "-"])
        for method, device in rows_methods:
            e = memory.get((method, device, n))
            if e is not None:
                mem_rows.append([str(n), f"{method} ({device})", _fmt(e.get("rss_peak_mb")),
                                 _fmt(e.get("tracemalloc_peak_mb")), _fmt(e.get("cuda_peak_mb"))])

    paper_rows = []
    for n, (nf, nb, nm, of, ob, om, sp) in PAPER_TABLE6.items():
        naive_cells = ["Infeasible (Timeout)", "", ""] if nf is None else [_fmt(nf), _fmt(nb), _fmt(nm)]
        paper_rows.append([str(n), *naive_cells, _fmt(of), _fmt(ob), _fmt(om), sp])

    rounds = sorted({b["stats"]["rounds"] for b in _by(run["benchmarks"], "table6-forward")})
    return [
        "## Table 6: single-cloud H0+H1 topological loss, forward / backward / peak memory",
        "",
        "One cloud of N structured 64-d points (`latent` family), teacher and student, Algorithm 1 "
        "with every point kept (N <= M = 1024). Times are medians over "
        f"{rounds} rounds (the naive baseline: one run in a child process with a kill timeout and an "
        "address-space cap; sizes it cannot finish are reported as such). Speedup = (fwd + bwd median "
        "of the baseline) / (fwd + bwd median of ours), same run. Mem = peak RSS growth during one "
        "forward + backward, measured in a fresh child process per method and N (after a tiny warm-up "
        "call that starts the engine's workers; their growth is included); CUDA rows: "
        "`torch.cuda.max_memory_allocated`. Engines: ours = the fast path's default H1 engine "
        f"({_engines(run)}), paper-style = `ripser`. Loss spread = relative "
        "spread of the loss values the methods returned at that N (all compute the same Algorithm 1).",
        "",
        "### Measured here",
        "",
        *_table(header, rows),
        "### Peak memory detail (MB)",
        "",
        *_table(["N", "method", "RSS peak", "tracemalloc peak", "CUDA peak"], mem_rows),
        "### The paper's Table 6 (App. B.4, quoted)",
        "",
        *_table(["N", "Naive fwd (s)", "Naive bwd (s)", "Naive mem (MB)", "Ours fwd (s)", "Ours bwd (s)",
                 "Ours mem (MB)", "Speedup"], paper_rows),
    ]


def _batch_section(run: dict[str, Any]) -> list[str]:
    cells: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for b in _by(run["benchmarks"], "batch"):
        cells[b["extra_info"]["case"]][b["extra_info"]["method"]] = b
    if not cells:
        return []
    rows = []
    for case in sorted(cells, key=lambda c: (c.startswith("shell"), c)):
        paper, ours = cells[case].get("paper-style"), cells[case].get("ours")
        e = (paper or ours)["extra_info"]
        label = case + (" (worst case)" if e["family"] == "shell" else "")
        if e.get("time_budget_s") is not None:
            label += f", H1 budget {e['time_budget_s']:g} s"
        loss_diff = "-"
        if paper and ours:
            lp, lo = paper["extra_info"]["loss"], ours["extra_info"]["loss"]
            loss_diff = _fmt(abs(lp - lo) / max(abs(lp), 1e-300), 2)
        misses = ours["extra_info"].get("h1_budget_misses") if ours else None
        rows.append([
            label, f"{e['clouds']} x {e['m']} (of {e['points_per_cloud']})",
            _fmt(_median(paper)) if paper else "not run", _fmt(_median(ours)) if ours else "-",
            _ratio(_median(paper) if paper else None, _median(ours) if ours else None),
            f"{paper['stats']['rounds'] if paper else '-'} / {ours['stats']['rounds'] if ours else '-'}",
            loss_diff, "-" if misses is None else str(misses),
        ])
    return [
        "## Batch throughput: forward + backward of B clouds x M points (the training step's cost)",
        "",
        "Paper-style = clouds in series, one `ripser` call per diagram, Python-loop routing; ours = "
        "`fast.topo_loss` with its default engine (one worker process per core). TPS selects M points "
        "of each cloud. `shell` = unstructured 64-d features (TPS picks a near-spherical shell: "
        "exact H1's worst case, decision 6c), reported separately; with an H1 time budget, clouds "
        "whose H1 misses it use H0 only for that step (the misses column counts them over all rounds). "
        f"Target: ours >= {BATCH_TARGET:g}x faster on the representative cases.",
        "",
        *_table(["case", "clouds x M", "paper-style (s)", "ours (s)", "ratio", "rounds (paper/ours)",
                 "loss rel. diff", "H1 budget misses"], rows),
    ]


# The batch profile before this work, quoted (like the paper's numbers) from the run recorded in
# benchmarks/RESULTS.md at commit 5ce805d, where the issue that set the 20x target was measured.
BEFORE_PROFILE = (
    "Before (commit 5ce805d, quoted from its RESULTS.md and profile): ours took 3.75 s (clusters) and "
    "2.78 s (latent) per step; the 24 H1 diagrams were ~0.84 core-s, TPS ran in float64 in the calling "
    "process (~1.0 s, while the workers waited), the calling process then waited ~0.9 s for the diagrams "
    "and the backward took ~0.5 s."
)


def _profile_section(run: dict[str, Any]) -> list[str]:
    records = {b["extra_info"]["family"]: b for b in _by(run["benchmarks"], "batch-profile")}
    if not records:
        return []
    families = sorted(records)
    stages = list(records[families[0]]["extra_info"]["profile_s"])
    totals = {f: sum(records[f]["extra_info"]["profile_s"].values()) for f in families}
    rows = []
    for stage in stages:
        row = [stage]
        for f in families:
            sec = records[f]["extra_info"]["profile_s"].get(stage, 0.0)
            row += [_fmt(sec), f"{100 * sec / totals[f]:.0f}%" if totals[f] > 0 else "-"]
        rows.append(row)
    rows.append(["**total (one core)**"] + [c for f in families for c in (_fmt(totals[f]), "100%")])
    pooled = {b["extra_info"]["case"]: _median(b) for b in _by(run["benchmarks"], "batch")
              if b["extra_info"]["method"] == "ours"}
    rows.append(["wall time with the worker pool (batch table)"]
                + [c for f in families for c in (_fmt(pooled.get(f)), "")])
    e = records[families[0]]["extra_info"]
    return [
        "### Where the time goes",
        "",
        f"One forward + backward of `fast.topo_loss` on the batch above ({e['clouds']} x {e['m']} of "
        f"{e['points_per_cloud']}) with every stage in the calling process (no workers), profiled with "
        "cProfile and summed per stage of Algorithm 1 (`benchmarks/step_profile.py`): core-seconds of "
        "one step. With the pool, TPS through the H1 reduction run per cloud in the worker processes; "
        "normalisation, edge lengths, PWCD and the backward stay in the calling process.",
        "",
        *_table(["stage"] + [c for f in families for c in (f"{f} (s)", "share")], rows),
        BEFORE_PROFILE,
        "",
    ]


def _fig7_section(run: dict[str, Any]) -> list[str]:
    cells: dict[int, dict[str, float]] = defaultdict(dict)
    for b in _by(run["benchmarks"], "fig7"):
        cells[b["extra_info"]["n"]][b["extra_info"]["method"]] = _median(b)
    if not cells:
        return []
    methods = ["random", "tps-ours", "tps-reference"]
    rows = [[str(n), *(_fmt(cells[n].get(m, float("nan")) * 1e3) for m in methods),
             _ratio(cells[n].get("tps-reference"), cells[n].get("tps-ours"))] for n in sorted(cells)]
    return [
        "## Figure 7: TPS vs random sampling time (M = 128)",
        "",
        "Paper (Figure 7 caption, no numbers in the text): \"Random sampling maintains nearly constant "
        "time, whereas TPS scales linearly with N.\" Medians in milliseconds; `tps-ours` = `fast.tps` "
        "(torch), `tps-reference` = the NumPy loop of `reference.tps` (both pick the same points).",
        "",
        *_table(["N", "random (ms)", "TPS ours (ms)", "TPS reference (ms)", "reference / ours"], rows),
    ]


def _fig8_section(run: dict[str, Any]) -> list[str]:
    cells: dict[int, dict[int, float]] = defaultdict(dict)
    for b in _by(run["benchmarks"], "fig8"):
        cells[b["extra_info"]["n"]][b["extra_info"]["maxdim"]] = _median(b)
    if not cells:
        return []
    rows = [[str(n), _fmt(cells[n].get(1)), _fmt(cells[n].get(2)), _ratio(cells[n].get(2), cells[n].get(1))]
            for n in sorted(cells)]
    return [
        "## Figure 8: H1 vs H2 persistence time",
        "",
        "Paper (App. D.3, no numbers in the text): \"for inputs as small as N = 400, computing H2 incurs "
        "a latency spike orders of magnitude higher than H1\". Same engine for both (giotto-ph, one "
        "thread), same structured clouds; H2 time includes H0 and H1.",
        "",
        *_table(["N", "up to H1 (s)", "up to H2 (s)", "H2 / H1"], rows),
    ]


def _ops_cell(pair: tuple[int, int | None] | None) -> str:
    if pair is None:
        return "-"
    ops, syncs = pair
    return f"{ops:,} / {'-' if syncs is None else f'{syncs:,}'}"


def _ops_section(run: dict[str, Any]) -> list[str]:
    from benchmarks.step_ops import BEFORE, PAPER, TARGETS

    records = _by(run["benchmarks"], "step-ops")
    if not records:
        return []
    rows = []
    for b in records:
        e = b["extra_info"]
        name = e["measurement"]
        models = {"student CE step": e["student"], "teacher forward": e["teacher"]}
        model = models.get(name, f"{e['teacher']} + {e['student']}")
        target = TARGETS.get(name)
        verdict = "-"
        if target is not None:
            met = e["ops"] <= target[0] and (target[1] is None or e["syncs"] <= target[1])
            verdict = f"<= {_ops_cell(target)}: {'met' if met else 'not met'}"
        top = ", ".join(f"{k} {v:,}" for k, v in e.get("top_ops", {}).items())
        rows.append([name, model, f"{e['clouds']} x {e['points']:,}", _ops_cell((e["ops"], e["syncs"])),
                     _ops_cell(BEFORE.get(name, {}).get("quoted")), _ops_cell(BEFORE.get(name, {}).get("7965517")),
                     verdict, top])
    paper = all(b["extra_info"]["points"] == PAPER["points"] for b in records)
    when = run.get("datetime", "unknown")
    commit = run.get("commit_info", {}).get("id", "unknown")[:10]
    return [
        "## Dispatched ops and host syncs per step",
        "",
        "Counted on the CPU by `train.op_count` (every dispatched aten op that is not a view or an allocation, "
        "each at least one kernel launch on a GPU; host synchronisations: `.item()`/`bool()`, boolean masks, "
        "`nonzero`, `unique`, `repeat_interleave` without `output_size`, host reads and copies of step tensors), "
        "one step of the real step code (`benchmarks/step_ops.py`): the student's L_seg step with its update and "
        "log read, the same with L_kld + L_grad against the teacher, the teacher's forward pass. Before: the "
        "figures first measured with the GPU campaign's step (quoted), and this harness at commit 7965517. "
        "The model's own share falls with its rewrite (fewer, larger kernels; decision 39). "
        f"Measured {when}, commit `{commit}`" + ("" if paper else "; **smoke sizes, not the paper's**") + ".",
        "",
        *_table(["step", "models", "clouds x points", "ops / syncs", "before (quoted)", "before (7965517)",
                 "target", "most dispatched ops"], rows),
    ]


def _pool_section(run: dict[str, Any]) -> list[str]:
    from benchmarks.pool_start import BEFORE, TARGETS

    records = _by(run["benchmarks"], "pool-start")
    if not records:
        return []
    rows = []
    states = list(TARGETS)
    for b in sorted(records, key=lambda b: (b["extra_info"]["workers"], states.index(b["extra_info"]["state"]))):
        e = b["extra_info"]
        ready = statistics.median(e["ready_s"])
        target = TARGETS[e["state"]]
        rows.append([str(e["workers"]), e["state"], ", ".join(_fmt(x) for x in e["ready_s"]),
                     _fmt(statistics.median(e["warm_s"])),
                     _fmt(statistics.median(e["pool_s"])) if "pool_s" in e else "-",
                     _fmt(statistics.median(e["workers_cpu_s"])) if "workers_cpu_s" in e else "-", _fmt(_median(b)),
                     f"<= {target:g}: {'met' if ready <= target else 'not met'}",
                     BEFORE.get((e["workers"], e["state"]), "-")])
    gaps = [r - p for b in records if "pool_s" in b["extra_info"]
            for r, p in zip(b["extra_info"]["ready_s"], b["extra_info"]["pool_s"])]
    own_start = statistics.median(gaps) if gaps else None
    return [
        "## Persistence pool start-up",
        "",
        "Seconds from a fresh process's first line until its `PersistencePool` is warmed and has returned "
        "the diagrams of one small cloud per worker (`benchmarks/pool_start.py`): cold = a new copy of "
        "`fast/` and `reference/` and an empty cache (a new machine), clone = a new copy on a machine where "
        "another copy has compiled the same kernels (their cache is shared by every copy, decision 41), "
        "warm = the clone's copy again. "
        "From the pool's creation = the same end, timed from the `PersistencePool(...)` call (without the "
        f"process's own start and imports: {_fmt(own_start)} s here, median over all runs). "
        "Workers' CPU = CPU-seconds of all the pool's workers together, from their start to their exit "
        "(interpreter start, compiling or loading the kernels, the one task): on a new machine mostly "
        "compilation, which the workers share out (decision 41). "
        "Child wall = the whole child process (interpreter start and pool shutdown included). "
        f"Machine: {records[0]['extra_info']['cores']} cores, 1-minute load "
        f"{_fmt(records[0]['extra_info'].get('load_average_1min'))} at the first measurement.",
        "",
        *_table(["workers", "state", "ready (s), each run", "warm() returned (s, median)",
                 "from the pool's creation (s, median)", "workers' CPU (CPU-s, median)", "child wall (s, median)",
                 "target (ready)", "before"], rows),
    ]


# host-work parts: (extra_info key, label, per step in a paper-size step as "count x")
_HOST_PARTS = (
    ("transforms_nuscenes_s", "transforms of one nuScenes-size scan (34,720 points)", "4 x, loader"),
    ("transforms_waymo_s", "transforms of one Waymo-size scan (177,000 points)", "4 x, loader (Waymo)"),
    ("collate_nuscenes_s", "collate of 4 nuScenes-size scans", "1 x, loader"),
    ("collate_waymo_s", "collate of 4 Waymo-size scans", "1 x, loader (Waymo)"),
    ("plan_s", "batch plan of the 4 nuScenes-size scans, teacher + student items", "1 x, loader"),
    ("plan_lidar_like_s", "batch plan of `lidar_like_batch` 4 x 30,000", "(comparison)"),
    ("pack_s", "packing the plan into one shared buffer", "1 x, loader"),
    ("main_plan_s", "training process: unpack the plan, make its device views", "1 x, training process"),
    ("main_outside_ops_ce_s", "training process: outside ops, student CE step", "1 x, training process (CE)"),
    ("main_outside_ops_kd_s", "training process: outside ops, KD + saliency step", "1 x, training process"),
    ("tps_cloud_s", "host TPS, 20,000 x 64 -> 1,024, latent family", "12 x, pool (only with --topo-tps host)"),
    ("tps_cloud_shell_s", "host TPS, 20,000 x 64 -> 1,024, shell family (unstructured)", "(worst case)"),
    ("persistence_diagram_s", "H0 + H1 of one 1,024 x 64 cloud", "24 x, pool (with L_topo)"),
)


def _host_work_section(run: dict[str, Any]) -> list[str]:
    records = _by(run["benchmarks"], "host-work")
    if not records:
        return []
    e = records[0]["extra_info"]
    parts, implied = e["parts"], e["implied_s"]
    rows = [[label, f"{1000 * parts[key]:.1f}", per] for key, label, per in _HOST_PARTS if key in parts]
    steps = [[f"{dataset}, {'KD + saliency + L_topo (TPS on the GPU)' if topo else 'KD + saliency'}",
              *(f"{1000 * implied[f'{dataset}_{topo_key}_{cores}']:.0f}" for cores in (8, 16))]
             for dataset in ("nuscenes", "waymo") for topo, topo_key in ((False, "kd"), (True, "topo"))]
    return [
        "## Host work per training step",
        "",
        "Core-seconds of each host part of a paper-size step (`benchmarks/host_work.py`; medians of process "
        "CPU time, one torch thread; decision 47). Loader parts run in the DataLoader workers, the pool's in "
        "the persistence workers, the rest in the training process. Outside ops = the step's wall time minus "
        "the time covered by its `aten::` ops under `torch.profiler` (an upper bound: the profiler adds a cost "
        "per op) at 4 x 3,000 points (the paper size's op count), the host's own work while a GPU computes. "
        f"TPS and diagrams of latent-family features (`benchmarks/clouds.py`; unstructured features cost "
        f"more, see the TPS row of the shell family). Plan hand-over: {parts.get('plan_bytes', 0) / 1e6:.0f} MB. "
        f"Measured {run.get('datetime', 'unknown')}, commit `{run.get('commit_info', {}).get('id', 'unknown')[:10]}`"
        + ("" if e.get("paper") else "; **smoke sizes, not the paper's**") + ".",
        "",
        *_table(["part", "ms (core)", "per step"], rows),
        "",
        "Shortest step the host allows on a GPU node (ms): the training process's own work on one core, "
        "the loader's and the pool's work shared by the other cores of the GPU (`implied_step_s`); the GPU "
        "step itself is not included (`python -m benchmarks.gpu` measures it beside these figures).",
        "",
        *_table(["step (4 scans)", "8 cores per GPU", "16 cores per GPU"], steps),
    ]


def _predict_section(run: dict[str, Any]) -> list[str]:
    records = _by(run["benchmarks"], "predict")
    if not records:
        return []
    ms = {(b["extra_info"]["model"], b["extra_info"]["clouds"]): 1000 * _median(b) for b in records}
    first = records[0]["extra_info"]
    rows = []
    for (kind, clouds), t in sorted(ms.items(), key=lambda kv: (kv[0][1], kv[0][0] != "student")):
        e = next(b["extra_info"] for b in records if (b["extra_info"]["model"], b["extra_info"]["clouds"]) == (kind, clouds))
        rows.append([kind, str(clouds), f"{e['parameters']:,}", f"{t:.0f}", f"{t / clouds:.0f}",
                     f"{1000 * clouds / t:.2f}", f"{e['plan_ms']:.0f}"])
    small = min(c for _, c in ms)
    ratio = _ratio(ms.get(("teacher", small)), ms.get(("student", small)))
    machine = run.get("topodistill_machine", {})
    cores = machine.get("cpu_affinity") or machine.get("cpu_count") or 0
    loads = [b["extra_info"]["load_average_1min"] for b in records if b["extra_info"].get("load_average_1min")]
    loaded = bool(cores and loads and max(loads) > cores)
    lines = [
        "## Inference: teacher and student per scan",
        "",
        f"Forward pass of the paper presets on grid-sampled LiDAR-like scans of {first['points']:,} points "
        "(`benchmarks/test_bench_predict.py`; eval mode, fixed serialization, the batch plan built beforehand as "
        "`train.predict`'s loader workers build it; median of "
        f"{records[0]['stats']['rounds']} round(s) after a warm-up), on "
        f"{machine.get('cpu_model', 'this CPU')} ({cores} cores"
        + (f", torch's CPU kernels: {machine['cpu_capability']}" if machine.get("cpu_capability") else "")
        + f") with {first['torch_threads']} torch thread(s) "
        f"(OMP_NUM_THREADS={first['omp_num_threads']}), measured {run.get('datetime', 'unknown')}; 1-minute load "
        f"average {min(loads, default=float('nan')):.1f} to {max(loads, default=float('nan')):.1f}"
        + (" (**the machine was shared with other jobs**: absolute times are pessimistic, ratios are what to read)"
           if loaded else "")
        + ("" if first["points"] == 30_000 else "; **smoke sizes, not the paper's**") + ".",
        "",
        *_table(["model", "batch", "parameters", "forward (ms)", "ms per scan", "scans/s", "plan (ms, loader)"], rows),
        f"Teacher / student latency at batch {small}: **{ratio}** here; the paper: "
        f"{PAPER_LATENCY_MS['teacher']} / {PAPER_LATENCY_MS['student']} ms = "
        f"{PAPER_LATENCY_MS['teacher'] / PAPER_LATENCY_MS['student']:.2f}x (GPU); an H200 with this code: "
        f"{H200_LATENCY_MS['teacher']} / {H200_LATENCY_MS['student']} ms = "
        f"{H200_LATENCY_MS['teacher'] / H200_LATENCY_MS['student']:.2f}x.",
    ]
    profiles = {b["extra_info"]["model"]: b["extra_info"] for b in _by(run["benchmarks"], "predict-profile")}
    if {"student", "teacher"} <= set(profiles):
        s, t = profiles["student"]["part_ms"], profiles["teacher"]["part_ms"]
        gflops = {kind: profiles[kind]["gflops"] for kind in ("student", "teacher")}
        parts = sorted((k for k in t if k != "total"), key=lambda k: -t[k])
        prow = [[k, f"{s.get(k, 0):.0f}", f"{100 * s.get(k, 0) / s['total']:.0f}", f"{t[k]:.0f}",
                 f"{100 * t[k] / t['total']:.0f}", _ratio(t[k], s.get(k))] for k in parts]
        prow.append(["total", f"{s['total']:.0f}", "100", f"{t['total']:.0f}", "100", _ratio(t["total"], s["total"])])
        lines += [
            "",
            "Where one scan's forward pass goes (`benchmarks/predict_profile.py`: forward hooks per part, one "
            "pass after a warm-up):",
            "",
            *_table(["part", "student (ms)", "student %", "teacher (ms)", "teacher %", "teacher / student"], prow),
            f"FLOPs of one scan's pass: student {gflops['student']:.1f} G, teacher {gflops['teacher']:.1f} G "
            f"({_ratio(gflops['teacher'], gflops['student'])}).",
        ]
    return lines + [""]


def _other_section(run: dict[str, Any]) -> list[str]:
    others = [b for b in run["benchmarks"] if b.get("group") not in KNOWN_GROUPS]
    if not others:
        return []
    rows = []
    for b in sorted(others, key=lambda b: (str(b.get("group")), b["name"])):
        extra = ", ".join(f"{k}={v}" for k, v in b.get("extra_info", {}).items()
                          if k not in ("torch_threads", "omp_num_threads", "omp_wait_policy", "load_average_1min"))
        rows.append([b.get("group") or "-", f"`{b['name']}`", _fmt(_median(b)), _fmt(float(b["stats"]["min"])),
                     str(b["stats"]["rounds"]), extra or "-"])
    return [
        "## Other benchmarks in this run",
        "",
        *_table(["group", "benchmark", "median (s)", "min (s)", "rounds", "extra info"], rows),
    ]


def _summary_section(run: dict[str, Any]) -> list[str]:
    """The two headline numbers (Table 6 speed-up over the naive baseline at N = 100; batch speed-up
    over the paper-style pipeline, against :data:`BATCH_TARGET`), from the same data as the tables below."""
    lines = ["## Headline", ""]
    medians = {(b["group"], b["extra_info"].get("method"), b["extra_info"].get("device"), b["extra_info"].get("n")):
               _median(b) for b in run["benchmarks"] if b.get("group") in ("table6-forward", "table6-backward")}
    naive100 = next((r for r in run.get("isolated", []) if r.get("group") == "table6"
                     and r.get("method") == "naive" and r.get("n") == 100), None)
    ours100 = [medians.get((g, "ours", "cpu", 100)) for g in ("table6-forward", "table6-backward")]
    if naive100 and naive100["status"] == "ok" and None not in ours100:
        ratio = _ratio(naive100["forward_s"] + naive100["backward_s"], sum(ours100))
        lines.append(f"- Table 6, N = 100: ours (CPU) is **{ratio}** faster than the naive baseline "
                     "(fwd + bwd, same run; paper: 6,743x).")
    elif naive100:
        lines.append(f"- Table 6, N = 100: the naive baseline did not finish ({naive100['status']}).")
    for b in _by(run["benchmarks"], "batch"):
        e = b["extra_info"]
        if e["method"] != "ours" or e["family"] == "shell" or e.get("time_budget_s") is not None:
            continue
        paper = next((p for p in _by(run["benchmarks"], "batch") if p["extra_info"]["case"] == e["case"]
                      and p["extra_info"]["method"] == "paper-style"), None)
        if paper is None:
            continue
        r = _median(paper) / _median(b)
        verdict = "met" if r >= BATCH_TARGET else "not met"
        lines.append(f"- Batch {e['clouds']} x M = {e['m']} ({e['case']}): ours is **{r:.3g}x** faster than the "
                     f"paper-style pipeline (forward + backward; target >= {BATCH_TARGET:g}x: {verdict}).")
    return lines + [""] if len(lines) > 2 else []


def render(run: dict[str, Any], path: Path) -> str:
    lines = [
        "# Efficiency results",
        "",
        "Generated by `python -m benchmarks.report` from `pytest benchmarks/ --benchmark`; do not edit by "
        "hand. Every baseline is measured in the same run as our numbers.",
        "",
        *_summary_section(run),
        *_machine_section(run, path),
        *_table6_section(run),
        *_batch_section(run),
        *_profile_section(run),
        *_fig7_section(run),
        *_fig8_section(run),
        *_ops_section(run),
        *_pool_section(run),
        *_host_work_section(run),
        *_predict_section(run),
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
                        "(e.g. after `pytest benchmarks/test_bench_ops.py --benchmark`)")
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


if __name__ == "__main__":
    main()
