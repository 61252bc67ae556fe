"""The pictures of a run (``python -m train.run``), written next to ``results.md`` unless ``--no-plots``.

Up to four PNGs in ``<out>/``, each drawn from what the run already has (its models, one validation
scan, its logs and its results) in seconds, with matplotlib's headless Agg backend; every run writes
the last three, ``diagrams.png`` needs the teacher and a student among the run's models (``--stage
all``):

* ``diagrams.png``: persistence diagrams (H0 and H1) of the teacher and the students on the first
  validation scan, one column per student (the CE student is "before distillation", the distilled
  student "after"): the embeddings are normalised and subsampled by TPS on the teacher exactly as
  ``L_topo`` does (decisions 12-14), then ``fast.persistence`` computes the diagrams.
* ``bev.png``: bird's-eye view (x, y in metres, the scan's whole extent) of the same scan's voxels
  coloured by the ground truth and by each model's prediction, the markers sized for the number of
  points, the legend listing only the classes drawn.
* ``curves.png``: each model's validation mIoU against the step (first panel: the passes of
  ``--eval-every-epochs`` during training, ``val_log.csv``, decision 35, and as a star at the last
  step the final evaluation of the results table); with ``--log-term-grads``, each weighted loss
  term's share of the gradient norm, one panel per distilled model; then every logged training
  column (loss terms, diagnostics) that ever left 0 against the step, one line per model. The
  counters that stayed 0 (skipped steps, H1 over its time budget, ...) are one line of text.
* ``per_class_iou.png``: the validation IoU of every class, one bar per model.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from train.evaluation.palette import pyplot, class_colours
from train.runtime.logging_utils import log_path
from train.runtime.whole_files import save_figure

PLOTS: tuple[str, ...] = ("diagrams.png", "bev.png", "curves.png", "per_class_iou.png")
SKIP_COLUMNS = ("step", "epoch", "lr")


@torch.no_grad()
def _scan_outputs(models: Mapping[str, torch.nn.Module], batch: dict[str, Any]) -> dict[str, Any]:
    """Each model's predicted class and embedding on one collated scan (eval mode, restored after)."""
    from train.engine.steps import model_inputs

    out = {}
    for label, model in models.items():
        was_training = model.training
        model.eval()
        try:
            result = model(model_inputs(batch))
        finally:
            model.train(was_training)
        out[label] = (result.logits.float().argmax(1).cpu().numpy(), result.embedding.float())
    return out


def _diagrams(teacher_emb: torch.Tensor, student_embs: Mapping[str, torch.Tensor], m: int,
              normalize: str) -> dict[str, Any]:
    """H0/H1 pairs of the teacher and of each student on the teacher's TPS points (as L_topo selects them)."""
    from fast.normalize import normalize as normalize_clouds
    from fast.persistence import compute_diagrams
    from fast.tps import tps

    ends = [teacher_emb.shape[0]]
    t64 = normalize_clouds(teacher_emb.double(), ends, normalize)
    idx = tps(t64, ends, m, 0)[0]
    feats = {"teacher": t64}
    feats.update({label: normalize_clouds(e.double(), ends, normalize) for label, e in student_embs.items()})
    labels = list(feats)
    result = compute_diagrams([feats[k][idx].cpu().numpy() for k in labels])
    return dict(zip(labels, result))


DIAGRAMS_TITLE = "Persistence of the normalised embeddings on the TPS points of a validation scan"


def plot_diagrams(path: Path, teacher: Any, students: Mapping[str, Any], reference: str = "teacher",
                  title: str = DIAGRAMS_TITLE) -> None:
    """Row 1: H0 (every birth is 0, so its deaths are drawn sorted); row 2: the H1 diagram, zoomed
    to the points with the diagonal drawn. One column per student, the teacher (named
    ``reference``) in each."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(students), figsize=(4.4 * len(students), 8.4), squeeze=False)
    for col, (label, student) in enumerate(students.items()):
        ax = axes[0, col]
        for pairs, style, name in ((teacher.h0_pairs, dict(marker="o", mfc="none", color="tab:blue"), reference),
                                   (student.h0_pairs, dict(marker="x", color="tab:red"), label)):
            deaths = np.sort(pairs[:, 1])
            ax.plot(np.arange(len(deaths)), deaths, ls="-", lw=0.6, ms=4, label=f"{name} ({len(deaths)})", **style)
        ax.set_xlabel("H0 pair (sorted by death)")
        ax.set_ylabel("death (birth = 0)")
        ax.set_title(f"H0: {reference} vs {label}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ax = axes[1, col]
        t, s = teacher.h1_pairs, student.h1_pairs
        values = np.concatenate([t.ravel(), s.ravel(), [0.0, 1e-6]] if not (len(t) or len(s)) else [t.ravel(), s.ravel()])
        lo, hi = float(values.min()), float(values.max())
        pad = 0.05 * (hi - lo) + 1e-9
        lo, hi = lo - pad, hi + pad
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8)
        ax.scatter(t[:, 0], t[:, 1], s=18, marker="o", facecolors="none", edgecolors="tab:blue",
                   label=f"{reference} ({len(t)})")
        ax.scatter(s[:, 0], s[:, 1], s=14, marker="x", color="tab:red", label=f"{label} ({len(s)})")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xlabel("birth")
        ax.set_ylabel("death")
        ax.set_title(f"H1: {reference} vs {label}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)


# Figure width of bev.png (inches) and the tallest it may grow before its panels go side by side.
BEV_WIDTH = 14.0
BEV_MAX_HEIGHT = 17.0
# Share of a bird's-eye panel's area the scan's markers would cover if none overlapped.
BEV_COVER = 0.25


def bev_columns(panels: int, aspect: float) -> int:
    """Columns of the bird's-eye grid: the fewest (largest panels) whose rows of ``aspect`` (width /
    height of the scene) fit in :data:`BEV_MAX_HEIGHT`, at most 3."""
    for ncol in (1, 2):
        if -(-panels // ncol) * BEV_WIDTH / ncol / aspect <= BEV_MAX_HEIGHT:
            return ncol
    return min(3, panels)


def bev_marker_area(points: int, panel_area_pt2: float) -> float:
    """Marker area (points^2) of each of ``points`` markers so that they would cover :data:`BEV_COVER`
    of a panel of ``panel_area_pt2``, within 0.3 (still visible) and 30 (a sparse scan)."""
    return float(np.clip(BEV_COVER * panel_area_pt2 / max(points, 1), 0.3, 30.0))


def bev_legend(labels: Mapping[str, np.ndarray], truth: str, class_names: Sequence[str]) -> list[tuple[int, str]]:
    """(class, legend text) of every class drawn in some panel, most ground-truth points first; a class
    only a model predicted says so, and the ignore label (-1, black) is listed when drawn."""
    counts = {int(c): int(n) for c, n in zip(*np.unique(labels[truth], return_counts=True))}
    drawn = {int(c) for lab in labels.values() for c in np.unique(lab)}
    entries = [(c, class_names[c]) for c in sorted(drawn & set(counts) - {-1}, key=lambda c: (-counts[c], c))]
    entries += [(c, f"{class_names[c]} (predicted only)") for c in sorted(drawn - set(counts) - {-1})]
    if -1 in drawn:
        entries.append((-1, "no label"))
    return entries


def plot_bev(path: Path, xy: np.ndarray, labels: Mapping[str, np.ndarray], class_names: Sequence[str]) -> None:
    """One panel per entry of ``labels`` (the first is the ground truth), all at the scan's full
    extent in metres, markers sized for the number of points, a legend of the classes drawn."""
    plt = pyplot()
    colours = class_colours(len(class_names))
    span = np.ptp(xy, axis=0) + 1e-6
    aspect = float(np.clip(span[0] / span[1], 0.5, 8.0))
    ncol = bev_columns(len(labels), aspect)
    nrow = -(-len(labels) // ncol)
    panel_w = BEV_WIDTH / ncol
    panel_h = panel_w / aspect
    fig, axes = plt.subplots(nrow, ncol, figsize=(BEV_WIDTH, nrow * (panel_h + 0.35) + 1.3), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    size = bev_marker_area(len(xy), panel_w * panel_h * 72.0 ** 2)
    for ax, (title, lab) in zip(axes.ravel(), labels.items()):
        ax.scatter(xy[:, 0], xy[:, 1], c=colours[np.where(lab < 0, -1, lab)], s=size, linewidths=0)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.label_outer()
    for ax in axes.ravel()[len(labels):]:
        ax.axis("off")
    entries = bev_legend(labels, next(iter(labels)), class_names)
    handles = [plt.Line2D([], [], marker="s", ls="", color=colours[c], label=text) for c, text in entries]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8,
               title="classes drawn, most ground-truth points first", title_fontsize=8)
    fig.suptitle(f"Bird's-eye view of a validation scan: {span[0]:.0f} m x {span[1]:.0f} m (x, y in metres), "
                 f"{len(xy):,} voxels coloured by class", fontsize=10)
    save_figure(fig, path, dpi=90)
    plt.close(fig)


def _read_log(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols: dict[str, np.ndarray] = {}
    for name in (rows[0] if rows else {}):
        cols[name] = np.array([float(r[name]) if r.get(name) not in (None, "") else math.nan for r in rows])
    return cols


def _read_logs(stage_dirs: Mapping[str, Path], table: str) -> dict[str, dict[str, np.ndarray]]:
    paths = {label: log_path(d, table) for label, d in stage_dirs.items()}
    return {label: _read_log(p) for label, p in paths.items() if p.is_file()}


def _last_step(*logs: Mapping[str, np.ndarray]) -> float | None:
    steps = [float(np.max(cols["step"])) for cols in logs if len(cols.get("step", ()))]
    return max(steps) if steps else None


# The counters of a training log: column -> (what it counts, which kind). One that stays 0 in every
# model's log is not drawn; the figure says so in one line, grouped by what they count.
COUNTERS: dict[str, tuple[str, str]] = {
    "skipped_nonfinite": ("skipped steps", "NaN/Inf"),
    "skipped_overflow": ("skipped steps", "overflow"),
    "skipped_scans": ("skipped scans", "unreadable"),
    "topo_h1_over_budget_teacher": ("H1 over budget", "teacher"),
    "topo_h1_over_budget_student": ("H1 over budget", "student"),
}
GRADNORM = "gradnorm_"


def curve_columns(data: Mapping[str, Mapping[str, np.ndarray]]) -> tuple[list[str], list[str], list[str]]:
    """The training-log columns (all models together) that get a panel, those that stayed 0 at every
    logged step, and those with no finite value at all; the last two are named in text instead."""
    columns = sorted({c for cols in data.values() for c in cols if c not in SKIP_COLUMNS})
    values = {c: np.concatenate([cols[c] for cols in data.values() if c in cols]) for c in columns}
    empty = [c for c in columns if not np.isfinite(values[c]).any()]
    zero = [c for c in columns if c not in empty and not np.nan_to_num(values[c]).any()]
    return [c for c in columns if c not in empty and c not in zero], zero, empty


def quiet_columns_text(zero: Sequence[str], empty: Sequence[str] = ()) -> str:
    """One line for the columns :func:`curve_columns` leaves undrawn, e.g. "Whole run: no skipped steps
    (NaN/Inf, overflow), no H1 over budget (teacher, student)"; "" when there are none."""
    groups: dict[str, list[str]] = {}
    for column in COUNTERS:
        if column in zero:
            what, kind = COUNTERS[column]
            groups.setdefault(what, []).append(kind)
    parts = [f"no {what} ({', '.join(kinds)})" for what, kinds in groups.items()]
    parts += [f"{c} = 0" for c in zero if c not in COUNTERS]
    parts += [f"{c}: no finite value" for c in empty]
    return "Whole run: " + ", ".join(parts) if parts else ""


def gradient_shares(cols: Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each weighted term's share of the gradient, ``||g_t|| / sum_u ||g_u||`` over the terms of the
    ``gradnorm_<term>`` columns (``--log-term-grads``), at the steps where every one was logged:
    term -> (steps, shares). Empty when fewer than two terms were logged."""
    terms = [c[len(GRADNORM):] for c in cols if c.startswith(GRADNORM)]
    if len(terms) < 2:
        return {}
    norms = np.stack([cols[GRADNORM + t] for t in terms])
    rows = np.isfinite(norms).all(axis=0) & (norms.sum(axis=0) > 0)
    shares = norms[:, rows] / norms[:, rows].sum(axis=0)
    return {t: (cols["step"][rows], shares[i]) for i, t in enumerate(terms)}


def _step_axis(ax: Any, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)


def plot_curves(path: Path, stage_dirs: Mapping[str, Path], results: Mapping[str, Mapping[str, Any]]) -> None:
    """``stage_dirs``: the folder of each model's logs, keyed like ``results`` (the table label).

    Panels: validation mIoU; each term's share of the gradient per model that logged
    ``gradnorm_<term>`` columns; every other training-log column that ever left 0, one line per
    model (NaN steps left out). The columns that stayed 0 are one line of text under the legend."""
    plt = pyplot()
    data, val = _read_logs(stage_dirs, "train"), _read_logs(stage_dirs, "val")
    columns, zero, empty = curve_columns(data)
    shares = {label: s for label, cols in data.items() if (s := gradient_shares(cols))}
    panels = 1 + len(shares) + len(columns)
    ncol = min(4, panels)
    nrow = -(-panels // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.8 * nrow + 0.8), squeeze=False)
    flat = list(axes.ravel())
    colour = {label: f"C{i}" for i, label in enumerate(results)}
    ax = flat[0]
    names = list(results)
    for label in names:
        passes = val.get(label, {})
        if "val_miou" in passes:
            ax.plot(passes["step"], 100 * passes["val_miou"], lw=0.9, marker="o", ms=3, color=colour[label])
        last = _last_step(data.get(label, {}), passes)
        if last is not None:
            ax.plot([last], [100 * results[label]["miou"]], ls="", marker="*", ms=10, color=colour[label])
    _step_axis(ax, "validation mIoU % (star: final evaluation)")
    terms = sorted({t for s in shares.values() for t in s})
    for ax, (label, per_term) in zip(flat[1:], shares.items()):
        for term, (steps, share) in per_term.items():
            ax.plot(steps, share, lw=0.9, marker=".", ms=3, label=term, color=f"C{terms.index(term) + len(names)}")
        ax.set_ylim(0.0, 1.0)
        ax.legend(fontsize=7, loc="upper right")
        _step_axis(ax, f"{label}: share of gradient norm")
    for ax, column in zip(flat[1 + len(shares):], columns):
        for label, cols in data.items():
            if column in cols:
                shown = np.isfinite(cols[column])
                ax.plot(cols["step"][shown], cols[column][shown], lw=0.9, label=label, color=colour.get(label))
        _step_axis(ax, column)
    for extra in flat[panels:]:
        extra.axis("off")
    handles = [plt.Line2D([], [], color=colour[n], label=n) for n in names]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.3 / fig.get_figheight()),
               ncol=len(names), fontsize=8)
    fig.text(0.5, 0.08 / fig.get_figheight(), quiet_columns_text(zero, empty), ha="center", fontsize=8)
    fig.tight_layout(rect=(0.0, 0.8 / fig.get_figheight(), 1.0, 1.0))
    save_figure(fig, path, dpi=90)
    plt.close(fig)


def plot_per_class_iou(path: Path, results: Mapping[str, Mapping[str, Any]], class_names: Sequence[str]) -> None:
    """Classes with validation points only (the others have no IoU)."""
    plt = pyplot()
    names = list(results)
    freq = np.asarray(next(iter(results.values()))["class_frequency"], dtype=float)
    present = [c for c in range(len(class_names)) if np.isfinite(freq[c]) and freq[c] > 0]
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(present))
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 0.25 * len(present) * (len(names) + 1))), 4.4))
    for i, name in enumerate(names):
        iou = np.nan_to_num(100 * np.asarray(results[name]["iou"], dtype=float)[present])
        ax.bar(x + (i - (len(names) - 1) / 2) * width, iou, width, label=f"{name} ({100 * results[name]['miou']:.1f})")
    ax.set_xticks(x, [class_names[c] for c in present], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("IoU %")
    ax.set_title("Validation IoU per class with points in the split (legend: mIoU %)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)


def write_plots(out: Path, models: Mapping[str, torch.nn.Module], labels: Mapping[str, str],
                results: Mapping[str, Mapping[str, Any]], scan: dict[str, Any], class_names: Sequence[str],
                m: int, normalize: str) -> list[Path]:
    """Write the run's PNGs into ``out``; returns their paths.

    ``models`` and ``labels`` are keyed by stage (``teacher``, ``student``, ``kd``, ``distill``),
    ``results`` by the table label, ``scan`` is one collated validation scan on the models' device;
    ``m`` and ``normalize`` are the run's ``--topo-m`` and ``--topo-normalize``.
    """
    written = []
    outputs = _scan_outputs({s: models[s] for s in models}, scan)
    bev = {"ground truth": scan["segment"].cpu().numpy()}
    bev.update({labels[s]: pred for s, (pred, _) in outputs.items()})
    plot_bev(out / "bev.png", scan["coord"][:, :2].cpu().numpy(), bev, class_names)
    written.append(out / "bev.png")
    students = {labels[s] + (" (before)" if s == "student" else " (after)" if s == "distill" else ""): emb
                for s, (_, emb) in outputs.items() if s in ("student", "distill")}
    if "teacher" in outputs and students:
        diagrams = _diagrams(outputs["teacher"][1], students, m, normalize)
        plot_diagrams(out / "diagrams.png", diagrams.pop("teacher"), diagrams)
        written.append(out / "diagrams.png")
    plot_curves(out / "curves.png", {labels[s]: out / s for s in models}, results)
    plot_per_class_iou(out / "per_class_iou.png", results, class_names)
    written += [out / "curves.png", out / "per_class_iou.png"]
    return written
