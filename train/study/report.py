"""Statistics, Markdown report and bar chart of ``python -m train.study``.

For each row: the mean test mIoU over its seeds with a two-sided 95% confidence interval from
Student's t distribution (mean +- t_{0.975, n-1} s / sqrt(n), s the sample standard deviation),
and the paired difference against the CE student and against the KD row: the per-seed differences
d_s = row_s - ref_s over the seeds both rows have, with the same interval on d. Pairing by seed
removes what the seed does to every row alike (data order, augmentation, initialisation).
Per-class IoU is averaged over seeds. Validation mIoU is reported beside test mIoU because the
choices (Table 7's weights) are made on validation.

The seed interval holds the test scenes fixed. Where the units kept each scan's counts
(``ScanIoU``), the report also gives a paired scene-bootstrap interval of the same difference
(:func:`scene_bootstrap_difference`): the test scans are drawn again with replacement (the same
draw for both rows and every seed), each unit's mIoU recomputed from the drawn scans' summed
counts, and the seed-mean difference's 2.5th and 97.5th percentiles taken over the draws. It says
how much of a difference a different set of test scenes could undo; with few scans (10 on the
synthetic study's set) a percentile bootstrap is known to be too narrow, so it is a lower bound
on that uncertainty.

mIoU weighs every class alike, and on a small split a class with a fraction of a percent of the
points lies in a few scans, so its IoU, and its 1/K share of mIoU, moves with single objects. The
report therefore also gives each row's mIoU over the **frequent** classes (at least
:data:`FREQUENT` of the split's labelled points) and over the **rare** ones (present, under it),
with the same paired differences (:func:`class_group_miou`).
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats

from train.runtime.whole_files import save_figure, write_text

CONFIDENCE = 0.95
SCENE_DRAWS = 10_000  # redraws of the test scans in the scene bootstrap
BUDGET_PLOT = "budget.png"  # the budget searches' validation curves, in the study folder
FREQUENT = 0.01  # a class with at least this share of a split's labelled points is frequent there
GROUPS = ("frequent", "rare")


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(mean, half-width of the Student-t confidence interval); half-width NaN for one value."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan
    half = stats.t.ppf(0.5 + confidence / 2.0, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half)


def paired_difference(row: dict[int, float], ref: dict[int, float]) -> tuple[float, float, int]:
    """Mean and CI half-width of row - ref over their common seeds, and how many seeds that is."""
    seeds = sorted(set(row) & set(ref))
    mean, half = mean_ci([row[s] - ref[s] for s in seeds])
    return mean, half, len(seeds)


def bootstrap_miou(scans: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """mIoU (``IoUAccumulator.miou``'s rule: classes present in the labels) of each resample of
    the scans: ``scans`` (S, 3, K) per-scan [intersection, union, target count], ``draws`` (B, S)
    how many times each scan is drawn; returns (B,)."""
    inter, union, target = np.einsum("bs,sck->cbk", draws, scans)
    present = target > 0  # a present class has union >= its target count > 0
    iou = np.where(present, inter / np.where(present, union, 1.0), 0.0)
    count = present.sum(axis=1)
    return np.where(count > 0, iou.sum(axis=1) / np.maximum(count, 1), np.nan)


def scene_bootstrap_difference(row: dict[int, np.ndarray], ref: dict[int, np.ndarray], draws: int = SCENE_DRAWS,
                               confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float, int]:
    """Percentile interval (low, high) of the mean over common seeds of mIoU(row) - mIoU(ref) when the
    split's scans are drawn again with replacement, the same draw for both rows and every seed
    (``row``/``ref``: seed -> (S, 3, K) per-scan counts of one unit); and the number of seeds."""
    seeds = sorted(set(row) & set(ref))
    if not seeds:
        return math.nan, math.nan, 0
    shapes = {a.shape for s in seeds for a in (row[s], ref[s])}
    if len(shapes) != 1:
        raise ValueError(f"scene bootstrap: the units' per-scan counts differ in shape {sorted(shapes)}; "
                         "they must be evaluated on the same scans")
    scans = row[seeds[0]].shape[0]
    counts = np.random.default_rng(seed).multinomial(scans, np.full(scans, 1.0 / scans), size=draws).astype(np.float64)
    diff = np.mean([bootstrap_miou(row[s], counts) - bootstrap_miou(ref[s], counts) for s in seeds], axis=0)
    tail = 50.0 * (1.0 - confidence)
    low, high = np.nanpercentile(diff, [tail, 100.0 - tail])
    return float(low), float(high), len(seeds)


def _scans_by_seed(units: Sequence[dict[str, Any]], split: str) -> dict[int, np.ndarray] | None:
    """seed -> (S, 3, K) per-scan counts of ``split``, or None if a unit did not keep them."""
    if not all("scans" in u[split] for u in units):
        return None
    names = ("intersection", "union", "target_count")
    return {int(u["seed"]): np.stack([np.asarray(u[split]["scans"][n], dtype=np.float64) for n in names], axis=1)
            for u in units}


def _miou_by_seed(units: Sequence[dict[str, Any]], split: str) -> dict[int, float]:
    return {int(u["seed"]): float(u[split]["miou"]) for u in units}


def class_groups(frequency: Sequence[float]) -> dict[str, np.ndarray]:
    """Each group's class mask (module docstring) from a split's class frequencies: ``frequent``, at
    least :data:`FREQUENT` of the split's labelled points; ``rare``, the other classes present."""
    freq = np.nan_to_num(np.asarray(frequency, dtype=np.float64))
    return {"frequent": freq >= FREQUENT, "rare": (freq > 0) & (freq < FREQUENT)}


def class_group_miou(split: dict[str, Any], group: str) -> float:
    """mIoU of one unit's ``split`` result over the classes of ``group`` (:func:`class_groups`);
    NaN if the group has no class."""
    keep = class_groups(split["class_frequency"])[group]
    return float(np.asarray(split["iou"], dtype=np.float64)[keep].mean()) if keep.any() else math.nan


def _group_by_seed(units: Sequence[dict[str, Any]], split: str, group: str) -> dict[int, float]:
    return {int(u["seed"]): class_group_miou(u[split], group) for u in units}


def _nan_mean_columns(rows: Sequence[Sequence[float]]) -> list[float]:
    """Column means ignoring NaN (a class absent from a split has NaN IoU); NaN where all are."""
    x = np.array(rows, dtype=np.float64)
    count = (~np.isnan(x)).sum(axis=0)
    total = np.where(np.isnan(x), 0.0, x).sum(axis=0)
    return [float(t / c) if c else math.nan for t, c in zip(total, count)]


def summarize(study: dict[str, Any]) -> dict[str, Any]:
    """Per-row statistics of a study (see the module docstring), keyed by row."""
    split = study["eval_split"]
    rows = study["rows"]
    refs = {name: _miou_by_seed(rows[name], split) for name in ("CE", "KD") if name in rows}
    ref_scans = {name: _scans_by_seed(rows[name], split) for name in refs}
    ref_groups = {(name, g): _group_by_seed(rows[name], split, g) for name in refs for g in GROUPS}
    out: dict[str, Any] = {}
    for name, units in rows.items():
        test = _miou_by_seed(units, split)
        val = _miou_by_seed(units, "val")
        entry: dict[str, Any] = {"n": len(units), "mean": mean_ci(list(test.values())),
                                 "val_mean": mean_ci(list(val.values())),
                                 "per_class": _nan_mean_columns([u[split]["iou"] for u in units]),
                                 "wall_s": float(sum(u["wall_s"] for u in units)),
                                 # units finished before the field existed are counted as fresh
                                 "resumed": sum(1 for u in units if u.get("steps_logged_before", 0) > 0),
                                 "terms": term_diagnostics(units)}
        scans = _scans_by_seed(units, split)
        for group in GROUPS:
            by_seed = _group_by_seed(units, split, group)
            entry[group] = {"mean": mean_ci(list(by_seed.values())),
                            **{"vs_" + r: paired_difference(by_seed, ref_groups[(r, group)])
                               for r in refs if r != name}}
        for ref_name, ref in refs.items():
            if ref_name != name:
                entry["vs_" + ref_name] = paired_difference(test, ref)
                if scans is not None and ref_scans[ref_name] is not None:
                    entry["scene_vs_" + ref_name] = scene_bootstrap_difference(scans, ref_scans[ref_name])
        out[name] = entry
    return out


SKIP_COLUMNS = ("step", "epoch", "lr")


def log_quarters(path: Path) -> dict[str, tuple[float, float]]:
    """Mean of every logged training column (loss terms, gradient norms, H1 budget misses) of one
    unit's ``train_log.csv`` over the first and the last quarter of its steps (NaN where a column
    was logged only early)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    quarter = max(1, len(rows) // 4)
    out: dict[str, tuple[float, float]] = {}
    for name in (rows[0] if rows else {}):
        if name in SKIP_COLUMNS:
            continue
        early, late = ([float(r[name]) for r in part if r.get(name) not in (None, "")]
                       for part in (rows[:quarter], rows[-quarter:]))
        if early:
            out[name] = (float(np.mean(early)), float(np.mean(late)) if late else math.nan)
    return out


def logged_steps(path: Path) -> int:
    """The last step of a unit's ``train_log.csv`` (0 when it has none): read before a unit trains,
    what an earlier, killed invocation had logged."""
    if not path.is_file():
        return 0
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return int(rows[-1]["step"]) if rows else 0


def term_diagnostics(units: Sequence[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """:func:`log_quarters` averaged over the units that logged each column: a unit's ``terms`` (its
    quarters, kept in its result) or, for a result without them, its ``train_log``."""
    early: dict[str, list[float]] = {}
    late: dict[str, list[float]] = {}
    for unit in units:
        terms = unit.get("terms")
        if terms is None:
            path = unit.get("train_log")
            terms = log_quarters(Path(path)) if path and Path(path).is_file() else {}
        for name, (first, last) in terms.items():
            early.setdefault(name, []).append(first)
            if not math.isnan(last):
                late.setdefault(name, []).append(last)
    return {k: (float(np.mean(early[k])), float(np.mean(late.get(k, [math.nan])))) for k in early}


def _pct(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{100.0 * v:.1f}"


def _mean_cell(mean: float, half: float) -> str:
    """A mean and its CI half-width as percentages; the mean alone where there is no interval."""
    return f"{_pct(mean)} ± {_pct(half)}" if not math.isnan(half) else _pct(mean)


def _ci(mean: float, half: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{100.0 * mean:+.1f} ± {100.0 * half:.1f}" if not math.isnan(half) else f"{100.0 * mean:+.1f}"


def _delta_cells(entry: dict[str, Any]) -> list[str]:
    """The 'Δ vs CE' and 'Δ vs KD' cells of a summary entry (paired differences); '-' for a row
    without one (the reference itself, or a study without that row)."""
    return [_ci(*entry["vs_" + ref][:2]) if "vs_" + ref in entry else "-" for ref in ("CE", "KD")]


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} logical cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def ordering_statement(summary: dict[str, Any]) -> str:
    """Whether the paper's Table 5 ordering full > KD+topo, KD+grad > KD > CE holds in the means,
    and which paired differences exclude zero."""
    need = ("CE", "KD", "KD+topo", "KD+grad", "full")
    if not all(k in summary for k in need):
        return "Not a Table 5 study (or rows missing): no ordering check."
    m = {k: summary[k]["mean"][0] for k in need}
    checks = [("full > KD+topo", m["full"] > m["KD+topo"]), ("full > KD+grad", m["full"] > m["KD+grad"]),
              ("KD+topo > KD", m["KD+topo"] > m["KD"]), ("KD+grad > KD", m["KD+grad"] > m["KD"]),
              ("KD > CE", m["KD"] > m["CE"])]
    held = all(ok for _, ok in checks)
    lines = [f"The paper's ordering (full > KD+topo, KD+grad > KD > CE) **{'holds' if held else 'does not hold'}** "
             "in the mean test mIoU here: " + ", ".join(f"{name}: {'yes' if ok else 'no'}" for name, ok in checks) + "."]
    sig = []
    for name in ("KD+topo", "KD+grad", "full"):
        d, h, _ = summary[name]["vs_KD"]
        if not math.isnan(h) and abs(d) > h:
            sig.append(f"{name} vs KD ({_ci(d, h)} points)")
    lines.append("Paired differences against KD whose 95% interval excludes zero: "
                 + (", ".join(sig) if sig else "none") + ".")
    return " ".join(lines)


def scene_lines(summary: dict[str, Any], split: str) -> list[str]:
    """The paired differences' scene-bootstrap intervals (module docstring), where the units kept
    their per-scan counts."""
    named = [n for n in summary if any(k in summary[n] for k in ("scene_vs_CE", "scene_vs_KD"))]
    if not named:
        return []

    def cell(entry: dict[str, Any], ref: str) -> str:
        if "scene_vs_" + ref not in entry:
            return "-"
        low, high, _ = entry["scene_vs_" + ref]
        return f"{_ci(*entry['vs_' + ref][:2])} [{100 * low:+.1f}, {100 * high:+.1f}]"

    lines = [f"Paired differences with the {split} scenes drawn again (scene bootstrap, {SCENE_DRAWS:,} draws, the same "
             "draw for both rows and every seed): the seed interval, then in brackets the 95% percentile "
             f"interval of the seed-mean difference over the draws, which says how much of it another set of "
             f"{split} scenes could undo (too narrow with few scans: a lower bound).", "",
             "| row | Δ vs CE [scene interval] | Δ vs KD [scene interval] |", "|---|---|---|"]
    lines += [f"| {n} | {cell(summary[n], 'CE')} | {cell(summary[n], 'KD')} |" for n in named]
    return lines + [""]


def class_group_lines(study: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """The rows' mIoU over the frequent and the rare classes of the reported split (module docstring)."""
    split = study["eval_split"]
    freq = np.nan_to_num(np.asarray(study["teacher"][split]["class_frequency"], dtype=np.float64))
    groups = class_groups(freq)
    frequent, rare = groups["frequent"], groups["rare"]
    if not rare.any():
        return []

    def cells(entry: dict[str, Any]) -> str:
        return " | ".join([_mean_cell(*entry["mean"]), *_delta_cells(entry)])

    teacher = {g: class_group_miou(study["teacher"][split], g) for g in GROUPS}
    lines = [f"## Frequent and rare classes ({split})", "",
             f"mIoU over the {frequent.sum()} classes with at least {100 * FREQUENT:g}% of the {split} points "
             f"({100 * freq[frequent].sum():.1f}% of them; teacher {_pct(teacher['frequent'])}) and over the "
             f"{rare.sum()} rarer ones (teacher {_pct(teacher['rare'])}); a rare class lies in a few scans, so its "
             "IoU moves with single objects. Paired differences as above.", "",
             "| row | frequent mIoU | Δ vs CE | Δ vs KD | rare mIoU | Δ vs CE | Δ vs KD |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {cells(e['frequent'])} | {cells(e['rare'])} |" for n, e in summary.items()]
    return lines + [""]


def budget_lines(budget: dict[str, Any]) -> list[str]:
    """The budget searches of a ``--converge`` study and the capacity check drawn from them."""
    from train.study.budget import capacity_statement

    lines = [f"## Budgets (doubling until validation mIoU gains < {budget['tolerance']:g} points)", "",
             "| model | epochs tried: validation mIoU | converged | used |", "|---|---|---|---|"]
    searched = [name for name in ("teacher", "student") if name in budget]  # a camera study searches no teacher
    for name in searched:
        search = budget[name]
        tried = ", ".join(f"{e}: {_pct(m)}" for e, m in search["tried"])
        label = "teacher" if name == "teacher" else "CE student (every row)"
        lines.append(f"| {label} | {tried} | {'yes' if search['converged'] else '**no**'} | {search['chosen']} epochs |")
    if len(searched) == 1:
        return lines + [""]
    miou = {name: dict((e, m) for e, m in budget[name]["tried"]) for name in searched}
    lines += ["", capacity_statement(miou["teacher"][budget["teacher"]["chosen"]],
                                     miou["student"][budget["student"]["chosen"]],
                                     budget["teacher"]["converged"] and budget["student"]["converged"]), ""]
    return lines


def teacher_lines(teacher: dict[str, Any], split: str) -> list[str]:
    """The report's paragraph on the teacher: a network's scores, or the camera pipeline's."""
    if teacher.get("kind") == "camera":
        from train.study.camera_unit import camera_lines

        return camera_lines(teacher, split)
    return [f"Teacher: {split} mIoU {_pct(teacher[split]['miou'])}, val mIoU {_pct(teacher['val']['miou'])}, "
            f"{teacher[split]['parameters']:,} parameters.", ""]


def table_title(table: int | str) -> str:
    """What a study's ``--table`` reproduces: a table of the paper, or the label-scarce question (decision 57)."""
    if isinstance(table, int):
        return f"paper Table {table}"
    return "distillation from cameras" if table == "cameras" else "distillation with unlabelled scans"


def render(study: dict[str, Any], summary: dict[str, Any]) -> str:
    split = study["eval_split"]
    names = list(summary)
    regime = f", {study['regime']} regime" if study.get("regime") else ""
    lines = [f"# Study: {table_title(study['table'])} on {study['dataset']}{regime} ({len(study['seeds'])} seeds)", "",
             f"Command: `{study['command']}`", "",
             f"Machine: {_machine()}.", "",
             f"Wall time of the units: {sum(e['wall_s'] for e in summary.values()) / 60:.1f} min "
             f"(teacher {study['teacher']['wall_s'] / 60:.1f} min); seeds {study['seeds']}. "
             f"mIoU is reported on the **{split}** split; validation beside it (choices are made on validation).", "",
             *teacher_lines(study["teacher"], split),
             *(budget_lines(study["budget"]) + [f"![budget searches]({'../' if study.get('regime') else ''}"
                                                 f"{BUDGET_PLOT})", ""] if "budget" in study else []),
             *([f"**Not finished, left out of this report** (`--report-only`): {', '.join(study['unfinished'])}. "
                "Paired differences use the seeds both rows have.", ""] if study.get("unfinished") else []),
             f"| row | seeds | {split} mIoU (mean ± 95% CI) | val mIoU | Δ vs CE (paired) | Δ vs KD (paired) | wall min |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        e = summary[name]
        ci = _mean_cell(*e["mean"])
        d_ce, d_kd = _delta_cells(e)
        mark = "*" if e["resumed"] else ""
        lines.append(f"| {name} | {e['n']} | {ci} | {_pct(e['val_mean'][0])} | {d_ce} | {d_kd} | "
                     f"{e['wall_s'] / 60:.1f}{mark} |")
    if any(e["resumed"] for e in summary.values()):
        lines += ["", "\\* a unit of the row was killed and resumed from its checkpoint: its wall time counts "
                  "only the invocation that finished it."]
    lines += ["", ordering_statement(summary), "", *scene_lines(summary, split), *class_group_lines(study, summary)]
    if study["table"] == 7:
        grid = [n for n in names if n.startswith("full ")]
        if grid:
            best = max(grid, key=lambda n: summary[n]["val_mean"][0])
            lines += [f"Chosen on validation: **{best}** (val {_pct(summary[best]['val_mean'][0])}); its {split} "
                      f"mIoU {_pct(summary[best]['mean'][0])} ± {_pct(summary[best]['mean'][1])}.", ""]
    present = [i for i, f in enumerate(study["teacher"][split]["class_frequency"]) if f and not math.isnan(f)]
    lines += [f"## Per-class {split} IoU % (mean over seeds)", "",
              "| class | points % | teacher | " + " | ".join(names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    freq = study["teacher"][split]["class_frequency"]
    for c in present:
        cells = " | ".join(_pct(summary[n]["per_class"][c]) for n in names)
        lines.append(f"| {study['class_names'][c]} | {100 * freq[c]:.2f} | "
                     f"{_pct(study['teacher'][split]['iou'][c])} | {cells} |")
    lines += ["", "## Training terms (mean over the first / last quarter of the steps, averaged over seeds)", "",
              "Loss terms are unweighted; `gradnorm_<term>` is the norm of the gradient the *weighted* term "
              "sends to the student's parameters (logged with `--log-term-grads`); `topo_h1_over_budget_teacher` "
              "and `_student` count the clouds whose H1 fell back to H0 in a step; `topo_grad_entropy` is the "
              "normalised entropy of the gradient L_topo sends to the student's diagram points (paper Table 11's "
              "diagnostic, decision 33).", "",
              "| row | column | first quarter | last quarter |", "|---|---|---|---|"]
    for name in names:
        for col, (first, last) in sorted(summary[name]["terms"].items()):
            lines.append(f"| {name} | {col} | {first:.4g} | {last:.4g} |")
    return "\n".join(lines) + "\n"


def plot(study: dict[str, Any], summary: dict[str, Any], path: Path) -> None:
    """Bar chart of the mean mIoU per row with 95% CI error bars (the teacher as a line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = study["eval_split"]
    names = list(summary)
    means = [100 * summary[n]["mean"][0] for n in names]
    halves = [0.0 if math.isnan(summary[n]["mean"][1]) else 100 * summary[n]["mean"][1] for n in names]
    width = max(5.0, 1.1 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(width, 4.0), dpi=120)
    ax.bar(range(len(names)), means, yerr=halves, capsize=5, color="#4C72B0", edgecolor="black")
    for i, units in enumerate(study["rows"].values()):
        ax.scatter([i] * len(units), [100 * u[split]["miou"] for u in units], color="black", s=12, zorder=3)
    teacher = 100 * study["teacher"][split]["miou"]
    ax.axhline(teacher, color="#C44E52", linestyle="--", label=f"teacher {teacher:.1f}")
    slanted = len(names) > 5 or max(len(n) for n in names) > 14  # long row names would overlap level
    ax.set_xticks(range(len(names)), names, rotation=20 if slanted else 0, ha="right" if slanted else "center")
    ax.set_ylabel(f"{split} mIoU % (mean, 95% CI; dots: seeds)")
    title = f"{table_title(study['table'])} on {study['dataset']}, {len(study['seeds'])} seeds"
    ax.set_title(textwrap.fill(title, int(11 * (width - 1))))  # ~11 characters an inch: a one-row figure wraps
    low = min(m - h for m, h in zip(means, halves))
    ax.set_ylim(max(0.0, low - 5.0), max(teacher, max(m + h for m, h in zip(means, halves))) + 3.0)
    ax.legend(loc="best")  # matplotlib places it where it covers the fewest bars and lines
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def budget_curves(out: Path) -> dict[str, dict[int, list[tuple[int, float]]]]:
    """The validation curves of every budget-search unit under a ``--converge`` study folder (or
    its ``--keep-units`` copy, which has the same layout): ``{search: {epochs: [(step, mIoU)]}}``,
    the searches named ``teacher`` and ``[<regime> ]CE student``."""
    curves: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for log in sorted(out.glob("**/budget/*/epochs-*/val_log.csv")):
        unit = log.parent
        model, scope = unit.parent.name, unit.parent.parent.parent.relative_to(out).as_posix()
        name = "teacher" if model == "teacher" else ("" if scope == "." else scope + " ") + "CE student"
        with log.open(newline="") as f:
            points = [(int(r["step"]), float(r["val_miou"])) for r in csv.DictReader(f)]
        if points:
            curves.setdefault(name, {})[int(unit.name.removeprefix("epochs-"))] = points
    return {name: dict(sorted(c.items())) for name, c in sorted(curves.items(), key=lambda kv: kv[0] != "teacher")}


def plot_budgets(curves: dict[str, dict[int, list[tuple[int, float]]]], path: Path) -> None:
    """One panel per budget search: validation mIoU against the training step, one line per budget
    (each budget is its own run, its OneCycle schedule spanning the whole budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 3.8), dpi=120, squeeze=False)
    for ax, (name, budgets) in zip(axes[0], curves.items()):
        colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(budgets)))
        for colour, (epochs, points) in zip(colours, budgets.items()):
            steps, miou = zip(*points)
            ax.plot(steps, [100 * m for m in miou], color=colour, marker=".", lw=1.2,
                    label=f"{epochs} epochs: {100 * miou[-1]:.1f}")
        ax.set_title(f"{name}: budget search")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training step (log scale)")
        ax.set_ylabel("validation mIoU %")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8, title="budget: final")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_study_report(out: Path, study: dict[str, Any]) -> dict[str, Any]:
    """Write ``STUDY.md``, ``study.png`` and ``study.json`` into ``out``; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(study)
    write_text(out / "study.json", json.dumps({"study": study, "summary": summary}, indent=1, allow_nan=True))
    plot(study, summary, out / "study.png")
    text = render(study, summary) + "\n![study](study.png)\n"
    write_text(out / "STUDY.md", text)
    return summary
