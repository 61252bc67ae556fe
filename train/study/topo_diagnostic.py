"""``python -m train.topo_diagnostic``: why L_topo is small on a trained teacher/student pair.

For each of a few validation scans, on both models' 64-channel embeddings (decision 12), this
recomputes L_topo with the numpy reference (paper Algorithm 1: per-cloud normalisation, decision
13; TPS on the teacher, decision 14; H0/H1 Rips diagrams; PWCD per dimension, Eq. 2-3, decisions
6-11) and takes it apart:

* **per dimension**: the PWCD of H0 and of H1, their share of the loss, how many pairs each
  diagram has, how many teacher pairs have a student pair nearer than the diagonal (the rest are
  "unmatched": they pay their distance to the diagonal), the distance in the diagram plane from
  each teacher pair to what it pays for (median, 90th percentile, largest), and the share of the
  dimension's loss carried by its costliest tenth of pairs;
* **scale**: the RMS radius of each model's raw features around their mean (what ``scale``
  normalisation divides by), the median H0 death (nearest-neighbour scale of the sampled points)
  before and after it, and the PWCD of the raw features (``--topo-normalize none``) at the same
  points, so the effect of the normalisation on the loss's size is measured, not argued;
* **weights**: the L2 norm of the gradient ``l_topo dL_topo/dh`` on the raw student embedding h
  against that of L_seg (through the student's classifier head), per point, so what a weight
  such as the paper's l_topo = 8 means next to the task loss can be read off.

The losses are the reference's (float64), the same numbers the training's ``fast`` path computes
up to rounding (the twin tests); the TPS start of cloud b is ``seed + b`` as in a training step.
Prints a Markdown summary; ``--json`` writes every number, whole (decision 99): a file there that is
not such a JSON (its ``summary`` and ``clouds``) is replaced only with ``--overwrite``, refused
before any work.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train/run.py: idle OpenMP threads sleep

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reference.distances import pairwise_distances
from reference.normalize import normalize_cloud
from reference.persistence import rips_persistence
from reference.pwcd import pwcd
from reference.topo_loss import topo_loss_cloud
from reference.tps import tps_cloud
from train.runtime.whole_files import write_text

EPS_W = 1e-8  # decision 8, the training's default


def pwcd_parts(teacher_pairs: np.ndarray, student_pairs: np.ndarray, eps_w: float = EPS_W) -> dict[str, Any]:
    """PWCD (Eq. 2-3) split into what each pair pays: ``recall`` (M,) per teacher pair (weighted,
    decisions 8-9), ``precision`` (K,) per student pair, ``teacher_matched`` (M,) whether a student
    pair is nearer than the diagonal, ``teacher_gap`` (M,) the distance from each teacher pair to
    what it pays for. ``recall.sum() + precision.sum()`` is :func:`reference.pwcd.pwcd`'s loss (a
    test checks it); written out here because the loss function returns only the total."""
    P = np.asarray(teacher_pairs, np.float64).reshape(-1, 2)
    Q = np.asarray(student_pairs, np.float64).reshape(-1, 2)
    diag_p = (P[:, 1] - P[:, 0]) ** 2 / 2.0  # decision 7
    diag_q = (Q[:, 1] - Q[:, 0]) ** 2 / 2.0
    cost = np.sum((P[:, None, :] - Q[None, :, :]) ** 2, axis=-1)
    near_p = cost.min(axis=1) if len(Q) else np.full(len(P), np.inf)
    near_q = cost.min(axis=0) if len(P) else np.full(len(Q), np.inf)
    w = np.log1p(np.maximum(P[:, 1] - P[:, 0], 0.0))
    paid_p = np.where(near_p <= diag_p, near_p, diag_p)  # decision 10: a tie is a match
    recall = w * paid_p / (w.sum() + eps_w)
    precision = np.where(near_q <= diag_q, near_q, diag_q) / max(len(Q), 1)
    return {"recall": recall, "precision": precision, "teacher_matched": near_p <= diag_p,
            "teacher_gap": np.sqrt(paid_p)}


def _top_tenth_share(costs: np.ndarray) -> float:
    total = float(costs.sum())
    if total <= 0.0:
        return float("nan")
    k = max(1, int(np.ceil(costs.size / 10)))
    return float(np.sort(costs)[-k:].sum() / total)


def _rms_radius(h: np.ndarray) -> float:
    c = h - h.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(c * c, axis=1))))


def _quantiles(x: np.ndarray) -> list[float]:
    return [float(v) for v in np.quantile(x, [0.5, 0.9, 1.0])] if x.size else [float("nan")] * 3


def cloud_diagnostics(teacher_feats: np.ndarray, student_feats: np.ndarray, m: int, seed: int = 0,
                      dims: Sequence[int] = (0, 1)) -> dict[str, Any]:
    """Every number of the module docstring for one cloud (``scale`` normalisation, PWCD)."""
    T = np.asarray(teacher_feats, np.float64)
    S = np.asarray(student_feats, np.float64)
    T_n, S_n = normalize_cloud(T, "scale"), normalize_cloud(S, "scale")
    idx = tps_cloud(T_n, m, seed)  # farthest-point sampling: the same indices on the raw features
    out: dict[str, Any] = {"points": int(len(T)), "sampled": int(idx.size), "rms_teacher": _rms_radius(T),
                           "rms_student": _rms_radius(S), "dims": {}}
    maxdim = max(dims)
    for label, t_feats, s_feats in (("scaled", T_n, S_n), ("raw", T, S)):
        dg_t = rips_persistence(pairwise_distances(t_feats[idx]), maxdim=maxdim)
        dg_s = rips_persistence(pairwise_distances(s_feats[idx]), maxdim=maxdim)
        for d in dims:
            loss, _ = pwcd(dg_t[d].pairs, dg_s[d].pairs, EPS_W)
            entry = out["dims"].setdefault(f"H{d}", {})
            entry[f"loss_{label}"] = float(loss)
            if d == 0:
                entry[f"median_death_teacher_{label}"] = float(np.median(dg_t[0].pairs[:, 1]))
                entry[f"median_death_student_{label}"] = float(np.median(dg_s[0].pairs[:, 1]))
            if label != "scaled":
                continue
            parts = pwcd_parts(dg_t[d].pairs, dg_s[d].pairs)
            entry.update(
                pairs_teacher=len(dg_t[d]), pairs_student=len(dg_s[d]),
                teacher_matched=int(parts["teacher_matched"].sum()),
                recall=float(parts["recall"].sum()), precision=float(parts["precision"].sum()),
                gap_quantiles=_quantiles(parts["teacher_gap"]),
                median_persistence_teacher=float(np.median(np.diff(dg_t[d].pairs, axis=1))) if len(dg_t[d]) else 0.0,
                top_tenth_share=_top_tenth_share(np.concatenate([parts["recall"], parts["precision"]])))
    total = sum(e["loss_scaled"] for e in out["dims"].values())
    for entry in out["dims"].values():
        entry["share"] = entry["loss_scaled"] / total if total > 0 else float("nan")
    out["loss_scaled"], out["loss_raw"] = total, sum(e["loss_raw"] for e in out["dims"].values())
    _, grad = topo_loss_cloud(S, T, m=m, seed=seed, dims=dims)
    out["topo_grad_norm"] = float(np.linalg.norm(grad))
    return out


def model_diagnostics(teacher: Any, student: Any, batches: Sequence[dict[str, Any]], m: int, lambda_topo: float,
                      seg_loss: str, class_weight: Any = None, seed: int = 0) -> list[dict[str, Any]]:
    """:func:`cloud_diagnostics` of every cloud of ``batches`` (collated, on the models' device),
    plus ``seg_grad_norm`` (||dL_seg/dh|| on the student's embedding, through its head) and
    ``weighted_topo_grad_norm`` (l_topo ||dL_topo/dh||) with L_seg's share of the batch's points."""
    import torch

    from train.engine.losses import segmentation_loss
    from train.engine.steps import model_inputs

    results = []
    for batch in batches:
        with torch.no_grad():
            t_out, s_out = teacher(model_inputs(batch)), student(model_inputs(batch))
        emb = s_out.embedding.detach().float().requires_grad_(True)
        weight = None if class_weight is None else class_weight.to(emb.device)
        seg, _ = segmentation_loss(student.head(emb), batch["segment"], kind=seg_loss, class_weight=weight)
        (seg_grad,) = torch.autograd.grad(seg, emb)
        ends = batch["offset"].tolist()
        B = len(ends)
        for b, (lo, hi) in enumerate(zip([0, *ends[:-1]], ends)):
            cloud = cloud_diagnostics(t_out.embedding[lo:hi].double().cpu().numpy(),
                                      s_out.embedding[lo:hi].double().cpu().numpy(), m, seed + b)
            # the batch loss is the mean over clouds (decision 11): each cloud's gradient is divided by B
            cloud["weighted_topo_grad_norm"] = lambda_topo * cloud["topo_grad_norm"] / B
            cloud["seg_grad_norm"] = float(seg_grad[lo:hi].norm())
            results.append(cloud)
    return results


def summarize(clouds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over clouds of the numbers the Markdown summary shows."""
    def mean(get: Any) -> float:
        return float(np.mean([get(c) for c in clouds]))

    out: dict[str, Any] = {k: mean(lambda c, k=k: c[k]) for k in
                           ("loss_scaled", "loss_raw", "rms_teacher", "rms_student", "topo_grad_norm",
                            "weighted_topo_grad_norm", "seg_grad_norm") if all(k in c for c in clouds)}
    for dim in clouds[0]["dims"]:
        keys = [k for k, v in clouds[0]["dims"][dim].items() if not isinstance(v, list)]
        out[dim] = {k: mean(lambda c, k=k: c["dims"][dim][k]) for k in keys}
        out[dim]["gap_quantiles"] = [mean(lambda c, i=i: c["dims"][dim]["gap_quantiles"][i]) for i in range(3)]
    return out


def render(summary: dict[str, Any], clouds: int, lambda_topo: float) -> str:
    lines = [f"L_topo taken apart (mean over {clouds} clouds, scale-normalised features unless 'raw')", "",
             "| | H0 | H1 |", "|---|---|---|"]
    dims = [summary.get(f"H{d}", {}) for d in (0, 1)]

    def row(label: str, key: str, fmt: str = "{:.4g}") -> None:
        lines.append(f"| {label} | " + " | ".join(fmt.format(d[key]) if key in d else "-" for d in dims) + " |")

    row("PWCD (scaled)", "loss_scaled")
    row("share of L_topo", "share", "{:.1%}")
    row("recall part (teacher -> student)", "recall")
    row("precision part (student -> teacher)", "precision")
    row("teacher pairs", "pairs_teacher", "{:.1f}")
    row("student pairs", "pairs_student", "{:.1f}")
    row("teacher pairs matched (not to the diagonal)", "teacher_matched", "{:.1f}")
    row("median teacher persistence", "median_persistence_teacher")
    row("costliest tenth of pairs: share of the loss", "top_tenth_share", "{:.1%}")
    row("PWCD of the raw features (no normalisation)", "loss_raw")
    lines.append("| teacher-pair gap: median / 90% / max | " + " | ".join(
        " / ".join(f"{v:.3g}" for v in d["gap_quantiles"]) if "gap_quantiles" in d else "-" for d in dims) + " |")
    h0 = dims[0]
    if "median_death_teacher_scaled" in h0:
        lines += ["", f"Scale: feature RMS radius teacher {summary['rms_teacher']:.3g}, student "
                  f"{summary['rms_student']:.3g}; median H0 death teacher {h0['median_death_teacher_raw']:.3g} raw -> "
                  f"{h0['median_death_teacher_scaled']:.3g} scaled, student {h0['median_death_student_raw']:.3g} -> "
                  f"{h0['median_death_student_scaled']:.3g}. L_topo scaled {summary['loss_scaled']:.4g}, raw "
                  f"{summary['loss_raw']:.4g}."]
    if "seg_grad_norm" in summary:
        lines += ["", f"Gradient on the student's embedding per cloud: l_topo dL_topo/dh {summary['weighted_topo_grad_norm']:.4g} "
                  f"(l_topo = {lambda_topo:g}; unweighted {summary['topo_grad_norm']:.4g}), dL_seg/dh "
                  f"{summary['seg_grad_norm']:.4g}."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.topo_diagnostic",
                                description="Why L_topo is small: H0/H1 parts, pairs that differ, scale before and "
                                "after the normalisation, gradient next to L_seg's. Every other option is a "
                                "python -m train.run option (data set, --topo-m, --lambda-topo, --seg-loss, ...).")
    p.add_argument("--teacher", required=True, help="teacher model_final.pt")
    p.add_argument("--student", required=True, help="student model_final.pt")
    p.add_argument("--scans", type=int, default=4, help="validation scans, one cloud each (default 4)")
    p.add_argument("--json", default=None, help="write every number here (a file there that is not such a JSON: "
                   "only with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a --json file that is not this command's")
    return p


def check_json_out(path: Path, overwrite: bool) -> None:
    """ValueError in one line for a ``--json`` path that is a folder, or a file that is not a JSON of
    this command (``summary`` and ``clouds``) without ``overwrite``."""
    if path.is_dir():
        raise ValueError(f"--json {path} is a folder: name the file to write")
    if not path.exists() or overwrite:
        return
    try:
        ours = set(json.loads(path.read_bytes())) == {"summary", "clouds"}
    except (ValueError, TypeError, OSError):
        ours = False
    if not ours:
        raise ValueError(f"--json {path} exists and is not a JSON of train.topo_diagnostic: pass --overwrite to "
                         "replace it, or name another file")


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    from train.options.resolve import resolve

    try:
        if not any(r == "--dataset" or r.startswith("--dataset=") for r in rest):
            rest = ["--dataset", "synthetic", *rest]
        cfg = resolve([*rest, "--procs", "1"])
        if args.scans < 1:
            raise ValueError(f"--scans must be >= 1, got {args.scans}")
        if args.json:
            check_json_out(Path(args.json), args.overwrite)
        elif args.overwrite:
            raise ValueError("--overwrite replaces a --json file; without --json it has nothing to replace")
        for path in (args.teacher, args.student):
            if not Path(path).is_file():
                raise FileNotFoundError(f"checkpoint {path} does not exist")
    except (ValueError, FileNotFoundError) as err:
        print(f"train.topo_diagnostic: error: {err}", file=sys.stderr)
        return 2
    import torch

    from train.engine.loop import load_frozen_teacher, stage_settings
    from train.engine.steps import to_device
    from train.runner.datasets import prepare_splits
    from train.runner.stages import RUN_ERRORS
    from train.runtime.distributed import init_from_env

    try:
        info = init_from_env(cfg.device)
        # the checkpoints are read before the data set is opened (or generated): a file that is no
        # model is refused before any work (decision 99)
        teacher, _ = load_frozen_teacher(args.teacher, info.device)
        student, _ = load_frozen_teacher(args.student, info.device)
        data = prepare_splits(cfg, info)
        settings = stage_settings(cfg, "student", data.train)
        views = data.val_views(False)[0]
        batches = [to_device(data.collate([views[i]]), info.device) for i in range(min(args.scans, len(views)))]
        with torch.enable_grad():
            clouds = model_diagnostics(teacher, student, batches, cfg.topo_m, cfg.lambda_topo, settings.seg_loss,
                                       settings.seg_weight())
        summary = summarize(clouds)
        print(render(summary, len(clouds), cfg.lambda_topo))
        if args.json:
            write_text(args.json, json.dumps({"summary": summary, "clouds": clouds}, indent=1))
    except RUN_ERRORS as err:  # an unusable checkpoint, a missing data set, a full disk: one line
        print(f"train.topo_diagnostic: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
