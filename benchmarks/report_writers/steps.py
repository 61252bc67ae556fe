"""The sections of ``benchmarks/RESULTS.md`` on the training step itself: the operations a step
launches (``step-ops``), the persistence pool's start (``pool-start``) and the host work of a
step (``host-work``), each beside the figures before and its target (decision 39)."""
from __future__ import annotations

import statistics
from typing import Any

from benchmarks.report_writers.tables import by_group, fmt, median, table


def _ops_cell(pair: tuple[int, int | None] | None) -> str:
    if pair is None:
        return "-"
    ops, syncs = pair
    return f"{ops:,} / {'-' if syncs is None else f'{syncs:,}'}"


def ops_section(run: dict[str, Any]) -> list[str]:
    from benchmarks.cpu.step_ops import BEFORE, PAPER, TARGETS

    records = by_group(run["benchmarks"], "step-ops")
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
        "Counted on the CPU by `train.engine.op_count` (every dispatched aten op that is not a view or an allocation, "
        "each at least one kernel launch on a GPU; host synchronisations: `.item()`/`bool()`, boolean masks, "
        "`nonzero`, `unique`, `repeat_interleave` without `output_size`, host reads and copies of step tensors), "
        "one step of the real step code (`benchmarks/cpu/step_ops.py`): the student's L_seg step with its update and "
        "log read, the same with L_kld + L_grad against the teacher, the teacher's forward pass. Before: the "
        "figures first measured with the GPU campaign's step (quoted), and this harness at commit 7965517. "
        "The model's own share falls with its rewrite (fewer, larger kernels; decision 39). "
        f"Measured {when}, commit `{commit}`" + ("" if paper else "; **smoke sizes, not the paper's**") + ".",
        "",
        *table(["step", "models", "clouds x points", "ops / syncs", "before (quoted)", "before (7965517)",
                 "target", "most dispatched ops"], rows),
    ]


def pool_section(run: dict[str, Any]) -> list[str]:
    from benchmarks.cpu.pool_start import BEFORE, TARGETS

    records = by_group(run["benchmarks"], "pool-start")
    if not records:
        return []
    rows = []
    states = list(TARGETS)
    for b in sorted(records, key=lambda b: (b["extra_info"]["workers"], states.index(b["extra_info"]["state"]))):
        e = b["extra_info"]
        ready = statistics.median(e["ready_s"])
        target = TARGETS[e["state"]]
        rows.append([str(e["workers"]), e["state"], ", ".join(fmt(x) for x in e["ready_s"]),
                     fmt(statistics.median(e["warm_s"])),
                     fmt(statistics.median(e["pool_s"])) if "pool_s" in e else "-",
                     fmt(statistics.median(e["workers_cpu_s"])) if "workers_cpu_s" in e else "-", fmt(median(b)),
                     f"<= {target:g}: {'met' if ready <= target else 'not met'}",
                     BEFORE.get((e["workers"], e["state"]), "-")])
    gaps = [r - p for b in records if "pool_s" in b["extra_info"]
            for r, p in zip(b["extra_info"]["ready_s"], b["extra_info"]["pool_s"])]
    own_start = statistics.median(gaps) if gaps else None
    return [
        "## Persistence pool start-up",
        "",
        "Seconds from a fresh process's first line until its `PersistencePool` is warmed and has returned "
        "the diagrams of one small cloud per worker (`benchmarks/cpu/pool_start.py`): cold = a new copy of "
        "`fast/` and `reference/` and an empty cache (a new machine), clone = a new copy on a machine where "
        "another copy has compiled the same kernels (their cache is shared by every copy, decision 41), "
        "warm = the clone's copy again. "
        "From the pool's creation = the same end, timed from the `PersistencePool(...)` call (without the "
        f"process's own start and imports: {fmt(own_start)} s here, median over all runs). "
        "Workers' CPU = CPU-seconds of all the pool's workers together, from their start to their exit "
        "(interpreter start, compiling or loading the kernels, the one task): on a new machine mostly "
        "compilation, which the workers share out (decision 41). "
        "Child wall = the whole child process (interpreter start and pool shutdown included). "
        f"Machine: {records[0]['extra_info']['cores']} cores, 1-minute load "
        f"{fmt(records[0]['extra_info'].get('load_average_1min'))} at the first measurement.",
        "",
        *table(["workers", "state", "ready (s), each run", "warm() returned (s, median)",
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


def host_work_section(run: dict[str, Any]) -> list[str]:
    records = by_group(run["benchmarks"], "host-work")
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
        "Core-seconds of each host part of a paper-size step (`benchmarks/cpu/host_work.py`; medians of process "
        "CPU time, one torch thread; decision 47). Loader parts run in the DataLoader workers, the pool's in "
        "the persistence workers, the rest in the training process. Outside ops = the step's wall time minus "
        "the time covered by its `aten::` ops under `torch.profiler` (an upper bound: the profiler adds a cost "
        "per op) at 4 x 3,000 points (the paper size's op count), the host's own work while a GPU computes. "
        f"TPS and diagrams of latent-family features (`benchmarks/cpu/clouds.py`; unstructured features cost "
        f"more, see the TPS row of the shell family). Plan hand-over: {parts.get('plan_bytes', 0) / 1e6:.0f} MB. "
        f"Measured {run.get('datetime', 'unknown')}, commit `{run.get('commit_info', {}).get('id', 'unknown')[:10]}`"
        + ("" if e.get("paper") else "; **smoke sizes, not the paper's**") + ".",
        "",
        *table(["part", "ms (core)", "per step"], rows),
        "",
        "Shortest step the host allows on a GPU node (ms): the training process's own work on one core, "
        "the loader's and the pool's work shared by the other cores of the GPU (`implied_step_s`); the GPU "
        "step itself is not included (`python -m benchmarks.gpu` measures it beside these figures).",
        "",
        *table(["step (4 scans)", "8 cores per GPU", "16 cores per GPU"], steps),
    ]


def topo_split_section(run: dict[str, Any]) -> list[str]:
    """Where L_topo's time goes in a demo full-objective step on this CPU (group ``topo-split``)."""
    from benchmarks.cpu.topo_split import split_rows

    records = by_group(run["benchmarks"], "topo-split")
    if not records:
        return []
    e = records[0]["extra_info"]
    split, size = e["split"], e["size"]
    critical, beside = split_rows(split)
    share = split["measured_ms"] / split["step_with_ms"]
    return [
        "## Where the topological term's time goes (CPU)",
        "",
        f"The demo presets, {size['clouds']} x {size['points']:,} points, M = {size['m']}, {e['workers']} "
        f"persistence workers, {e.get('torch_threads', 1)} torch thread(s); the full objective (L_seg + L_kld + "
        "L_grad + L_topo) against KD + saliency, medians of interleaved rounds (`benchmarks/cpu/topo_split.py`). "
        f"Full step {split['step_with_ms']:.0f} ms, KD + saliency {split['step_without_ms']:.0f} ms: the "
        f"topological term is {100 * share:.0f}% of the full step. What the training thread's parts do not "
        "explain is the persistence workers' core time taken from the training process where the cores are "
        f"fewer than the processes (the workers' total below). Measured {run.get('datetime', 'unknown')}, "
        f"commit `{run.get('commit_info', {}).get('id', 'unknown')[:10]}`"
        + ("" if e.get("paper") else "; **smoke sizes**") + ".",
        "",
        *table(["part (training thread)", "ms"], [[label, fmt(v)] for label, v in critical]),
        "",
        *table(["beside the critical path", "ms"], [[label, fmt(v)] for label, v in beside]),
    ]

