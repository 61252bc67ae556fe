"""The sections of ``benchmarks/RESULTS.md`` that set our numbers beside the paper's: the headline,
Table 6 (App. B.4: forward, backward and memory against the naive baseline), the batch speed-up
over the paper-style pipeline and its profile, and Figures 7 and 8 (whose claims are quoted, as
the paper gives no numbers for them)."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from benchmarks.report_writers.tables import by_group, fmt, median, ratio, table


# Batch speed-up over the paper-style pipeline that the representative cases must reach: first 20x,
# raised to 30x with the GPU work on the persistence pool (TPS in the workers, one copy per batch).
BATCH_TARGET = 30.0


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
    return [fmt(rec["forward_s"]), fmt(rec["backward_s"]), fmt(rec.get("rss_peak_mb"))]


def _engines(run: dict[str, Any]) -> str:
    names = sorted({b["extra_info"].get("engine") for b in run["benchmarks"]
                    if b["extra_info"].get("method") == "ours" and b["extra_info"].get("engine")})
    return ", ".join(f"`{n}`" for n in names) or "unrecorded"


def summary_section(run: dict[str, Any]) -> list[str]:
    """The two headline numbers (Table 6 speed-up over the naive baseline at N = 100; batch speed-up
    over the paper-style pipeline, against :data:`BATCH_TARGET`), from the same data as the tables below."""
    lines = ["## Headline", ""]
    medians = {(b["group"], b["extra_info"].get("method"), b["extra_info"].get("device"), b["extra_info"].get("n")):
               median(b) for b in run["benchmarks"] if b.get("group") in ("table6-forward", "table6-backward")}
    naive100 = next((r for r in run.get("isolated", []) if r.get("group") == "table6"
                     and r.get("method") == "naive" and r.get("n") == 100), None)
    ours100 = [medians.get((g, "ours", "cpu", 100)) for g in ("table6-forward", "table6-backward")]
    if naive100 and naive100["status"] == "ok" and None not in ours100:
        speedup = ratio(naive100["forward_s"] + naive100["backward_s"], sum(ours100))
        lines.append(f"- Table 6, N = 100: ours (CPU) is **{speedup}** faster than the naive baseline "
                     "(fwd + bwd, same run; paper: 6,743x).")
    elif naive100:
        lines.append(f"- Table 6, N = 100: the naive baseline did not finish ({naive100['status']}).")
    for b in by_group(run["benchmarks"], "batch"):
        e = b["extra_info"]
        if e["method"] != "ours" or e["family"] == "shell" or e.get("time_budget_s") is not None:
            continue
        paper = next((p for p in by_group(run["benchmarks"], "batch") if p["extra_info"]["case"] == e["case"]
                      and p["extra_info"]["method"] == "paper-style"), None)
        if paper is None:
            continue
        r = median(paper) / median(b)
        verdict = "met" if r >= BATCH_TARGET else "not met"
        lines.append(f"- Batch {e['clouds']} x M = {e['m']} ({e['case']}): ours is **{r:.3g}x** faster than the "
                     f"paper-style pipeline (forward + backward; target >= {BATCH_TARGET:g}x: {verdict}).")
    return lines + [""] if len(lines) > 2 else []


def table6_section(run: dict[str, Any]) -> list[str]:
    fwd = {(b["extra_info"]["method"], b["extra_info"]["device"], b["extra_info"]["n"]): b
           for b in by_group(run["benchmarks"], "table6-forward")}
    bwd = {(b["extra_info"]["method"], b["extra_info"]["device"], b["extra_info"]["n"]): median(b)
           for b in by_group(run["benchmarks"], "table6-backward")}
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
        return median(fwd[key]) + bwd[key]

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
            row += [fmt(median(b)), fmt(bwd.get((method, device, n))), fmt(mem)]
            losses.append(b["extra_info"]["loss"])
        ours = total("ours", "cpu", n)
        naive_total = rec["forward_s"] + rec["backward_s"] if rec and rec["status"] == "ok" else None
        row.append(ratio(naive_total, ours))
        row += [ratio(total(m, d, n), ours) for m, d in baselines]
        spread = (max(losses) - min(losses)) / max(abs(max(losses)), 1e-300) if len(losses) > 1 else None
        row.append(fmt(spread, 2) if spread is not None else "-")
        rows.append(row)

    mem_rows = []
    for n in sizes:
        rec = naive.get(n)
        if rec and rec["status"] == "ok":
            mem_rows.append([str(n), "naive (cpu)", fmt(rec.get("rss_peak_mb")), fmt(rec.get("tracemalloc_peak_mb")), "-"])
        for method, device in rows_methods:
            e = memory.get((method, device, n))
            if e is not None:
                mem_rows.append([str(n), f"{method} ({device})", fmt(e.get("rss_peak_mb")),
                                 fmt(e.get("tracemalloc_peak_mb")), fmt(e.get("cuda_peak_mb"))])

    paper_rows = []
    for n, (nf, nb, nm, of, ob, om, sp) in PAPER_TABLE6.items():
        naive_cells = ["Infeasible (Timeout)", "", ""] if nf is None else [fmt(nf), fmt(nb), fmt(nm)]
        paper_rows.append([str(n), *naive_cells, fmt(of), fmt(ob), fmt(om), sp])

    rounds = sorted({b["stats"]["rounds"] for b in by_group(run["benchmarks"], "table6-forward")})
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
        *table(header, rows),
        "### Peak memory detail (MB)",
        "",
        *table(["N", "method", "RSS peak", "tracemalloc peak", "CUDA peak"], mem_rows),
        "### The paper's Table 6 (App. B.4, quoted)",
        "",
        *table(["N", "Naive fwd (s)", "Naive bwd (s)", "Naive mem (MB)", "Ours fwd (s)", "Ours bwd (s)",
                 "Ours mem (MB)", "Speedup"], paper_rows),
    ]


def batch_section(run: dict[str, Any]) -> list[str]:
    cells: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for b in by_group(run["benchmarks"], "batch"):
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
            loss_diff = fmt(abs(lp - lo) / max(abs(lp), 1e-300), 2)
        misses = ours["extra_info"].get("h1_budget_misses") if ours else None
        rows.append([
            label, f"{e['clouds']} x {e['m']} (of {e['points_per_cloud']})",
            fmt(median(paper)) if paper else "not run", fmt(median(ours)) if ours else "-",
            ratio(median(paper) if paper else None, median(ours) if ours else None),
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
        *table(["case", "clouds x M", "paper-style (s)", "ours (s)", "ratio", "rounds (paper/ours)",
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


def profile_section(run: dict[str, Any]) -> list[str]:
    records = {b["extra_info"]["family"]: b for b in by_group(run["benchmarks"], "batch-profile")}
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
            row += [fmt(sec), f"{100 * sec / totals[f]:.0f}%" if totals[f] > 0 else "-"]
        rows.append(row)
    rows.append(["**total (one core)**"] + [c for f in families for c in (fmt(totals[f]), "100%")])
    pooled = {b["extra_info"]["case"]: median(b) for b in by_group(run["benchmarks"], "batch")
              if b["extra_info"]["method"] == "ours"}
    rows.append(["wall time with the worker pool (batch table)"]
                + [c for f in families for c in (fmt(pooled.get(f)), "")])
    e = records[families[0]]["extra_info"]
    return [
        "### Where the time goes",
        "",
        f"One forward + backward of `fast.topo_loss` on the batch above ({e['clouds']} x {e['m']} of "
        f"{e['points_per_cloud']}) with every stage in the calling process (no workers), profiled with "
        "cProfile and summed per stage of Algorithm 1 (`benchmarks/cpu/step_profile.py`): core-seconds of "
        "one step. With the pool, TPS through the H1 reduction run per cloud in the worker processes; "
        "normalisation, edge lengths, PWCD and the backward stay in the calling process.",
        "",
        *table(["stage"] + [c for f in families for c in (f"{f} (s)", "share")], rows),
        BEFORE_PROFILE,
        "",
    ]


def fig7_section(run: dict[str, Any]) -> list[str]:
    cells: dict[int, dict[str, float]] = defaultdict(dict)
    for b in by_group(run["benchmarks"], "fig7"):
        cells[b["extra_info"]["n"]][b["extra_info"]["method"]] = median(b)
    if not cells:
        return []
    methods = ["random", "tps-ours", "tps-reference"]
    rows = [[str(n), *(fmt(cells[n].get(m, float("nan")) * 1e3) for m in methods),
             ratio(cells[n].get("tps-reference"), cells[n].get("tps-ours"))] for n in sorted(cells)]
    return [
        "## Figure 7: TPS vs random sampling time (M = 128)",
        "",
        "Paper (Figure 7 caption, no numbers in the text): \"Random sampling maintains nearly constant "
        "time, whereas TPS scales linearly with N.\" Medians in milliseconds; `tps-ours` = `fast.tps` "
        "(torch), `tps-reference` = the NumPy loop of `reference.tps` (both pick the same points).",
        "",
        *table(["N", "random (ms)", "TPS ours (ms)", "TPS reference (ms)", "reference / ours"], rows),
    ]


def fig8_section(run: dict[str, Any]) -> list[str]:
    cells: dict[int, dict[int, float]] = defaultdict(dict)
    for b in by_group(run["benchmarks"], "fig8"):
        cells[b["extra_info"]["n"]][b["extra_info"]["maxdim"]] = median(b)
    if not cells:
        return []
    rows = [[str(n), fmt(cells[n].get(1)), fmt(cells[n].get(2)), ratio(cells[n].get(2), cells[n].get(1))]
            for n in sorted(cells)]
    return [
        "## Figure 8: H1 vs H2 persistence time",
        "",
        "Paper (App. D.3, no numbers in the text): \"for inputs as small as N = 400, computing H2 incurs "
        "a latency spike orders of magnitude higher than H1\". Same engine for both (giotto-ph, one "
        "thread), same structured clouds; H2 time includes H0 and H1.",
        "",
        *table(["N", "up to H1 (s)", "up to H2 (s)", "H2 / H1"], rows),
    ]
