"""The DD3D study (paper Sec. 5): Tables 1-6 as units of work, each a condensed set and
its evaluation, run by ``python -m train.condense study`` (``docs/condense.md``, decision 87).

A :class:`Plan` fixes the data set, the resolutions, the CPCs, the iterations, how many times a
method is distilled (seeds 0, 1, ...) and how many runs evaluate each set; :data:`PRESETS` holds
the paper's budget (``paper``, tens of GPU-hours) and one that fits a 2-core CPU (``cpu``; the hours
of each, decision 87) and the evaluation recipe each uses (``paper`` the released evaluation,
``cpu`` fixed steps; :mod:`train.condense.evaluation.recipes`, decision 94). :func:`units` lists a table's
:class:`Unit` s:

1. classification (Table 1): Random, Herding, K-Center, GM, DM, TM (CPC <= 10, as the paper's),
   DD3D at every CPC, aligned and rotated (each in its default frame, decision 86), the full set;
2. part segmentation at CPC 1 (Table 2): Random, GM, DD3D;
3. cross-architecture (Table 3): Table 1's DM, GM and DD3D sets at the largest CPC, aligned,
   evaluated with every backbone of :data:`CROSS_MODELS` (the PointNet they were distilled with
   first: Table 1's units), and every backbone trained on the full set with the same recipe, which
   tells a set's loss from the recipe's fit to that backbone;
4. cross-resolution (Table 4): DD3D distilled at each of :attr:`Plan.low_points`, drawn and
   evaluated at :attr:`Plan.points`;
5. the rotator (Table 5): DD3D on the rotated set without PCA (``rotated_raw``), with PCA, with
   the fixed and with the learned sign;
6. explicit clouds against the generator (Table 6): GM from noise, GM from real clouds, DD3D, and
   DD3D's set evaluated on fresh draws of its generator (``evaluate --resample``, decision 85);
7. the persistence term (Table 7, not the paper's: decisions 96 and 97): GM and DD3D at every CPC,
   aligned and rotated, without the term and with each reading (the feature readings where a class has
   several clouds) at each of :attr:`Plan.topo_weights`; the weight is chosen on the validation
   split, and every set's distance from its class's real clouds is measured
   (:mod:`train.condense.studies.shape_gap`);
8. the persistence term across backbones (Table 8, Table 3's check of Table 7, decision 97): at
   the largest CPC, aligned, GM's and DD3D's sets without the term and with each reading at its
   weight chosen on validation in Table 7 (:func:`chosen_weight`), and the full set, evaluated with
   every backbone of :data:`CROSS_MODELS`; its units follow from Table 7's results, so it runs
   after them (:func:`cross_topo_units`);
9. the persistence term on part segmentation (Table 2's check of Table 7, decision 97): GM and
   DD3D at Table 2's CPC, aligned, without the term (Table 2's sets) and with the shape reading
   per part at each of :attr:`Plan.topo_weights`, the weight chosen on validation instance mIoU;
10. the persistence term against its non-topological controls (decisions 101 and 102): GM and DD3D
   at every CPC, aligned, without the term and with each reading at each of
   :attr:`Plan.topo_ratios` (the term's gradient norm over the matching's at every step), and in
   the term's place each control of :data:`CONTROLS` at the same norm; DD3D with two noise scalars
   a point (a surface) without and with the term; gaps measured as Table 7's.

A unit writes ``<out>/units/<name>/`` (the set, the generator, the feature network's cache) and
``result.json`` last: the scores of every evaluation run on the test split and, beside them, the
same model's on the validation split (the paper recipe's best test epoch apart), the recipe by name and values, and the seconds the condensation took (its memory is
measured in a fresh process each by ``benchmarks/cpu/distill_cost.py``). Units of
different tables that name the same set share it (Table 6's DD3D is Table 1's). A finished unit
is never run again (a result of another recipe is refused), and a stopped unit's distillation
goes on from its checkpoint when it is the unit's (decision 80), so a stopped study goes on where it
stopped; each unit that runs says its table, its place and its name as it starts. :func:`report`
makes the tables from the results of the tables run and of every unit
finished in the folder before: a cell of several distillations is the mean, the 95% t interval
over the distillations' means and each one's mean (:func:`train.condense.evaluation.metrics.two_level`), a
cell of one set the interval over its runs; the distillations' gains over Random's draw of the
same seed are paired (:func:`train.condense.evaluation.metrics.paired_gain`).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from train.condense.files.condensed_file import CondensedSet, read_condensed, write_condensed
from train.condense.files.data import DataSpec, clouds_of, condensed_clouds, in_frame
from train.condense.methods.dd3d import redrawn
from train.condense.files.distill_checkpoint import CHECKPOINT_NAME, RESUME_MATCHING, saved_seconds
from train.condense.matching.features import CACHE_NAME
from train.condense.matching.controls import CONTROLS
from train.condense.matching.matching_loops import DistillSpec
from train.condense.methods import DISTILLATIONS, TOPO_DISTILLATIONS, condense_set
from train.condense.evaluation.metrics import SCORES, PairedGain, paired_gain, summarise, two_level
from train.study.report import mean_ci
from train.condense.evaluation.protocol import (BEST, LABELS, VAL, evaluate_runs, format_gain, format_mean,
                                                format_summary, format_two_level)
from train.condense.evaluation.recipes import named_recipe
from train.condense.matching.released import iterations_for
from train.condense.methods.resample import resampled
from train.condense.files.rotator import Rotator, rotator_kind, rotator_of
from train.condense.studies.shape_gap import shape_gap
from train.condense.matching.topology_term import DEFAULT_M, PART_READINGS, READINGS, RealDiagrams, reading_acts
from train.condense.evaluation.training import Clouds, TrainSpec
from train.data.objects.cloud import SETTINGS, EmptySplitError, ObjectSet
from train.runtime.distributed import DistInfo, barrier
from train.runtime.files import atomic_write

TABLES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
TITLES = {"random": "Random", "herding": "Herding", "kcenter": "K-Center", "gm": "GM", "dm": "DM", "tm": "TM (miniature)",
          "dd3d": "DD3D", "full": "full set"}
CROSS_MODELS = ("pointnet", "pointnet2", "dgcnn", "pct", "pointmlp", "pointnext", "ptv3_student")
TM_LARGEST_CPC = 10  # the paper's Table 1 has no TM at CPC 50
SHAPE_NAME = "shape_gap.json"  # a set's distance from its class's real clouds, beside it (Table 7)
HELD_OUT = "test"  # shape_gap.json's key of the gaps to the held-out test split's clouds
TERM_TABLES = (7, 9, 10)  # the tables whose sets' shape gaps are measured


TOPO_WEIGHTS = (1e3, 1e4, 1e5)  # Table 7's and 9's grid of the term's weight: decision 96's measured scale
TOPO_RATIOS = (0.01, 0.1, 1.0)  # Table 10's term strengths, its gradient norm over the matching's (decision 102)
SURFACE_DIMS = 2  # Table 10's DD3D generator of two noise scalars a point


@dataclass(frozen=True)
class Plan:
    """The study's budget: ``dataset`` (``root`` its download), clouds of ``points`` (Table 4's
    distilled at ``low_points``), ``cpcs`` of Table 1 (the others take the first), ``iterations``
    outer iterations of every distillation (None: the data set's released count, decision 92), each method distilled ``distills`` times, every set
    evaluated ``runs`` times with ``recipe`` (classification) or ``part_recipe`` (Table 2);
    ``size`` of a generated set; Table 7's persistence term at each of ``topo_weights``, Table 10's
    at each of ``topo_ratios``; Table 1 adds,
    with ``draw_points``, DD3D's sets drawn at that resolution and Random's draw at it (the paper's
    Table 4 reading: a generator distilled at few points, evaluated at many)."""

    dataset: str = "shapes"
    root: str | None = None
    points: int = 1024
    low_points: tuple[int, ...] = (256, 512)
    part_points: int = 2048
    cpcs: tuple[int, ...] = (1, 10, 50)
    iterations: int | None = None
    distills: int = 2
    runs: int = 5
    recipe: TrainSpec = named_recipe("paper", "classification")
    part_recipe: TrainSpec = named_recipe("paper", "parts")
    size: int | None = None
    topo_weights: tuple[float, ...] = TOPO_WEIGHTS
    draw_points: int | None = None
    topo_ratios: tuple[float, ...] = TOPO_RATIOS

    def recipe_of(self, unit: "Unit") -> TrainSpec:
        """The recipe that evaluates ``unit``: its task's, with its backbone."""
        return replace(self.part_recipe if unit.task == "parts" else self.recipe, model=unit.model)


PRESETS = {
    "paper": Plan(),
    # CPC 1, a tenth of the iterations, 64 points, the cpu recipe at 100 steps: hours of one core of
    # the 2-core EPYC (decision 87)
    "cpu": Plan(points=64, low_points=(32,), part_points=128, cpcs=(1,), iterations=40, distills=2, runs=5,
                recipe=TrainSpec(steps=100), part_recipe=TrainSpec(steps=100)),
}


@dataclass(frozen=True)
class Unit:
    """One set and its evaluation: ``method`` on ``setting`` at ``cpc`` with ``seed``, distilled at
    ``points`` and evaluated at ``eval_points`` with ``model``; ``rotator`` None for the setting's,
    ``init`` of explicit clouds; ``task`` classification or parts; ``resample`` trains on fresh
    draws of a DD3D set's generator; ``topo`` the persistence term's reading at ``topo_weight``
    (None: none) or at ``topo_ratio`` of the matching's gradient norm, ``control`` in its place
    (decisions 101 and 102); ``noise_dims`` of DD3D's generator; ``table`` where it is reported."""

    table: int
    method: str
    setting: str
    cpc: int
    seed: int
    points: int
    eval_points: int
    model: str = "pointnet"
    rotator: str | None = None
    init: str = "real"
    task: str = "classification"
    resample: bool = False
    topo: str | None = None
    topo_weight: float = 0.0
    topo_ratio: float | None = None
    control: str | None = None
    noise_dims: int = 1

    @property
    def name(self) -> str:
        """The unit's folder: what makes its set, and what evaluates it."""
        rot = rotator_kind(self.setting, self.rotator)
        strength = f"r{self.topo_ratio:g}" if self.topo_ratio is not None else f"w{self.topo_weight:g}"
        init = ("" if self.init == "real" else f"-{self.init}") + (
            "" if self.noise_dims == 1 else f"-noise{self.noise_dims}") + (
            "" if self.topo is None else f"-topo-{self.topo}-{strength}") + (
            "" if self.control is None else f"-{self.control}")
        res = ("" if self.eval_points == self.points else f"-at{self.eval_points}") + ("-resampled" if self.resample
                                                                                        else "")
        return (f"{self.task}-{self.setting}-{rot}-{self.method}{init}-cpc{self.cpc}-p{self.points}{res}"
                f"-s{self.seed}-{self.model}")

    @property
    def set_unit(self) -> "Unit":
        """The unit that makes the set this one evaluates (another backbone's, resolution's or
        resampling's units share it)."""
        return replace(self, model="pointnet", eval_points=self.points, resample=False)

    @property
    def set_name(self) -> str:
        """The folder of the condensed set it evaluates."""
        return self.set_unit.name


def units(plan: Plan, table: int) -> list[Unit]:
    """The units of ``table`` (module docstring) under ``plan``, in the order they run; Table 8's
    follow from Table 7's results (:func:`cross_topo_units`)."""
    if table == 10:
        return control_units(plan)
    if table not in TABLES or table == 8:
        raise ValueError(f"table {table!r} is not one of {[t for t in TABLES if t != 8]} (Table 8: cross_topo_units)")
    p, cpc1, top = plan.points, plan.cpcs[0], plan.cpcs[-1]
    seeds = range(plan.distills)
    if table == 1:
        out = []
        for setting in ("aligned", "rotated"):
            out.append(Unit(1, "full", setting, 0, 0, p, p))
            for cpc in plan.cpcs:
                for method in ("random", "herding", "kcenter", *DISTILLATIONS):
                    if method == "tm" and cpc > TM_LARGEST_CPC:
                        continue
                    out += [Unit(1, method, setting, cpc, s, p, p) for s in seeds]
                if plan.draw_points is not None:
                    m = plan.draw_points
                    out += [Unit(1, "random", setting, cpc, s, m, m) for s in seeds]
                    out += [Unit(1, "dd3d", setting, cpc, s, p, m) for s in seeds]
        return out
    if table == 2:
        return [Unit(2, "full", "aligned", 0, 0, plan.part_points, plan.part_points, task="parts")] + [
            Unit(2, m, "aligned", cpc1, s, plan.part_points, plan.part_points, task="parts")
            for m in ("random", "gm", "dd3d") for s in seeds]
    if table == 3:
        return [unit for model in CROSS_MODELS for unit in (
            Unit(3, "full", "aligned", 0, 0, p, p, model=model),
            *(Unit(3, m, "aligned", top, s, p, p, model=model) for m in ("dm", "gm", "dd3d") for s in seeds))]
    if table == 4:
        return [Unit(4, "dd3d", "aligned", cpc1, s, low, p) for low in (*plan.low_points, p) for s in seeds]
    if table == 5:
        rows = (("rotated_raw", "none"), ("rotated_raw", "pca"), ("rotated", "fixed"), ("rotated", "learned"))
        return [Unit(5, "dd3d", setting, cpc1, s, p, p, rotator=rot) for setting, rot in rows for s in seeds]
    if table == 6:
        return [Unit(6, "gm", "aligned", cpc1, s, p, p, init=init) for init in ("noise", "real") for s in seeds] + [
            Unit(6, "dd3d", "aligned", cpc1, s, p, p, resample=resample) for resample in (False, True) for s in seeds]
    if table == 9:
        terms = [(None, 0.0), *((reading, w) for reading in topo_readings(cpc1, "parts") for w in plan.topo_weights)]
        return [Unit(9, method, "aligned", cpc1, s, plan.part_points, plan.part_points, task="parts", topo=topo,
                     topo_weight=weight) for method in TOPO_DISTILLATIONS for topo, weight in terms for s in seeds]
    out = []
    for setting in ("aligned", "rotated"):
        for cpc in plan.cpcs:
            for method in TOPO_DISTILLATIONS:
                out += [Unit(7, method, setting, cpc, s, p, p) for s in seeds]
                out += [Unit(7, method, setting, cpc, s, p, p, topo=reading, topo_weight=weight)
                        for reading in topo_readings(cpc, "classification") for weight in plan.topo_weights
                        for s in seeds]
    return out


def chosen_weight(rows: list[dict[str, Any]], plan: Plan, reading: str, **where: Any) -> tuple[float | None, bool]:
    """The weight of ``reading`` whose finished sets among ``rows`` (Table 7's, those ``where``
    selects) score the best mean validation OA (None: none scored), and whether the choice is
    final: every weight of the plan distilled at least ``plan.distills`` times and scored on validation."""
    scored = []
    for weight in plan.topo_weights:
        group = _grouped(rows, topo=reading, topo_weight=weight, **where)
        if group and not np.isnan(val := _val(group)):
            scored.append((weight, val, len(group)))
    chosen = max(scored, key=lambda item: item[1])[0] if scored else None
    final = len(scored) == len(plan.topo_weights) and all(n >= plan.distills for _, _, n in scored)
    return chosen, final


def cross_topo_units(plan: Plan, rows: list[dict[str, Any]], required: tuple[str, ...]) -> list[Unit]:
    """Table 8's units (module docstring) from Table 7's finished ``rows``: each reading whose
    weight is final (:func:`chosen_weight`) at the largest CPC, aligned; ValueError naming them
    where a reading of a method of ``required`` (those the table is to run) is not final yet."""
    p, top, seeds = plan.points, plan.cpcs[-1], range(plan.distills)
    terms: dict[str, list[tuple[str | None, float]]] = {}
    missing = []
    for method in TOPO_DISTILLATIONS:
        terms[method] = [(None, 0.0)]
        for reading in topo_readings(top, "classification"):
            weight, final = chosen_weight(rows, plan, reading, setting="aligned", cpc=top, method=method)
            if final:
                terms[method].append((reading, weight))
            elif method in required:
                missing.append(f"{method} {reading}")
    if missing:
        raise ValueError(f"Table 8 evaluates the sets of the weight Table 7 chooses on validation, and Table 7 "
                         f"(aligned, CPC {top}) has not finished every weight of {', '.join(missing)}: run "
                         "--tables 7 first (or with 8)")
    return [unit for model in CROSS_MODELS for unit in (
        Unit(8, "full", "aligned", 0, 0, p, p, model=model),
        *(Unit(8, method, "aligned", top, s, p, p, model=model, topo=topo, topo_weight=weight)
          for method in TOPO_DISTILLATIONS for topo, weight in terms[method] for s in seeds))]


def control_units(plan: Plan) -> list[Unit]:
    """Table 10's units (module docstring), a CPC at a time: each method's sets without the term
    (Table 1's and 7's), then each reading at each ratio with the term and with each control in its
    place; DD3D's surfaces without and with the term."""
    p, seeds = plan.points, range(plan.distills)
    out = []
    for cpc in plan.cpcs:
        for method, dims in (("gm", 1), ("dd3d", 1), ("dd3d", SURFACE_DIMS)):
            out += [Unit(10, method, "aligned", cpc, s, p, p, noise_dims=dims) for s in seeds]
            for reading in topo_readings(cpc, "classification"):
                for ratio in plan.topo_ratios:
                    out += [Unit(10, method, "aligned", cpc, s, p, p, topo=reading, topo_ratio=ratio, control=control,
                                 noise_dims=dims)
                            for control in ((None, *CONTROLS) if dims == 1 else (None,)) for s in seeds]
    return out


def topo_readings(cpc: int, task: str) -> tuple[str, ...]:
    """The persistence term's readings Tables 7 and 9 run at ``cpc`` on ``task``: those that act
    there (:func:`reading_acts`: the feature readings from 3 clouds a class), and part sets take
    :data:`PART_READINGS`."""
    readings = PART_READINGS if task == "parts" else READINGS
    return tuple(r for r in readings if reading_acts(r, cpc))


def _data(plan: Plan, unit: Unit, points: int) -> DataSpec:
    return DataSpec(plan.dataset, plan.root, unit.setting, unit.task, size=plan.size, points=points)


def _condense(plan: Plan, unit: Unit, folder: Path, info: DistInfo) -> dict[str, float]:
    """Make the unit's set in ``folder`` (its condensed.npz); the seconds it took: a distillation's
    over every segment of a stopped and resumed run, as its checkpoint counts them
    (:class:`train.condense.files.distill_checkpoint.RunSeconds`), else (a coreset, or a
    checkpoint that predates the count) this call's."""
    start = time.perf_counter()
    spec = DistillSpec(iterations=plan.iterations, init=unit.init, resume=RESUME_MATCHING,  # a stopped unit goes on
                       topo=unit.topo, topo_weight=unit.topo_weight, topo_ratio=unit.topo_ratio, control=unit.control,
                       noise_dims=unit.noise_dims)
    cset = condense_set(_data(plan, unit, unit.points), unit.method, unit.cpc, unit.seed, plan.recipe_of(unit),
                        folder / CACHE_NAME, info, distill=spec, rotator=unit.rotator)
    seconds = time.perf_counter() - start
    if info.is_main and unit.method in DISTILLATIONS and (counted := saved_seconds(folder / CHECKPOINT_NAME)) is not None:
        seconds = counted
    if info.is_main:
        write_condensed(cset, folder)
    barrier()  # every rank reads the set next: none before the main rank has written it
    return {"condense_seconds": seconds}


def _evaluated_set(unit: Unit, folder: Path) -> CondensedSet:
    """The set a unit trains on: its set's file, or (another resolution) its generator's draw."""
    if unit.eval_points == unit.points:
        return read_condensed(folder / "condensed.npz")
    return redrawn(folder, unit.eval_points, unit.seed)


def _result_path(out: Path, unit: Unit) -> Path:
    """Where a unit's result is written last, when it is finished."""
    return out / "units" / unit.name / "result.json"


def _read_result(plan: Plan, unit: Unit, path: Path) -> dict[str, Any]:
    """A finished unit's result, as this table names the unit; ValueError naming the file where
    it records another recipe than the plan's (a result from before recipes were recorded is read
    as it is)."""
    result = {**json.loads(path.read_text()), "unit": asdict(unit)}
    kept, wanted = result.get("recipe"), plan.recipe_of(unit).record()
    if kept is not None and kept != wanted:
        raise ValueError(f"{path} was evaluated with the {kept.get('recipe')} recipe {kept}, this study's is "
                         f"{wanted}: study into another --out, or delete {path.parent} to redo it")
    return result


@dataclass(frozen=True)
class UnitClouds:
    """What a unit trains on and is scored on, in its frame: the training clouds (its set, drawn
    again at the evaluation's resolution or afresh at every use where the unit says so, or the full
    ``train`` split), the ``test`` split and the validation clouds (None: a split too small to hold
    one out)."""

    train: Clouds
    test: ObjectSet
    val: Clouds | None


def unit_clouds(plan: Plan, unit: Unit, out: Path, info: DistInfo) -> UnitClouds:
    """The clouds of ``unit`` of the study in ``out`` (its set already made there, unless the unit
    trains on the full split): what :func:`run_unit` evaluates, for a script that trains them again."""
    data = _data(plan, unit, unit.eval_points)
    set_folder = out / "units" / unit.set_name
    cset = None if unit.method == "full" else _evaluated_set(unit, set_folder)
    frame = Rotator(rotator_kind(unit.setting, unit.rotator)) if cset is None else rotator_of(cset.provenance["frame"])
    test = in_frame(data.load("test"), frame)
    try:
        val: Clouds | None = clouds_of(in_frame(data.load("val"), frame))
    except EmptySplitError:  # a set too small to hold one out: no validation scores
        val = None
    if cset is None:
        return UnitClouds(clouds_of(in_frame(data.load("train"), frame)), test, val)
    train = condensed_clouds(cset, test, str(set_folder))
    if unit.resample:
        train = resampled(train, cset, set_folder / "condensed.npz", info.device)
    return UnitClouds(train, test, val)


def run_unit(plan: Plan, unit: Unit, out: Path, info: DistInfo, place: str) -> dict[str, Any]:
    """The unit's result (module docstring), read when it is there, else made and written, its
    ``place`` in the study (e.g. ``Table 1, unit 3 of 28``) and name said as it starts."""
    result_path = _result_path(out, unit)
    if result_path.exists():  # finished, perhaps as another table's unit of the same name
        return _read_result(plan, unit, result_path)
    if info.is_main:
        print(f"study: {place}: {unit.name}", file=sys.stderr, flush=True)
    cost: dict[str, float] = {}
    set_folder = out / "units" / unit.set_name
    if unit.method != "full" and not (set_folder / "condensed.npz").exists():
        cost = _condense(plan, unit.set_unit, set_folder, info)
    clouds = unit_clouds(plan, unit, out, info)
    recipe = plan.recipe_of(unit)
    runs = evaluate_runs(clouds.train, clouds_of(clouds.test), recipe, plan.runs, 0, info, desc=unit.name,
                         val=clouds.val)
    result = {"unit": asdict(unit), "recipe": recipe.record(), "runs": runs, **cost}
    if info.is_main:
        atomic_write(json.dumps(result, indent=1).encode(), result_path)
    return result


def _by_seed(results: list[dict[str, Any]], best: bool = False) -> dict[int, list[dict[str, float]]]:
    """A cell's scores grouped by distillation seed: each run's last-step scores, or its best test
    epoch's (``best``; runs without one left out)."""
    groups: dict[int, list[dict[str, float]]] = {}
    for result in results:
        runs = [run[BEST] if best else run for run in result["runs"] if not best or BEST in run]
        if runs:
            groups.setdefault(result["unit"]["seed"], []).extend(runs)
    return groups


def _cell(results: list[dict[str, Any]], task: str, best: bool = False) -> str:
    """``"64.5 ± 52.7 [60.4 / 68.7] (mAcc 63.0)"``: over several distillations the mean, the 95% t
    interval over their means and each one's mean, the second score's mean; one set's cell the
    mean ± interval over its runs (:func:`format_summary`)."""
    groups = _by_seed(results, best)
    if len(groups) < 2:
        return format_summary(summarise(next(iter(groups.values()))), task) if groups else "-"
    first, second = (two_level([[100.0 * run[key] for run in runs] for runs in groups.values()])
                     for key in SCORES[task])
    return f"{format_two_level(first)} ({LABELS[SCORES[task][1]]} {second.mean:.1f})"


def _paired_gain(ours: list[dict[str, Any]], base: list[dict[str, Any]], task: str) -> PairedGain | None:
    """The first score (%) of ``ours`` minus that of ``base``, paired by seed (None: no seed in common)."""
    first = SCORES[task][0]
    a, b = ({seed: [100.0 * run[first] for run in runs] for seed, runs in _by_seed(group).items()}
            for group in (ours, base))
    return paired_gain(a, b) if set(a) & set(b) else None


def _paired(ours: list[dict[str, Any]], base: list[dict[str, Any]], task: str) -> str:
    """``"+3.1 ± 20.0 (s0 +2.0, s1 +4.2)"``: :func:`_paired_gain` formatted, ``-`` without a seed in common."""
    gain = _paired_gain(ours, base, task)
    return "-" if gain is None else format_gain(gain)


def _gain(results: list[dict[str, Any]], task: str, method: str, **where: Any) -> str:
    """``method``'s gain over Random's draw of the same seed (:func:`_paired`)."""
    return _paired(_grouped(results, method=method, **where), _grouped(results, method="random", **where), task)


def _val(results: list[dict[str, Any]]) -> float:
    """The mean validation score (%) of the results' runs, their task's first (OA, instance mIoU);
    NaN where none was scored on validation."""
    scores = [100.0 * run[VAL][SCORES[result["unit"]["task"]][0]] for result in results for run in result["runs"]
              if VAL in run]
    return float(np.mean(scores)) if scores else float("nan")


def _topo_rows(rows: list[dict[str, Any]], plan: Plan, setting: str, cpc: int, method: str, task: str,
               held_out: bool) -> list[str]:
    """Table 7's (9's) lines of ``method`` at ``setting`` and ``cpc``: without the term, then each
    reading at each weight, the weight of the best validation score marked (among those finished);
    ``held_out``: with the gaps to the test split's clouds."""
    where = {"setting": setting, "cpc": cpc, "method": method}
    base = _grouped(rows, topo=None, **where)
    lines = []

    def line(name: str, group: list[dict[str, Any]]) -> str:
        gain = _paired(group, base, task) if group is not base else "-"
        val = _val(group)
        return (f"| {setting} | {cpc} | {TITLES[method]} | {name} | {'-' if np.isnan(val) else f'{val:.1f}'} | "
                f"{_cell(group, task)} | {gain} | {_gaps(group, held_out)} |")
    if base:
        lines.append(line("none", base))
    for reading in topo_readings(cpc, task):
        done = [(w, group) for w in plan.topo_weights if (group := _grouped(rows, topo=reading, topo_weight=w, **where))]
        if not done:
            continue
        chosen, final = chosen_weight(rows, plan, reading, **where)
        scored = sum(not np.isnan(_val(group)) for _, group in done)
        note = "chosen on val" if final else f"best val of {scored} weights so far"
        lines += [line(f"{reading}, w {w:g}" + (f" ({note})" if w == chosen else ""), group) for w, group in done]
    return lines


def _missing_note(rows: list[dict[str, Any]]) -> str:
    """A sentence naming the classes some set's held-out gaps left out (the test split has no cloud
    of them), or nothing."""
    missing = sorted({name for row in rows for name in row.get("shape", {}).get(HELD_OUT, {}).get("missing", [])})
    return f" The held-out gaps leave out the classes the test split has no cloud of: {', '.join(missing)}." if missing else ""


def _gaps(group: list[dict[str, Any]], held_out: bool) -> str:
    """The mean Chamfer and diagram gaps of the group's sets (and, ``held_out``, to the test split's clouds)."""
    shapes = [g["shape"] for g in group if "shape" in g]
    held = [s[HELD_OUT] for s in shapes if HELD_OUT in s]
    return " | ".join(f"{np.mean([g[k] for g in found]):.4f}" if found else "-"
                      for found in (shapes, held)[:1 + held_out] for k in ("chamfer", "diagram"))


def _control_groups(rows: list[dict[str, Any]], method: str, dims: int, **where: Any) -> list[dict[str, Any]]:
    return [r for r in _grouped(rows, method=method, **where) if r["unit"].get("noise_dims", 1) == dims]


def _control_table(plan: Plan, rows: list[dict[str, Any]]) -> list[str]:
    """Table 10 (module docstring): per CPC, method and generator the set without the term, then each
    reading at each ratio with the term and each control in its place, with the gain over no term
    and the term's score minus the control's, paired by seed; then the same differences pooled over
    every CPC and ratio: a seed's cells share its start and its real batches, so the seed is the
    unit, its differences averaged over the cells and the interval taken over seeds, beside how many
    of the pairs are above zero."""
    held_out = any(HELD_OUT in row.get("shape", {}) for row in rows)
    lines = ["", "### Table 10: the persistence term against its non-topological controls (decisions 101 and 102; "
             "not the paper's)", "",
             "Aligned. The term's strength r is its gradient norm on the synthetic parameters over the matching "
             "distance's, held at every class's step; a control (chamfer: to the nearest real cloud of the batch; "
             "start: to the cloud's start) takes the term's place at the same norm. Gains paired by distillation "
             "seed; gaps as Table 7's" + (", then against the held-out test split." if held_out else ".")
             + _missing_note(rows), "",
             "| CPC | method | row | test OA | gain over no term | term minus this control | Chamfer | diagram gap |"
             + (" held-out Chamfer | held-out diagram gap |" if held_out else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|---|" if held_out else "")]
    pooled: dict[tuple[str, str, str], dict[int, list[float]]] = {}
    for cpc in plan.cpcs:
        for method, dims in (("gm", 1), ("dd3d", 1), ("dd3d", SURFACE_DIMS)):
            title = TITLES[method] + ("" if dims == 1 else f", {dims} noise scalars a point")
            base = _control_groups(rows, method, dims, cpc=cpc, topo=None)
            if base:
                lines.append(f"| {cpc} | {title} | none | {_cell(base, 'classification')} | - | - | "
                             f"{_gaps(base, held_out)} |")
            for reading in topo_readings(cpc, "classification"):
                for ratio in plan.topo_ratios:
                    cell = _control_groups(rows, method, dims, cpc=cpc, topo=reading, topo_ratio=ratio)
                    term = [r for r in cell if r["unit"].get("control") is None]
                    for control in (None, *CONTROLS):
                        group = [r for r in cell if r["unit"].get("control") == control]
                        if not group:
                            continue
                        over_none = _paired_gain(group, base, "classification")
                        versus = _paired_gain(term, group, "classification") if control else None
                        name = f"{reading}, r {ratio:g}" if control is None else f"{control} control, r {ratio:g}"
                        gain, minus = ("-" if g is None else format_gain(g) for g in (over_none, versus))
                        lines.append(f"| {cpc} | {title} | {name} | {_cell(group, 'classification')} | {gain} | "
                                     f"{minus} | {_gaps(group, held_out)} |")
                        paired = over_none if control is None else versus  # the term over no term, or over this control
                        if paired is not None:
                            key = (title, reading, "no term" if control is None else f"{control} control")
                            for seed, diff in paired.by_seed.items():
                                pooled.setdefault(key, {}).setdefault(seed, []).append(diff)
    if pooled:
        lines += ["", "Pooled over every CPC and ratio: the term's gain over no term, and the term's OA minus each "
                  "control's; a seed's differences averaged over its cells, the interval over seeds (a seed's cells "
                  "share its start and batches), and how many of the pairs (a seed of a cell) are above zero.", "",
                  "| method | reading | against | seeds | mean ± 95% interval over seeds (OA points) | pairs above zero |",
                  "|---|---|---|---|---|---|"]
        for (title, reading, against), by_seed in pooled.items():
            mean, half = mean_ci([np.mean(diffs) for diffs in by_seed.values()])
            pairs = [d for diffs in by_seed.values() for d in diffs]
            lines.append(f"| {title} | {reading} | {against} | {len(by_seed)} | {format_mean(mean, half, '+')} | "
                         f"{sum(d > 0 for d in pairs)} of {len(pairs)} |")
    return lines


def _has_best(results: list[dict[str, Any]]) -> bool:
    return any(BEST in run for result in results for run in result["runs"])


def _grouped(results: list[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    return [r for r in results if all(r["unit"][k] == v for k, v in where.items())]


def _row_name(table: int, row: dict[str, Any]) -> str:
    """A row of Tables 2, 4, 5 and 6: the method and what sets it apart there."""
    extra = {2: "", 4: f", distilled at {row['points']} points", 5: f", {row['setting']}, rotator {row['rotator']}",
             6: f", init {row['init']}" if row["method"] == "gm" else ", resampled" if row["resample"] else ""}
    return TITLES[row["method"]] + extra[table]


def _drawn_rows(plan: Plan, drawn: list[dict[str, Any]]) -> list[str]:
    """Table 1's section at :attr:`Plan.draw_points` (none without its units): Random's draw at that
    resolution, DD3D's sets distilled at :attr:`Plan.points` drawn at it, and DD3D's gain paired by seed."""
    if not drawn:
        return []
    m = drawn[0]["unit"]["eval_points"]
    lines = ["", f"### Table 1 at {m} points: DD3D distilled at {plan.points} points and drawn at {m}, against "
             f"Random's draw of {m}-point clouds", "",
             f"| setting | CPC | Random at {m} | DD3D drawn at {m} | DD3D's gain over Random (paired by seed) |",
             "|---|---|---|---|---|"]
    for setting in ("aligned", "rotated"):
        for cpc in plan.cpcs:
            rows = _grouped(drawn, setting=setting, cpc=cpc)
            if rows:
                cells = [_cell(_grouped(rows, method=method), "classification") for method in ("random", "dd3d")]
                lines.append(f"| {setting} | {cpc} | {' | '.join(cells)} | {_gain(rows, 'classification', 'dd3d')} |")
    return lines


COMPARISON = ("the best test epoch's scores (the released code's number: the model chosen on the test split), "
              "for comparison with the paper's numbers only")


def report(plan: Plan, results: dict[int, list[dict[str, Any]]]) -> str:
    """The tables of the finished units as markdown (module docstring; percent); where the recipe
    scored the test split after its passes, the best test epoch's tables apart, so labelled."""
    recipes = plan.recipe.describe() + ("" if plan.part_recipe == plan.recipe else
                                        f"; part segmentation: {plan.part_recipe.describe()}")
    iterations = plan.iterations or (f"the released {iterations_for(plan.dataset, 'classification')} (parts "
                                     f"{iterations_for(plan.dataset, 'parts')})")
    size = "" if plan.size is None else f" (size {plan.size})"
    parts = f" ({plan.part_points} for part segmentation)" if results.get(2) or results.get(9) else ""
    lines = [f"Data: {plan.dataset}{size}, {plan.points} points{parts}; {iterations} outer iterations; each method "
             f"distilled {plan.distills} times (seeds 0..{plan.distills - 1}), each set evaluated {plan.runs} times "
             f"({recipes}); test split, last step. OA % (mAcc %) or instance mIoU % (class mIoU %). A cell of "
             "several distillations: mean ± the 95% t interval over the distillations' means (it holds the "
             "training runs' variance; with 2 distillations t is 12.7, so the interval is wide), [each "
             "distillation's mean], (the second score's mean); a cell of one set (the full set): mean ± the 95% "
             "interval over its runs. Gains over Random are paired by seed (GM, DM and TM start from Random's "
             "draw of that seed; DD3D shares only the seed)."]
    t = [r for r in results.get(1, []) if r["unit"]["eval_points"] == plan.points]
    for best in (False, True):
        if not t or (best and not _has_best(t)):
            continue
        methods = [m for m in TITLES if _grouped(t, method=m)]
        title = "Table 1: classification" + (f", {COMPARISON}" if best else "")
        lines += ["", "### " + title, "",
                  f"| setting | CPC | {' | '.join(TITLES[m] for m in methods)} |", "|---|---|" + "---|" * len(methods)]
        for setting in ("aligned", "rotated"):
            for cpc in plan.cpcs:
                cells = [_cell(_grouped(t, setting=setting, method=m, cpc=0 if m == "full" else cpc), "classification",
                               best) for m in methods]
                lines.append(f"| {setting} | {cpc} | {' | '.join(cells)} |")
    if t:
        gained = [m for m in DISTILLATIONS if _grouped(t, method=m)]
        lines += ["", "### Table 1's gains over Random's draw of the same seed (OA points; per seed)", "",
                  f"| setting | CPC | {' | '.join(TITLES[m] for m in gained)} |", "|---|---|" + "---|" * len(gained)]
        for setting in ("aligned", "rotated"):
            for cpc in plan.cpcs:
                cells = [_gain(t, "classification", m, setting=setting, cpc=cpc) for m in gained]
                lines.append(f"| {setting} | {cpc} | {' | '.join(cells)} |")
    lines += _drawn_rows(plan, [r for r in results.get(1, []) if r["unit"]["eval_points"] != plan.points])
    simple = {2: ("Table 2: part segmentation, CPC {cpc}", "parts"),
              4: ("Table 4: DD3D distilled at fewer points, evaluated at {points}", "classification"),
              5: ("Table 5: the rotator, DD3D on the rotated set, CPC {cpc}", "classification"),
              6: ("Table 6: explicit clouds against the generator, CPC {cpc}", "classification")}
    for table, (title, task) in simple.items():
        rows = results.get(table)
        if not rows:
            continue
        best = _has_best(rows)
        lines += ["", "### " + title.format(cpc=plan.cpcs[0], points=plan.points), "",
                  "| row | score | condense s |" + (" best test epoch* |" if best else ""),
                  "|---|---|---|" + ("---|" if best else "")]
        seen: list[dict[str, Any]] = []
        for r in rows:  # a row a distinct unit but its seed
            row = {k: v for k, v in r["unit"].items() if k not in ("seed", "table")}
            if row not in seen:
                seen.append(row)
        for row in seen:
            group = _grouped(rows, **row)
            seconds = [g["condense_seconds"] for g in group if "condense_seconds" in g]
            cost = f"{np.mean(seconds):.0f}" if seconds else "-"
            extra = f" {_cell(group, task, True)} |" if best else ""
            lines.append(f"| {_row_name(table, row)} | {_cell(group, task)} | {cost} |{extra}")
        if best:
            lines += ["", f"\\* {COMPARISON}."]
        if table == 2:
            gains = [f"{TITLES[m]} {_gain(rows, task, m)}" for m in ("gm", "dd3d") if _grouped(rows, method=m)]
            lines += ["", "Gains over Random's draw of the same seed (instance mIoU points): " + "; ".join(gains) + "."]
    if t:
        lines += ["", "### Seconds to condense (Table 1's sets, this machine; a set shared with another row "
                  "counted once)", "", f"| setting | CPC | {' | '.join(TITLES[m] for m in DISTILLATIONS)} |",
                  "|---|---|" + "---|" * len(DISTILLATIONS)]
        for setting in ("aligned", "rotated"):
            for cpc in plan.cpcs:
                cells = []
                for m in DISTILLATIONS:
                    seconds = [g["condense_seconds"] for g in _grouped(t, setting=setting, method=m, cpc=cpc)
                               if "condense_seconds" in g]
                    cells.append(f"{np.mean(seconds):.0f}" if seconds else "-")
                lines.append(f"| {setting} | {cpc} | {' | '.join(cells)} |")
    topo_tables = {7: ("Table 7: the persistence term in gradient matching (decision 96; not the paper's)",
                       "classification", ("aligned", "rotated"), plan.cpcs),
                   9: ("Table 9: the persistence term on part segmentation, the shape reading per part (decision 96; "
                       "not the paper's)", "parts", ("aligned",), plan.cpcs[:1])}
    for table, (title, task, settings, cpcs) in topo_tables.items():
        rows = results.get(table)
        if not rows:
            continue
        score = LABELS[SCORES[task][0]]
        held_out = any(HELD_OUT in row.get("shape", {}) for row in rows)  # studies kept before it: without
        lines += ["", f"### {title}", "",
                  f"Validation {score} (mean of every run) chooses the weight; the gain is the test {score}'s over "
                  "the same method without the term, paired by distillation seed. Chamfer: to the nearest real "
                  "cloud of the class, in the unit sphere; diagram: PWCD (H0 + H1) to the nearest real diagram "
                  "(train.condense.studies.shape_gap); both means over the set's clouds" + (
                      ", against the training split the set was made from and against the held-out test split."
                      if held_out else ".") + _missing_note(rows), "",
                  f"| setting | CPC | method | term | val {score} | test {score} | gain over no term | Chamfer | "
                  "diagram gap |" + (" held-out Chamfer | held-out diagram gap |" if held_out else ""),
                  "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if held_out else "")]
        for setting in settings:
            for cpc in cpcs:
                for method in TOPO_DISTILLATIONS:
                    lines += _topo_rows(rows, plan, setting, cpc, method, task, held_out)
    rows = results.get(8)
    if rows:
        lines += ["", f"### Table 8: the persistence term across backbones (Table 7's sets, aligned, CPC {plan.cpcs[-1]})",
                  "", "Each reading at the weight Table 7 chose on validation (PointNet); every backbone trained with "
                  "the study's recipe; the gain is the test OA's over the same method without the term, paired by "
                  "distillation seed.", "", f"| method | term | {' | '.join(CROSS_MODELS)} |",
                  "|---|---|" + "---|" * len(CROSS_MODELS)]
        for method in (*TOPO_DISTILLATIONS, "full"):
            terms = sorted({(r["unit"]["topo"] or "", r["unit"]["topo_weight"]) for r in _grouped(rows, method=method)})
            for topo, weight in terms:
                where = {"method": method, "topo": topo or None, "topo_weight": weight}
                name = f"{topo}, w {weight:g}" if topo else "none"
                cells = [_cell(_grouped(rows, model=model, **where), "classification") for model in CROSS_MODELS]
                lines.append(f"| {TITLES[method]} | {name} | {' | '.join(cells)} |")
                if topo:
                    gains = [_paired(_grouped(rows, model=model, **where),
                                     _grouped(rows, model=model, method=method, topo=None), "classification")
                             for model in CROSS_MODELS]
                    lines.append(f"| {TITLES[method]} | gain of {name} | {' | '.join(gains)} |")
    if results.get(10):
        lines += _control_table(plan, results[10])
    rows = results.get(3)
    for best in (False, True):
        if not rows or (best and not _has_best(rows)):
            continue
        lines += ["", f"### Table 3: cross-architecture, aligned, CPC {plan.cpcs[-1]}"
                  + (f", {COMPARISON}" if best else ""), "",
                  f"| method | {' | '.join(CROSS_MODELS)} |", "|---|" + "---|" * len(CROSS_MODELS)]
        for method in ("dm", "gm", "dd3d", "full"):
            cells = [_cell(_grouped(rows, method=method, model=model), "classification", best)
                     for model in CROSS_MODELS]
            lines.append(f"| {TITLES[method]} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def plan_of(record: dict[str, Any]) -> Plan:
    """The plan a ``study.json``'s ``plan`` holds; one written before recipes had names (its one
    recipe's steps, lr, batch) reads as the cpu recipe with those values for both tasks."""
    fields = {**record}
    recipe = TrainSpec(**fields.pop("recipe"))
    part = TrainSpec(**fields.pop("part_recipe", recipe.record()))
    return Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}, recipe=recipe,
                part_recipe=part)


@dataclass(frozen=True)
class Selection:
    """Which of a table's units a study runs: those of ``methods``, ``settings``, persistence
    ``terms`` (a reading, or ``none`` for the units without the term), the term's ``topo_weights``
    (of :data:`TOPO_WEIGHTS`) and ``topo_ratios`` (of :data:`TOPO_RATIOS`; units without the term,
    or with the other kind of strength, are not selected by either), and ``controls`` (``term``
    for the term itself, or a control of :data:`CONTROLS`; units without the term are not selected
    by it); empty: every one. The others are read where finished. A unit's result does not depend
    on it."""

    methods: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()
    terms: tuple[str, ...] = ()
    topo_weights: tuple[float, ...] = ()
    topo_ratios: tuple[float, ...] = ()
    controls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, given, known in (("methods", self.methods, tuple(TITLES)), ("settings", self.settings, SETTINGS),
                                   ("terms", self.terms, ("none", *READINGS)),
                                   ("topo-weights", self.topo_weights, TOPO_WEIGHTS),
                                   ("topo-ratios", self.topo_ratios, TOPO_RATIOS),
                                   ("controls", self.controls, ("term", *CONTROLS))):
            if bad := sorted(set(given) - set(known)):
                raise ValueError(f"--{name} {bad} are not among {list(known)}")

    def describe(self) -> str:
        """The selection's fields that were given, as options (``every unit`` when none)."""
        given = [f"--{name} {' '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in values)}"
                 for name, values in (("methods", self.methods), ("settings", self.settings), ("terms", self.terms),
                                      ("topo-weights", self.topo_weights), ("topo-ratios", self.topo_ratios),
                                      ("controls", self.controls)) if values]
        return ", ".join(given) or "every unit"

    def takes_method(self, method: str) -> bool:
        return not self.methods or method in self.methods

    def takes(self, unit: Unit) -> bool:
        return (self.takes_method(unit.method) and (not self.settings or unit.setting in self.settings)
                and (not self.terms or (unit.topo or "none") in self.terms)
                and (not self.topo_weights or unit.topo is None
                     or (unit.topo_ratio is None and unit.topo_weight in self.topo_weights))
                and (not self.topo_ratios or unit.topo is None or unit.topo_ratio in self.topo_ratios)
                and (not self.controls or unit.topo is None or (unit.control or "term") in self.controls))


def _table_units(plan: Plan, table: int, results: dict[int, list[dict[str, Any]]],
                 required: tuple[str, ...]) -> list[Unit]:
    """``table``'s units; Table 8's from Table 7's ``results`` (refused where a method of
    ``required`` has a reading whose weight is not final)."""
    return cross_topo_units(plan, results.get(7, []), required) if table == 8 else units(plan, table)


def finished_units(plan: Plan, todo: list[Unit], out: Path) -> list[dict[str, Any]]:
    """The results of the units of ``todo`` that ``out`` holds finished (none is run)."""
    return [_read_result(plan, unit, path) for unit in todo if (path := _result_path(out, unit)).exists()]


def _with_shapes(plan: Plan, results: list[dict[str, Any]], out: Path, info: DistInfo) -> list[dict[str, Any]]:
    """``results`` each with its set's :func:`train.condense.studies.shape_gap.shape_gap` (``shape``)
    against the training split and, under :data:`HELD_OUT`, against the test split, measured once
    by the main rank (each split read once, the real diagrams shared by every set) and kept beside
    the set (``shape_gap.json``); a kept file without the held-out gaps gets them where its set is
    there; a set restored without its clouds keeps what it has, none where it was restored without
    gaps (a Table 1 unit restored from a kept study, read as Table 10's set without the term)."""
    paths = [out / "units" / Unit(**result["unit"]).set_name / SHAPE_NAME for result in results]
    if info.is_main:
        splits: dict[tuple[DataSpec, str], ObjectSet] = {}
        diagrams = RealDiagrams(DEFAULT_M)
        for result, path in zip(results, paths):
            kept = json.loads(path.read_text()) if path.exists() else {}
            if HELD_OUT in kept or not (path.parent / "condensed.npz").exists():
                continue
            unit = Unit(**result["unit"])
            data = _data(plan, unit, unit.points)
            cset = read_condensed(path.parent / "condensed.npz")

            def real(split: str) -> ObjectSet:  # the split in the set's frame, each split read once
                if (data, split) not in splits:
                    splits[data, split] = data.load(split)
                return in_frame(splits[data, split], rotator_of(cset.provenance["frame"]))
            gaps = kept or shape_gap(cset, real("train"), diagrams)  # a kept file's own gaps are not measured again
            atomic_write(json.dumps({**gaps, HELD_OUT: shape_gap(cset, real("test"), diagrams)}).encode(), path)
    barrier()  # every rank reads the gaps next
    return [{**result, **({"shape": json.loads(path.read_text())} if path.exists() else {})}
            for result, path in zip(results, paths)]


UNNAMED = ("dataset", "size", "iterations", "runs")  # what a unit's result depends on but its name does not hold


def check_plan(plan: Plan, out: Path) -> None:
    """ValueError in one line when ``out``'s ``study.json`` holds a plan that differs from ``plan``
    in a field of :data:`UNNAMED` (a unit's folder name holds its method, setting, rotator, CPC,
    seed, points and backbone, not these, so that study's finished units would be read as this
    one's); a field the kept plan lacks (written before it existed) is not compared."""
    path = out / "study.json"
    if not path.exists():
        return
    kept, wanted = json.loads(path.read_text()).get("plan", {}), asdict(plan)
    for field in UNNAMED:
        if field in kept and kept[field] != wanted[field]:
            raise ValueError(f"--out {out} holds a study of {field} {kept[field]!r} ({path}), this one's is "
                             f"{wanted[field]!r}: its finished units would be read as this study's; study into "
                             "another --out")


def run_study(plan: Plan, tables: tuple[int, ...], out: Path, info: DistInfo, select: Selection = Selection()) -> str:
    """Every unit of ``tables`` that ``select`` takes (finished ones read back), then the report of
    those and of every unit finished in ``out`` (a study run a table at a time reports them all), also
    written to ``<out>/STUDY.md`` with every result in ``<out>/study.json``; refused first when
    ``out`` holds another plan's study (:func:`check_plan`)."""
    check_plan(plan, out)
    if select.topo_weights and not any(table == 8 or any(u.topo for u in units(plan, table)) for table in tables):
        raise ValueError(f"--topo-weights selects among the persistence term's units; Table(s) "
                         f"{', '.join(map(str, tables))} have none (the term's tables: 7, 8, 9): leave it out")
    if (select.topo_ratios or select.controls) and 10 not in tables:
        raise ValueError(f"--topo-ratios and --controls select among Table 10's units; Table(s) "
                         f"{', '.join(map(str, tables))} have none: leave them out, or give --tables 10")
    results: dict[int, list[dict[str, Any]]] = {}
    ran = 0
    for table in TABLES:  # in order: Table 8's units follow from Table 7's results
        run = table in tables
        required = tuple(m for m in TOPO_DISTILLATIONS if select.takes_method(m)) if run else ()
        todo = _table_units(plan, table, results, required)
        taken = [run and select.takes(unit) for unit in todo]
        chosen = [unit for unit, take in zip(todo, taken) if take]
        ran += len(chosen)
        results[table] = [run_unit(plan, unit, out, info, f"Table {table}, unit {k} of {len(chosen)}")
                          for k, unit in enumerate(chosen, 1)] + finished_units(
                              plan, [unit for unit, take in zip(todo, taken) if not take], out)
    if not ran:  # no unit ran, nothing is written: the folder is not tied to this call's plan (decision 99)
        raise ValueError(f"the selection takes no unit of Table(s) {', '.join(map(str, tables))} under this plan "
                         f"({select.describe()}): check --methods, --settings, --terms, --topo-weights, --cpcs and "
                         "--tables (docs/condense.md lists which table has which units)")
    results = {table: rows for table, rows in results.items() if rows}
    for table in TERM_TABLES:
        if table in results:
            results[table] = _with_shapes(plan, results[table], out, info)
    text = report(plan, results)
    if info.is_main:
        atomic_write(json.dumps({"plan": asdict(plan), "results": results}, indent=1).encode(), out / "study.json")
        atomic_write(text.encode(), out / "STUDY.md")
    return text
