"""``python -m train.study``: the paper's ablations (Table 5; Tables 7 and 10) with several seeds.

One teacher is trained (or reused), then every (row, seed) unit trains one student from it:

* Table 5 (default, ``--table 5``): CE student, +KLD, +KLD+topo, +KLD+grad, full (+KLD+topo+grad).
* Table 7 (``--table 7``): the full row over a grid of loss weights (``--lambda-topo-grid``,
  ``--lambda-grad-grid``, ``--lambda-kld-grid``; the paper's grid by default), plus the CE and KD
  rows the differences are taken against. The weights are chosen on validation mIoU; test mIoU is
  reported for every row.
* Table 10 (``--table 10``): the full row with each set of decoder stages of ``--saliency-sets``.
* ``--table unlabelled`` (decision 57): the label-scarce question, CE and KD on the labelled scans,
  KD and the full objective with the scans of ``--unlabelled-split`` mixed in; on the synthetic set
  its data default to the label-scarce regime (:data:`train.study.budget.LABEL_SCARCE`), for the
  teacher too, which, like the CE and KD rows, trains on the labelled scans only.
* ``--table cameras`` (the camera teacher): the label-scarce regime rendered with the ``ring`` rig; the
  teacher is the camera pipeline (:mod:`train.study.camera_unit`: a 2D network on the training
  scenes' images, its predictions carried onto the points, decisions 60-62), the rows the CE
  student, the CE student with the unlabelled scans mixed in and labelled by the camera's most
  likely class (the pseudo-label baseline, decision 65), a student distilled from the cameras
  (L_kld) on the labelled scans, and two with the unlabelled scans mixed in, L_kld alone and with
  L_topo on the 2D features (no L_grad, decision 61). With
  ``--converge`` only the CE student's budget is searched.
* Table 11 (``--table 11``): KD+topo with each distance between the diagrams: PWCD, Sinkhorn OT at
  every ``--sinkhorn-eps-grid`` value (the paper's 0.02 0.05 0.1 0.2 by default; decision 31) and
  TopKD's persistence images (decision 32, with its own l_topo, :data:`PI_LAMBDA_TOPO`), with the CE
  and KD rows. The report's training-terms
  table gives each row's ``topo_grad_entropy`` (the paper's gradient-entropy column, decision 33).

Each unit is checkpointed on its own under ``<out>/units/<row>/seed-<s>/``: a finished unit (its
``result.json`` exists) is never redone, a killed one resumes from its last checkpoint. Every
option of ``python -m train.run`` (budget, presets, data) is accepted and applies to every unit;
``--seed`` is replaced by the unit's seed (data order, augmentation, initialisation, TPS starts);
the teacher uses the first seed. The report (:mod:`train.study.report`) is written to
``<out>/STUDY.md`` with its bar chart ``<out>/study.png`` and the raw numbers in
``<out>/study.json``. Every unit logs each term's gradient norm (``--log-term-grads``, every
:data:`TERM_GRAD_INTERVAL` steps unless given).

Converged studies (:mod:`train.study.budget`): ``--converge`` first searches, per regime, the CE
student's budget (from ``--epochs``, doubling, one unit per budget under
``<out>[/<regime>]/budget/student/``; the CE student reads no teacher, and its search is the
cheaper one), then the teacher's (from ``--teacher-epochs``, under ``<out>/budget/teacher/``), and
trains every row at the student budget found; the report adds the searches and the capacity
check. ``--regime paper demo`` runs the rows once per regime, each under ``<out>/<regime>/`` with
its own report, against the one teacher. ``--report-only`` trains nothing and reports the units
that have finished, naming those left out (a study stopped before its last seed).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train/run.py: idle OpenMP threads sleep

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from train.config import RunConfig
from train.engine.loop import FINAL
from train.engine.profiling import StepTimer
from train.options.checks import check_pseudo_label_threshold
from train.options.resolve import finalize, resolve
from train.runner.datasets import SplitData, prepare_splits
from train.runner.preflight import check_inputs
from train.runner.stages import RUN_ERRORS, evaluate_split, keep_caches_under, train_or_reuse, unlabelled_summary
from train.runtime.files import atomic_write
from train.runtime.distributed import DistInfo, barrier, launch
from train.study.budget import (DEFAULT_MAX_DOUBLINGS, DEFAULT_TOLERANCE, LABEL_SCARCE, REGIMES, BudgetSearch,
                                check_search, regime_conflicts, search_budget)
from train.study.camera_unit import (CAMERA_TABLE, DEFAULT_IMAGE_EPOCHS, camera_data_options, camera_labels_folder,
                                     camera_unit, check_camera_base)
from train.study.report import BUDGET_PLOT, budget_curves, log_quarters, logged_steps, plot_budgets, write_study_report
from train.study.units import (RESULT, TRAIN_LOG, check_reproduced, evaluations_differ, follow_kept_log, keep_units,
                               needs_retraining, restore_units)

UNLABELLED_TABLE = "unlabelled"  # the label-scarce question (decision 57), not a table of the paper
TABLES: tuple[int | str, ...] = (5, 7, 10, 11, UNLABELLED_TABLE, CAMERA_TABLE)
SCARCE_TABLES = (UNLABELLED_TABLE, CAMERA_TABLE)  # the tables of the label-scarce regime
# The paper's Table 7 grid (App. C): lambda_topo in {0.5, 4, 8}, lambda_grad and lambda_kld in
# {0.5, 1, 2}.
PAPER_GRID: dict[str, tuple[float, ...]] = {
    "lambda_topo": (0.5, 4.0, 8.0), "lambda_grad": (0.5, 1.0, 2.0), "lambda_kld": (0.5, 1.0, 2.0),
}
PAPER_SINKHORN_EPS: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)  # paper Table 11
# The persistence-image row's l_topo (decision 32): TopKD's weights make the term's gradient about
# 4e4 times PWCD's (measured on the tiny test models at initialisation, TPS budget 256: gradient norm
# 184478 vs 4.90 per unit weight, Sinkhorn 2.85), so 8 * 4.90 / 184478 ~ 2e-4 gives it PWCD's push.
PI_LAMBDA_TOPO = 2e-4
# --log-term-grads of every unit unless given: 4 extra backward passes every 25 steps cost about a
# tenth of a full-objective step on average and give 50-70 points per curve at 1,200-1,700 steps.
TERM_GRAD_INTERVAL = 25


@dataclass(frozen=True)
class Row:
    """One row of a study table: a student stage and the config fields it sets."""

    key: str  # folder name and report label
    stage: str  # student | kd | distill
    values: dict[str, Any] = field(default_factory=dict)


CE = Row("CE", "student")
# --table cameras: CE on the labels and on the camera's pseudo-labels of the unlabelled scans, no L_kld (decision 65)
CAMERA_PSEUDO_ROW = "CE+camera pseudo-labels (unlabelled)"
KD = Row("KD", "kd")
TABLE5: tuple[Row, ...] = (
    CE, KD, Row("KD+topo", "distill", {"grad": False}), Row("KD+grad", "distill", {"topo": False}),
    Row("full", "distill"),
)


def _num(v: float) -> str:
    return f"{v:g}"


def study_rows(table: int | str, grid: dict[str, Sequence[float]], saliency_sets: Sequence[Sequence[int]],
               sinkhorn_eps: Sequence[float] = PAPER_SINKHORN_EPS, unlabelled_split: str | None = None,
               camera_labels: str | None = None, pseudo_threshold: float = 0.0) -> list[Row]:
    """The rows of ``table``; CE and KD always come first (the paired differences use them; the
    camera table has no network teacher, so no KD row). Two rows of ``unlabelled`` and three of
    ``cameras`` mix in the scans of ``unlabelled_split``; no other row reads it. The camera rows
    distil from the projected predictions in ``camera_labels`` (decision 61: no saliency term), the
    first after CE through L_seg alone, on their pseudo-labels where the camera's top probability
    reaches ``pseudo_threshold`` (decision 65)."""
    if table == CAMERA_TABLE:
        camera = {"teacher": "images", "image_predictions": camera_labels}
        mixed = {**camera, "unlabelled_split": unlabelled_split}
        pseudo = {**mixed, "camera_pseudo_labels": True, "pseudo_label_threshold": pseudo_threshold, "kld": False}
        return [CE, Row(CAMERA_PSEUDO_ROW, "kd", pseudo),
                Row("camera KD", "kd", camera), Row("camera KD+unlabelled", "kd", mixed),
                Row("camera KD+topo+unlabelled", "distill", {**mixed, "grad": False})]
    if table == UNLABELLED_TABLE:
        mixed = {"unlabelled_split": unlabelled_split}
        return [CE, KD, Row("KD+unlabelled", "kd", mixed), Row("full+unlabelled", "distill", mixed)]
    if table == 5:
        return list(TABLE5)
    if table == 7:
        rows = [CE, KD]
        for lt in grid["lambda_topo"]:
            for lg in grid["lambda_grad"]:
                for lk in grid["lambda_kld"]:
                    rows.append(Row(f"full topo={_num(lt)} grad={_num(lg)} kld={_num(lk)}", "distill",
                                    {"lambda_topo": lt, "lambda_grad": lg, "lambda_kld": lk}))
        return rows
    if table == 10:
        return [CE, KD] + [Row("full layers=" + ",".join(str(s) for s in layers), "distill",
                               {"saliency_layers": list(layers)}) for layers in saliency_sets]
    if table == 11:
        topo = {"grad": False}
        return [CE, KD, Row("KD+topo pwcd", "distill", {**topo, "topo_distance": "pwcd"})] + [
            Row(f"KD+topo sinkhorn eps={_num(e)}", "distill", {**topo, "topo_distance": "sinkhorn", "sinkhorn_eps": e})
            for e in sinkhorn_eps] + [
            Row("KD+topo persistence-image", "distill",
                {**topo, "topo_distance": "persistence-image", "lambda_topo": PI_LAMBDA_TOPO})]
    raise ValueError(f"--table must be one of {TABLES}, got {table}")


def unit_config(base: RunConfig, row: Row, seed: int, unit_dir: Path, teacher_ckpt: Path | None) -> RunConfig:
    """The resolved config of one (row, seed) unit (validated like any run); the CE row reads no
    teacher, nor does a row taught by the cameras (``teacher_ckpt`` None: its row names its files)."""
    values = {**base.to_dict(), "unlabelled_split": None, **row.values, "stage": row.stage, "seed": seed,
              "out": str(unit_dir), "resume": True,
              "teacher_checkpoint": str(teacher_ckpt) if row.stage != "student" and teacher_ckpt else None}
    return finalize(values)


def _evaluations(cfg: RunConfig, model: torch.nn.Module, data: SplitData, info: DistInfo) -> dict[str, Any]:
    """The unit's validation and (where the data has one) test results, with each scan's counts."""
    splits = ("val", "test") if data.has_test else ("val",)
    return {split: evaluate_split(cfg, model, data, split, info, per_scan=True) for split in splits}


def _unit_result(cfg: RunConfig, model: torch.nn.Module, data: SplitData, info: DistInfo, wall_s: float,
                 unit_dir: Path, steps_logged_before: int) -> dict[str, Any]:
    """``wall_s`` is this invocation's; ``steps_logged_before`` > 0 says that an earlier, killed one
    trained (and logged) that far, so the unit took longer than ``wall_s``."""
    result: dict[str, Any] = {"seed": cfg.seed, "wall_s": wall_s, "steps_logged_before": steps_logged_before,
                              "cpu": torch.backends.cpu.get_cpu_capability(), **_evaluations(cfg, model, data, info)}
    log = unit_dir / TRAIN_LOG
    if log.is_file():
        # the report's early/late term means, kept in the result: the log itself is not kept
        result.update(train_log=str(log), terms=log_quarters(log))
    return result


def run_unit(cfg: RunConfig, stage: str, unit_dir: Path, data: SplitData, info: DistInfo,
             teacher_ckpt: Path | None, train: bool = True) -> dict[str, Any] | None:
    """Train and evaluate one unit, or read its result if it finished earlier; with ``train``
    False (``--report-only``) an unfinished unit returns None instead of training."""
    done = unit_dir / RESULT
    if done.is_file():
        result = json.loads(done.read_text())
        if train and "scans" not in result["val"] and (unit_dir / FINAL).is_file():
            result = _rescored(cfg, stage, unit_dir, data, info, teacher_ckpt, result)
        return result
    if not train:
        return None
    before = logged_steps(unit_dir / TRAIN_LOG)
    t0 = time.perf_counter()
    # a kept unit trained again for its weights follows its kept validation passes, and gives the same numbers
    model, _ = train_or_reuse(cfg, stage, unit_dir, data, info, teacher_ckpt, StepTimer(False, info.device),
                              follow_kept_log(unit_dir))
    result = _unit_result(cfg, model, data, info, time.perf_counter() - t0, unit_dir, before)
    unlabelled = unlabelled_summary(cfg, stage, data, info)
    if unlabelled is not None:
        result["unlabelled_scans"] = unlabelled
    check_reproduced(result, unit_dir)
    if info.is_main:
        # atomic: a killed write never leaves a half result that would mark the unit finished
        atomic_write(json.dumps(result, indent=1, allow_nan=True).encode(), done)
    barrier()
    return result


def _rescored(cfg: RunConfig, stage: str, unit_dir: Path, data: SplitData, info: DistInfo,
              teacher_ckpt: Path | None, result: dict[str, Any]) -> dict[str, Any]:
    """A unit finished before units kept each scan's counts (which the report's scene bootstrap
    reads), scored again from its weights: its evaluations must come out as kept, and gain the
    counts; the rest of its result (wall time, training terms) is kept."""
    model, _ = train_or_reuse(cfg, stage, unit_dir, data, info, teacher_ckpt, StepTimer(False, info.device))
    scored = {**result, **_evaluations(cfg, model, data, info)}
    differ = evaluations_differ(result, scored)
    if differ:
        raise ValueError(f"{unit_dir}: scored again from its weights, its {', '.join(differ)} evaluation differs "
                         "from the kept one; the weights are not the ones that gave the kept result")
    if info.is_main:
        atomic_write(json.dumps(scored, indent=1, allow_nan=True).encode(), unit_dir / RESULT)
    barrier()
    return scored


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.study",
        description="Paper ablations (Table 5, 7, 10 or 11) with several seeds, mean and 95%% confidence "
        "intervals; every other option is passed to each run (see python -m train.run --help).",
    )
    p.add_argument("--table", type=_table, choices=TABLES, default=5,
                   help="which ablation table (default 5), or unlabelled: CE and KD on the labelled scans, KD and the "
                   "full objective with --unlabelled-split mixed in (on the synthetic set: the label-scarce regime, "
                   "train/study/budget.py LABEL_SCARCE; decision 57), or cameras: the same regime rendered with "
                   "cameras, CE against students distilled from a 2D teacher through them (train/study/camera_unit.py)")
    p.add_argument("--image-teacher-epochs", type=int, default=None,
                   help=f"--table cameras: epochs of the 2D teacher on the training images (default "
                   f"{DEFAULT_IMAGE_EPOCHS})")
    p.add_argument("--pseudo-label-threshold", type=float, default=0.0,
                   help="--table cameras: the camera's top probability a pseudo-label needs in the row "
                   f"'{CAMERA_PSEUDO_ROW}' (decision 65; default 0: every seen point)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of every row (>= 2)")
    p.add_argument("--out", default=None, help="study directory (default runs/study-<dataset>-table<N>)")
    p.add_argument("--rows", nargs="+", default=None, help="run only these row keys (default: all)")
    for name, values in PAPER_GRID.items():
        p.add_argument("--" + name.replace("_", "-") + "-grid", dest=name, type=float, nargs="+",
                       default=None, help=f"Table 7 values of {name} (default {list(values)})")
    p.add_argument("--sinkhorn-eps-grid", dest="sinkhorn_eps_grid", type=float, nargs="+", default=None,
                   help=f"Table 11 values of --sinkhorn-eps (default {list(PAPER_SINKHORN_EPS)})")
    p.add_argument("--saliency-sets", nargs="+", default=None,
                   help="Table 10 decoder-stage sets, each a quoted list (default: '1 2 3 4' '3 4' '4')")
    p.add_argument("--regime", nargs="+", choices=tuple(REGIMES), default=None,
                   help="the students' L_seg and L_kld: paper (plain CE, unweighted L_seg and KL) and/or demo "
                   "(class-weighted L_seg and KL); each under <out>/<regime>/ (default: the options as given)")
    p.add_argument("--converge", action="store_true",
                   help="search the teacher's and the CE student's budgets first (doubling --teacher-epochs and "
                   "--epochs until the validation gain is below --budget-tolerance), then train every row at the "
                   "student budget found")
    p.add_argument("--budget-tolerance", type=float, default=None,
                   help=f"mIoU points a doubling must gain to go on (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--max-doublings", type=int, default=None,
                   help=f"most doublings of each search (default {DEFAULT_MAX_DOUBLINGS})")
    p.add_argument("--keep-units", default=None, metavar="DIR",
                   help="keep every finished unit's result and logs (no weights) in DIR as it finishes, and start "
                   "from the units kept there: commit DIR to go on with a study on another machine (the teacher "
                   "is trained again there and must reproduce its kept result; train/study/units.py)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the report from the units that have finished (a study stopped "
                   "early; the report lists the units left out); the teacher and any budget search must be done")
    return p


# The study options read by one table (or --converge) only, with their defaults: given where they
# cannot act, they are refused (decision 99), else their default is filled in.
TABLE_OPTIONS: dict[str, tuple[int | str | None, Any]] = {
    "image_teacher_epochs": (CAMERA_TABLE, DEFAULT_IMAGE_EPOCHS),
    **{name: (7, list(values)) for name, values in PAPER_GRID.items()},
    "saliency_sets": (10, ["1 2 3 4", "3 4", "4"]),
    "sinkhorn_eps_grid": (11, list(PAPER_SINKHORN_EPS)),
    "budget_tolerance": (None, DEFAULT_TOLERANCE),  # None: read by --converge
    "max_doublings": (None, DEFAULT_MAX_DOUBLINGS),
}


def fill_table_options(args: argparse.Namespace) -> None:
    """ValueError in one line for an option of :data:`TABLE_OPTIONS` given where its table (or
    ``--converge``) is not run; then every such option not given takes its default."""
    for name, (table, default) in TABLE_OPTIONS.items():
        option = "--" + name.replace("_", "-") + ("-grid" if name in PAPER_GRID else "")
        if getattr(args, name) is not None:
            if table is None and not args.converge:
                raise ValueError(f"{option} is read by --converge's budget searches only; without --converge it "
                                 "would change nothing")
            if table is not None and args.table != table:
                raise ValueError(f"{option} is read by --table {table} only, got it with --table {args.table}, "
                                 "where it would change nothing")
        else:
            setattr(args, name, default)


def _table(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _saliency_sets(texts: Sequence[str]) -> list[list[int]]:
    try:
        return [[int(t) for t in text.replace(",", " ").split()] for text in texts]
    except ValueError as err:
        raise ValueError(f"--saliency-sets takes quoted lists of decoder stages like '3 4': {err}") from None


def select_rows(args: argparse.Namespace, unlabelled_split: str | None = None) -> list[Row]:
    """The rows of ``args.table`` (restricted to ``--rows`` when given); unknown keys are errors."""
    rows = study_rows(args.table, {k: getattr(args, k) for k in PAPER_GRID}, _saliency_sets(args.saliency_sets),
                      args.sinkhorn_eps_grid, unlabelled_split, str(camera_labels_folder(Path(args.out))),
                      args.pseudo_label_threshold)
    if args.rows is None:
        return rows
    unknown = set(args.rows) - {r.key for r in rows}
    if unknown:
        raise ValueError(f"--rows {sorted(unknown)} are not rows of table {args.table}: {[r.key for r in rows]}")
    return [r for r in rows if r.key in args.rows]


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[Row], RunConfig]:
    """Study options, the rows to run, and the base run config from every other option (dataset
    synthetic by default). Everything is validated here, before any process is started."""
    args, rest = build_parser().parse_known_args(argv)
    if len(set(args.seeds)) != len(args.seeds) or len(args.seeds) < 2:
        raise ValueError(f"--seeds needs at least two distinct seeds for a confidence interval, got {args.seeds}")
    if not any(r == "--dataset" or r.startswith("--dataset=") for r in rest):
        rest = ["--dataset", "synthetic", *rest]
    base = resolve(rest)
    explicit = _explicit_options(rest)
    if args.table in SCARCE_TABLES:
        base = _label_scarce(base, explicit, args.table)
    check_pseudo_label_threshold(args.pseudo_label_threshold)
    if args.pseudo_label_threshold and args.table != CAMERA_TABLE:
        raise ValueError(f"--pseudo-label-threshold is read by --table {CAMERA_TABLE}'s pseudo-label row only, got "
                         f"{args.pseudo_label_threshold:g} with --table {args.table}")
    fill_table_options(args)
    if args.table == CAMERA_TABLE:
        check_camera_base(base)
        if args.image_teacher_epochs < 1:
            raise ValueError(f"--image-teacher-epochs must be >= 1, got {args.image_teacher_epochs}")
    if args.out is None:
        args.out = str(Path("runs") / f"study-{base.dataset}-table{args.table}")
    rows = select_rows(args, base.unlabelled_split)
    if base.log_term_grads == 0:
        base.log_term_grads = TERM_GRAD_INTERVAL
    for regime in args.regime or ():
        regime_config(base, regime)  # a regime that cannot run is refused now
        clash = regime_conflicts(regime, explicit)
        if clash:
            raise ValueError(f"--regime {regime} sets {', '.join('--' + k.replace('_', '-') for k in clash)} itself "
                             f"({REGIMES[regime]}); leave them out or choose another regime")
    if args.converge:
        check_search(base.teacher_epochs, args.budget_tolerance, args.max_doublings)
        check_search(base.epochs, args.budget_tolerance, args.max_doublings)
    # what the options name (the models each unit builds, the data root, --out), checked as train.run
    # checks them, before the teacher is trained (decision 99); its units go on from their checkpoints
    check_inputs(finalize({**base.to_dict(), "out": args.out, "resume": True}))
    return args, rows, base


def _label_scarce(base: RunConfig, explicit: dict[str, Any], table: str) -> RunConfig:
    """``base`` for ``--table unlabelled`` or ``cameras``: on the synthetic set the label-scarce
    regime's data (:data:`LABEL_SCARCE`, and for ``cameras`` the ring rig) for every option not
    given; an unlabelled split in any case."""
    if base.dataset == "synthetic":
        scarce = {**LABEL_SCARCE, **({"synthetic_cameras": "ring"} if table == CAMERA_TABLE else {})}
        base = finalize({**base.to_dict(), **{k: v for k, v in scarce.items() if k not in explicit}})
    if base.unlabelled_split is None:
        raise ValueError(f"--table {table} mixes the scans of an unlabelled split into some of its rows: "
                         "pass --unlabelled-split NAME")
    return base


def _explicit_options(argv: Sequence[str]) -> dict[str, Any]:
    """The run options set on the command line or in its ``--config`` file (field -> value)."""
    from train.options.resolve import build_parser as run_parser
    from train.options.resolve import load_yaml

    given = vars(run_parser().parse_args(argv))  # unset options stay absent (argument_default SUPPRESS)
    path = given.pop("config", None)
    return {**(load_yaml(path) if path else {}), **given}


def regime_config(base: RunConfig, regime: str | None) -> RunConfig:
    """``base`` with the student losses of ``regime`` (None: as given), validated."""
    return base if regime is None else finalize({**base.to_dict(), **REGIMES[regime]})


def _teacher_config(base: RunConfig, seed: int, epochs: int, out: Path) -> RunConfig:
    return finalize({**base.to_dict(), "stage": "teacher", "seed": seed, "teacher_epochs": epochs, "out": str(out),
                     "resume": True, "unlabelled_split": None})


def study_unit(args: argparse.Namespace, cfg: RunConfig, stage: str, unit_dir: Path, data: SplitData,
               info: DistInfo, teacher_ckpt: Path | None) -> dict[str, Any] | None:
    """:func:`run_unit` (training nothing with ``--report-only``), then keep the finished units'
    text in ``--keep-units``."""
    result = run_unit(cfg, stage, unit_dir, data, info, teacher_ckpt, train=not args.report_only)
    if args.keep_units and info.is_main:
        keep_units(Path(args.out), Path(args.keep_units))
    return result


def _needed_unit(args: argparse.Namespace, cfg: RunConfig, stage: str, unit_dir: Path, data: SplitData,
                 info: DistInfo, teacher_ckpt: Path | None, weights: bool = False) -> dict[str, Any]:
    """A unit every row depends on (a teacher or a budget-search unit): run (or read) it; with
    ``--report-only`` it must have finished. ``weights``: the rows load its final weights, so a unit
    restored from ``--keep-units`` without them is trained again (and must reproduce its result)."""
    if weights and not args.report_only and info.is_main:
        needs_retraining(unit_dir, FINAL)
    barrier()
    result = study_unit(args, cfg, stage, unit_dir, data, info, teacher_ckpt)
    if result is None:
        raise ValueError(f"--report-only: {unit_dir} has not finished (no {RESULT}); the rows depend on it, so run "
                         "the study without --report-only first")
    return result


def _draw_budgets(args: argparse.Namespace, info: DistInfo) -> None:
    """Redraw the budget searches' validation curves (``<out>/budget.png``) with the units so far."""
    if not info.is_main:
        return
    curves = budget_curves(Path(args.out))
    if curves:  # a unit logs validation passes only if it trained long enough for one
        plot_budgets(curves, Path(args.out) / BUDGET_PLOT)


def _say(info: DistInfo, base: RunConfig, text: str) -> None:
    if info.is_main and base.progress:
        print(f"[study] {text}", flush=True)


def train_teacher(args: argparse.Namespace, base: RunConfig, data: SplitData,
                  info: DistInfo) -> tuple[Path, dict[str, Any], BudgetSearch | None]:
    """The study's one teacher: at ``--teacher-epochs`` in ``<out>/teacher``, or with ``--converge``
    the budget of the search whose doubling gained too little (as for the students; the largest
    trained if the search did not converge) in ``<out>/budget/teacher/epochs-<E>``: a study that
    goes on in another session from ``--keep-units`` trains that teacher again, and the smaller
    converged budget halves that cost. Returns its folder, its result and the search."""
    out, seed = Path(args.out), args.seeds[0]
    if not args.converge:
        return out / "teacher", _needed_unit(args, _teacher_config(base, seed, base.teacher_epochs, out), "teacher",
                                             out / "teacher", data, info, None, weights=True), None

    def unit(epochs: int) -> Path:
        return out / "budget" / "teacher" / f"epochs-{epochs}"

    def score(epochs: int) -> float:
        _say(info, base, f"teacher budget {epochs} epochs")
        result = _needed_unit(args, _teacher_config(base, seed, epochs, out), "teacher", unit(epochs), data, info, None)
        _draw_budgets(args, info)
        return float(result["val"]["miou"])

    search = search_budget(score, base.teacher_epochs, args.budget_tolerance, args.max_doublings)
    _say(info, base, f"the teacher: {search.chosen} epochs")
    return unit(search.chosen), _needed_unit(args, _teacher_config(base, seed, search.chosen, out), "teacher",
                                              unit(search.chosen), data, info, None, weights=True), search


def search_student_budget(args: argparse.Namespace, base: RunConfig, root: Path, data: SplitData,
                          info: DistInfo) -> BudgetSearch:
    """The CE student's converged budget (``--converge``), one unit per budget under ``root/budget/student``.
    The CE student needs no teacher, so this runs before the teacher's search: it is the cheaper of
    the two, and the budget it finds sets the cost of every row."""
    def score(epochs: int) -> float:
        _say(info, base, f"CE student budget {epochs} epochs")
        unit = root / "budget" / "student" / f"epochs-{epochs}"
        cfg = unit_config(finalize({**base.to_dict(), "epochs": epochs}), CE, args.seeds[0], unit, None)
        result = _needed_unit(args, cfg, CE.stage, unit, data, info, None)
        _draw_budgets(args, info)
        return float(result["val"]["miou"])

    return search_budget(score, base.epochs, args.budget_tolerance, args.max_doublings)


def run_rows(args: argparse.Namespace, rows: Sequence[Row], base: RunConfig, root: Path, data: SplitData,
             info: DistInfo, teacher_ckpt: Path | None,
             same_as: dict[tuple[str, int], Path]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Every (row, seed) unit under ``root/units``, seed-major: a study stopped early still has every
    row for the seeds it finished; ``same_as`` maps a (row, seed) to a unit of the same config that
    serves as it (the CE row at the search's seed is the chosen budget's search unit); ``teacher_ckpt``
    None: the rows name their camera teacher's files themselves. Returns the
    units' results by row and, with ``--report-only``, the units left out because they have not
    finished ("<row> seed <s>")."""
    units: dict[str, list[dict[str, Any]]] = {}
    missing: list[str] = []
    for seed in args.seeds:
        for row in rows:
            unit_dir = same_as.get((row.key, seed), root / "units" / row.key.replace(" ", "_") / f"seed-{seed}")
            cfg = unit_config(base, row, seed, unit_dir, teacher_ckpt)
            if not args.report_only:
                _say(info, base, f"{row.key} seed {seed}" + (f" ({root.name})" if root != Path(args.out) else ""))
            result = study_unit(args, cfg, row.stage, unit_dir, data, info, teacher_ckpt)
            if result is None:
                missing.append(f"{row.key} seed {seed}")
            else:
                units.setdefault(row.key, []).append(result)
    return {r.key: units[r.key] for r in rows if r.key in units}, missing


def run_study(args: argparse.Namespace, rows: Sequence[Row], base: RunConfig, info: DistInfo,
              argv: Sequence[str]) -> dict[str, Any]:
    """With ``--converge`` search the CE student's budget per regime, then the teacher's; without,
    train the teacher (``--table cameras``: make the camera unit, and search no teacher budget);
    then every unit of every regime; write each regime's report and return their numbers (one
    study, or ``{regime: study}`` with ``--regime``)."""
    out = Path(args.out)
    t0 = time.perf_counter()
    if args.keep_units and info.is_main:
        restored = restore_units(Path(args.keep_units), out)
        _say(info, base, f"{len(restored)} finished units restored from {args.keep_units}")
    barrier()
    camera = None
    if args.table == CAMERA_TABLE:  # the rows' teacher is the camera pipeline, made before the data is opened
        _say(info, base, "the camera teacher (2D teacher, predictions, projection)")
        camera = camera_unit(base, out, args.seeds[0], args.image_teacher_epochs, info, not args.report_only)
    # the data of every unit, with the unlabelled split its rows mix in (decision 57) and the camera
    # teacher's files (decision 61)
    data = prepare_splits(finalize({**_teacher_config(base, args.seeds[0], base.teacher_epochs, out).to_dict(),
                                    "stage": "all", "unlabelled_split": base.unlabelled_split,
                                    **(camera_data_options(out) if camera else {})}), info)
    # regime -> (its students' config, its folder)
    regimes = {regime: (regime_config(base, regime), out / regime if regime else out)
               for regime in args.regime or [None]}
    student_searches = {regime: search_student_budget(args, rbase, root, data, info)
                        for regime, (rbase, root) in regimes.items()} if args.converge else {}
    teacher_ckpt, teacher, teacher_search = None, camera, None
    if camera is None:
        teacher_dir, teacher, teacher_search = train_teacher(args, base, data, info)
        teacher_ckpt = teacher_dir / FINAL
    command = "python -m train.study " + " ".join(shlex.quote(a) for a in argv)
    studies: dict[str | None, dict[str, Any]] = {}
    for regime, (rbase, root) in regimes.items():
        study: dict[str, Any] = {"table": args.table, "dataset": base.dataset, "seeds": list(args.seeds),
                                 "command": command, "class_names": list(data.class_names),
                                 "eval_split": "test" if data.has_test else "val", "teacher": teacher,
                                 "regime": regime}
        same_as: dict[tuple[str, int], Path] = {}
        if args.converge:
            student_search = student_searches[regime]
            rbase = finalize({**rbase.to_dict(), "epochs": student_search.chosen})
            study["budget"] = {"tolerance": args.budget_tolerance, "student": student_search.to_dict(),
                               **({"teacher": teacher_search.to_dict()} if teacher_search else {})}
            same_as[(CE.key, args.seeds[0])] = root / "budget" / "student" / f"epochs-{student_search.chosen}"
        study["rows"], study["unfinished"] = run_rows(args, rows, rbase, root, data, info, teacher_ckpt, same_as)
        if not study["rows"]:
            raise ValueError(f"--report-only: no unit under {root / 'units'} has finished: nothing to report")
        study.update(wall_s_this_invocation=time.perf_counter() - t0, config=rbase.to_dict())
        if info.is_main:
            write_study_report(root, study)
        studies[regime] = study
    return studies[None] if args.regime is None else studies


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, rows, base = parse(argv)
    except (ValueError, FileNotFoundError) as err:
        print(f"train.study: error: {err}", file=sys.stderr)
        return 2
    keep_caches_under(Path(args.out))
    return launch(main, argv, base.procs, base.device, base.deterministic,
                  lambda info: run_study(args, rows, base, info, argv), "train.study", (ValueError, *RUN_ERRORS))

