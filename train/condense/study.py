"""The DD3D study (paper Sec. 5): Tables 1-6 as units of work, each a condensed set and
its evaluation, run by ``python -m train.condense study`` (``docs/condense.md``, decision 87).

A :class:`Plan` fixes the data set, the resolutions, the CPCs, the iterations, how many times a
method is distilled (seeds 0, 1, ...) and how many runs evaluate each set; :data:`PRESETS` holds
the paper's budget (``paper``, tens of GPU-hours) and one that fits a 2-core CPU (``cpu``; the hours
of each, decision 87). :func:`units` lists a table's :class:`Unit` s:

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
   DD3D's set evaluated on fresh draws of its generator (``evaluate --resample``, decision 85).

A unit writes ``<out>/units/<name>/`` (the set, the generator, the feature network's cache) and
``result.json`` last: the scores of every evaluation run and the seconds the condensation took
(its memory is measured in a fresh process each by ``benchmarks/cpu/distill_cost.py``). Units of
different tables that name the same set share it (Table 6's DD3D is Table 1's). A finished unit
is never run again, so a stopped study goes on where it stopped. :func:`report` makes the tables
(mean and 95% interval over every run of every distillation, the full set beside) from the results
of the tables run and of every unit finished in the folder before.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from train.condense.condensed_file import CondensedSet, read_condensed, write_condensed
from train.condense.data import DataSpec, clouds_of, condensed_clouds, in_frame
from train.condense.dd3d import redrawn
from train.condense.features import CACHE_NAME
from train.condense.matching_loops import DistillSpec
from train.condense.methods import DISTILLATIONS, condense_set
from train.condense.metrics import SCORES, summarise
from train.condense.protocol import evaluate_runs, format_summary
from train.condense.resample import resampled
from train.condense.rotator import Rotator, rotator_kind, rotator_of
from train.condense.training import TrainSpec
from train.runtime.distributed import DistInfo, barrier
from train.runtime.files import atomic_write

TABLES = (1, 2, 3, 4, 5, 6)
TITLES = {"random": "Random", "herding": "Herding", "kcenter": "K-Center", "gm": "GM", "dm": "DM", "tm": "TM (miniature)",
          "dd3d": "DD3D", "full": "full set"}
CROSS_MODELS = ("pointnet", "pointnet2", "dgcnn", "pct", "pointmlp", "pointnext", "ptv3_student")
TM_LARGEST_CPC = 10  # the paper's Table 1 has no TM at CPC 50


@dataclass(frozen=True)
class Plan:
    """The study's budget: ``dataset`` (``root`` its download), clouds of ``points`` (Table 4's
    distilled at ``low_points``), ``cpcs`` of Table 1 (the others take the first), ``iterations``
    outer iterations of every distillation, each method distilled ``distills`` times, every set
    evaluated ``runs`` times with ``recipe``; ``size`` of a generated set."""

    dataset: str = "shapes"
    root: str | None = None
    points: int = 1024
    low_points: tuple[int, ...] = (256, 512)
    part_points: int = 2048
    cpcs: tuple[int, ...] = (1, 10, 50)
    iterations: int = 400
    distills: int = 2
    runs: int = 5
    recipe: TrainSpec = TrainSpec()
    size: int | None = None


PRESETS = {
    "paper": Plan(),
    # CPC 1, a tenth of the iterations, 64 points: hours of one core of the 2-core EPYC (decision 87)
    "cpu": Plan(points=64, low_points=(32,), part_points=128, cpcs=(1,), iterations=40, distills=2, runs=5,
                recipe=TrainSpec(steps=100)),
}


@dataclass(frozen=True)
class Unit:
    """One set and its evaluation: ``method`` on ``setting`` at ``cpc`` with ``seed``, distilled at
    ``points`` and evaluated at ``eval_points`` with ``model``; ``rotator`` None for the setting's,
    ``init`` of explicit clouds; ``task`` classification or parts; ``resample`` trains on fresh
    draws of a DD3D set's generator; ``table`` where it is reported."""

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

    @property
    def name(self) -> str:
        """The unit's folder: what makes its set, and what evaluates it."""
        rot = rotator_kind(self.setting, self.rotator)
        init = "" if self.init == "real" else f"-{self.init}"
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
    """The units of ``table`` (module docstring) under ``plan``, in the order they run."""
    if table not in TABLES:
        raise ValueError(f"table {table!r} is not one of {TABLES}")
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
    return [Unit(6, "gm", "aligned", cpc1, s, p, p, init=init) for init in ("noise", "real") for s in seeds] + [
        Unit(6, "dd3d", "aligned", cpc1, s, p, p, resample=resample) for resample in (False, True) for s in seeds]


def _data(plan: Plan, unit: Unit, points: int) -> DataSpec:
    return DataSpec(plan.dataset, plan.root, unit.setting, unit.task, size=plan.size, points=points)


def _condense(plan: Plan, unit: Unit, folder: Path, info: DistInfo) -> dict[str, float]:
    """Make the unit's set in ``folder`` (its condensed.npz); the seconds it took."""
    start = time.perf_counter()
    spec = DistillSpec(iterations=plan.iterations, init=unit.init)
    cset = condense_set(_data(plan, unit, unit.points), unit.method, unit.cpc, unit.seed, plan.recipe,
                        folder / CACHE_NAME, info, distill=spec, rotator=unit.rotator)
    seconds = time.perf_counter() - start
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


def _read_result(unit: Unit, path: Path) -> dict[str, Any]:
    """A finished unit's result, as this table names the unit."""
    return {**json.loads(path.read_text()), "unit": asdict(unit)}


def run_unit(plan: Plan, unit: Unit, out: Path, info: DistInfo) -> dict[str, Any]:
    """The unit's result (module docstring), read when it is there, else made and written."""
    result_path = _result_path(out, unit)
    if result_path.exists():  # finished, perhaps as another table's unit of the same name
        return _read_result(unit, result_path)
    test_data = _data(plan, unit, unit.eval_points)
    cost: dict[str, float] = {}
    if unit.method == "full":
        frame = Rotator(rotator_kind(unit.setting, unit.rotator))
        train = clouds_of(in_frame(test_data.load("train"), frame))
        test = in_frame(test_data.load("test"), frame)
    else:
        set_folder = out / "units" / unit.set_name
        if not (set_folder / "condensed.npz").exists():
            cost = _condense(plan, unit.set_unit, set_folder, info)
        cset = _evaluated_set(unit, set_folder)
        test = in_frame(test_data.load("test"), rotator_of(cset.provenance["frame"]))
        train = condensed_clouds(cset, test, str(set_folder))
        if unit.resample:
            train = resampled(train, cset, set_folder / "condensed.npz", info.device)
    recipe = replace(plan.recipe, model=unit.model)
    runs = evaluate_runs(train, clouds_of(test), recipe, plan.runs, 0, info, desc=unit.name)
    result = {"unit": asdict(unit), "runs": runs, **cost}
    if info.is_main:
        atomic_write(json.dumps(result, indent=1).encode(), result_path)
    return result


def _cell(results: list[dict[str, Any]], task: str) -> str:
    runs = [run for result in results for run in result["runs"]]
    return format_summary(summarise(runs), task) if runs else "-"


def _grouped(results: list[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    return [r for r in results if all(r["unit"][k] == v for k, v in where.items())]


def _row_name(table: int, row: dict[str, Any]) -> str:
    """A row of Tables 2, 4, 5 and 6: the method and what sets it apart there."""
    extra = {2: "", 4: f", distilled at {row['points']} points", 5: f", {row['setting']}, rotator {row['rotator']}",
             6: f", init {row['init']}" if row["method"] == "gm" else ", resampled" if row["resample"] else ""}
    return TITLES[row["method"]] + extra[table]


def report(plan: Plan, results: dict[int, list[dict[str, Any]]]) -> str:
    """The tables of the finished units as markdown: every cell the mean ± 95% interval (percent)
    over every evaluation run of every distillation (``distills`` x ``runs`` scores)."""
    lines = [f"Data: {plan.dataset}, {plan.points} points; {plan.iterations} outer iterations; each method "
             f"distilled {plan.distills} times (seeds 0..{plan.distills - 1}), each set evaluated {plan.runs} times "
             f"({plan.recipe.model}, {plan.recipe.steps} steps, lr {plan.recipe.lr}); test split, last step; mean "
             "± 95% interval over all of a cell's runs. OA % (mAcc %) or instance mIoU % (class mIoU %)."]
    t = results.get(1)
    if t:
        methods = [m for m in TITLES if _grouped(t, method=m)]
        lines += ["", "### Table 1: classification", "",
                  f"| setting | CPC | {' | '.join(TITLES[m] for m in methods)} |", "|---|---|" + "---|" * len(methods)]
        for setting in ("aligned", "rotated"):
            for cpc in plan.cpcs:
                cells = [_cell(_grouped(t, setting=setting, method=m, cpc=0 if m == "full" else cpc), "classification")
                         for m in methods]
                lines.append(f"| {setting} | {cpc} | {' | '.join(cells)} |")
    simple = {2: ("Table 2: part segmentation, CPC {cpc}", "parts"),
              4: ("Table 4: DD3D distilled at fewer points, evaluated at {points}", "classification"),
              5: ("Table 5: the rotator, DD3D on the rotated set, CPC {cpc}", "classification"),
              6: ("Table 6: explicit clouds against the generator, CPC {cpc}", "classification")}
    for table, (title, task) in simple.items():
        rows = results.get(table)
        if not rows:
            continue
        lines += ["", "### " + title.format(cpc=plan.cpcs[0], points=plan.points), "", "| row | score | condense s |",
                  "|---|---|---|"]
        seen: list[dict[str, Any]] = []
        for r in rows:  # a row a distinct unit but its seed
            row = {k: v for k, v in r["unit"].items() if k not in ("seed", "table")}
            if row not in seen:
                seen.append(row)
        for row in seen:
            group = _grouped(rows, **row)
            seconds = [g["condense_seconds"] for g in group if "condense_seconds" in g]
            cost = f"{np.mean(seconds):.0f}" if seconds else "-"
            lines.append(f"| {_row_name(table, row)} | {_cell(group, task)} | {cost} |")
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
    rows = results.get(3)
    if rows:
        lines += ["", f"### Table 3: cross-architecture, aligned, CPC {plan.cpcs[-1]}", "",
                  f"| method | {' | '.join(CROSS_MODELS)} |", "|---|" + "---|" * len(CROSS_MODELS)]
        for method in ("dm", "gm", "dd3d", "full"):
            cells = [_cell(_grouped(rows, method=method, model=model), "classification") for model in CROSS_MODELS]
            lines.append(f"| {TITLES[method]} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def finished_units(plan: Plan, table: int, out: Path) -> list[dict[str, Any]]:
    """The results of ``table``'s units that ``out`` holds finished (none is run)."""
    return [_read_result(unit, path) for unit in units(plan, table)
            if (path := _result_path(out, unit)).exists()]


def run_study(plan: Plan, tables: tuple[int, ...], out: Path, info: DistInfo) -> str:
    """Every unit of ``tables`` (finished ones read back), then the report of those and of every
    other table's units finished in ``out`` (a study run a table at a time reports them all), also
    written to ``<out>/STUDY.md`` with every result in ``<out>/study.json``."""
    results = {table: [run_unit(plan, unit, out, info) for unit in units(plan, table)] if table in tables
               else finished_units(plan, table, out) for table in TABLES}
    results = {table: rows for table, rows in results.items() if rows}
    text = report(plan, results)
    if info.is_main:
        atomic_write(json.dumps({"plan": asdict(plan), "results": results}, indent=1).encode(), out / "study.json")
        atomic_write(text.encode(), out / "STUDY.md")
    return text
