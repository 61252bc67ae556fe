"""The command ``python -m train.condense`` (``__main__`` calls :func:`main`): condense an object
data set into a file, evaluate a condensed set, or run the coreset table (``docs/condense.md``).

    python -m train.condense --dataset D --method M --cpc C [--setting aligned|rotated]
                             [--task classification|parts] [--rotator none|pca|fixed|learned] --out O
                             [--iterations N] [--init real|noise] [--resume]
    python -m train.condense evaluate --from O/condensed.npz|full [--dataset D] [--rotator R] [--model pointnet]
                                      [--runs 5]
    python -m train.condense evaluate --from O/condensed.npz --resample  # a dd3d set drawn afresh at every use
    python -m train.condense table --out O          # the embedded shapes set, CPC 1/10/50, both settings
    python -m train.condense sample --from O --points N --out F.npz   # a dd3d run's generator drawn again
    python -m train.condense show --from A.npz B.npz ... [--names ...] [--classes ...] --out F.png  # Figure 6
    python -m train.condense study --out O [--preset paper|cpu] [--tables 1 2 3 4 5 6] [--cpcs 1 10]  # the tables

Every form runs in one process, in ``--procs N`` local processes or under ``torchrun`` (the ranks
share each training step, :mod:`train.condense.training`), on ``--device`` (auto: CUDA when there
is one); the distillation methods gm, dm and dd3d (decisions 78-81) share the classes between
the ranks (decision 84), while tm, ``sample`` and ``show`` run in one process. Clouds are condensed
and evaluated in the rotator's frame (decision 86): ``--rotator`` of the condense form (default:
none aligned, fixed rotated) is written into the file, and ``evaluate`` puts its clouds in the
file's frame (``--rotator`` there only for ``--from full``). A refusal is one line, exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.run: idle OpenMP threads sleep

from train.condense.condensed_file import read_condensed, write_condensed  # noqa: E402
from train.condense.data import DataSpec, clouds_of, condensed_clouds, file_data, in_frame  # noqa: E402
from train.condense.dd3d import GeneratorFileError, redrawn  # noqa: E402
from train.condense.distill_checkpoint import CHECKPOINT_NAME  # noqa: E402
from train.condense.features import CACHE_NAME, FeatureCacheError  # noqa: E402
from train.condense.matching_loops import DistillSpec  # noqa: E402
from train.condense.methods import DISTILLATIONS, METHODS, TOPO_DISTILLATIONS, condense_set  # noqa: E402
from train.condense.pictures import draw_clouds  # noqa: E402
from train.condense.metrics import SCORES, summarise  # noqa: E402
from train.condense.protocol import LABELS, choose_recipe, evaluate_runs, format_summary  # noqa: E402
from train.condense.resample import resampled  # noqa: E402
from train.condense.rotator import ROTATORS, Rotator, rotator_kind, rotator_of  # noqa: E402
from train.condense.study import PRESETS, TABLES, run_study  # noqa: E402
from train.condense.table import coreset_table  # noqa: E402
from train.condense.topology_term import READINGS, check_weight  # noqa: E402
from train.condense.training import TrainSpec  # noqa: E402
from train.runtime.distributed import DistInfo, launch  # noqa: E402
from train.runtime.files import atomic_write  # noqa: E402
from train.runtime.logging_utils import refuse  # noqa: E402

PROG = "python -m train.condense"
ERRORS = (ValueError, FileNotFoundError)  # every refusal of the data sets, the file and the options
RECIPE = TrainSpec()
DISTILL = DistillSpec()
DISTILL_OPTIONS = {"iterations": DISTILLATIONS, "init": ("gm", "dm", "tm"), "resume": DISTILLATIONS,
                   "topo": TOPO_DISTILLATIONS, "topo_weight": TOPO_DISTILLATIONS}  # who takes which
ROTATOR_HELP = (f"the frame, one of {', '.join(ROTATORS)}: pca puts clouds on their principal axes, fixed also signs "
                "each axis by mean sin(x), learned (dd3d) trains the sign (default: none aligned, fixed rotated)")
TABLE_DATA = DataSpec("shapes", points=128)  # the table's budget: minutes on 2 cores (decision 73)
TABLE_RECIPE = TrainSpec(steps=100)


def _data_options(p: argparse.ArgumentParser, dataset_required: bool) -> None:
    p.add_argument("--dataset", required=dataset_required, help="object data set (train.data.objects.OBJECT_SETS; "
                   "docs/objects.md)")
    p.add_argument("--data-root", help="the download's folder (not for the generated shapes, lidar_objects)")
    p.add_argument("--setting", help="aligned (default) or rotated")
    p.add_argument("--task", help="classification (default) or parts")
    p.add_argument("--data-seed", type=int, help="the data set's seed (a generated set's content; default 0)")
    p.add_argument("--size", type=int, help="size of a generated set (load_objects)")
    p.add_argument("--points", type=int, help="points per cloud (default 1,024; 2,048 for parts)")


def _run_options(p: argparse.ArgumentParser, recipe: TrainSpec, choices: bool = False) -> None:
    """The recipe, seed and processes; with ``choices`` ``--steps`` and ``--lr`` take several values."""
    several = {"nargs": "+", "default": [recipe.steps]} if choices else {"default": recipe.steps}
    p.add_argument("--steps", type=int, **several, help=f"training steps of a backbone (default {recipe.steps})"
                   + ("; several values are chosen among on the validation split" if choices else ""))
    several = {"nargs": "+", "default": [recipe.lr]} if choices else {"default": recipe.lr}
    p.add_argument("--lr", type=float, **several, help=f"Adam learning rate (default {recipe.lr})"
                   + ("; several values are chosen among on the validation split" if choices else ""))
    p.add_argument("--batch-size", type=int, default=recipe.batch_size, help=f"clouds a step (default "
                   f"{recipe.batch_size})")
    p.add_argument("--seed", type=int, default=0, help="seed of the method or of the first run (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--procs", type=int, default=1, help="local processes (default 1; torchrun sets its own)")


def build_parsers() -> dict[str, argparse.ArgumentParser]:
    condense = argparse.ArgumentParser(
        prog=PROG, description="Condense an object data set into <out>/condensed.npz.",
        epilog=f"Other forms (each with its own --help): {PROG} evaluate (train on a set, score it), {PROG} table "
        f"(the coreset table), {PROG} sample (draw a dd3d run's generator again), {PROG} show (pictures of real and "
        f"condensed clouds), {PROG} study (the DD3D paper's tables). docs/condense.md")
    _data_options(condense, True)
    condense.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    condense.add_argument("--cpc", type=int, required=True, help="clouds per class")
    condense.add_argument("--out", required=True, help="folder of condensed.npz (and the feature network's cache)")
    condense.add_argument("--iterations", type=int, help=f"outer iterations of {', '.join(DISTILLATIONS)} (default "
                          f"{DISTILL.iterations}); --points is the resolution distilled at")
    condense.add_argument("--init", help=f"gm, dm, tm: explicit clouds from real ones or noise (default "
                          f"{DISTILL.init})")
    condense.add_argument("--rotator", help=ROTATOR_HELP)
    condense.add_argument("--topo", choices=READINGS, help=f"{', '.join(TOPO_DISTILLATIONS)}: add a persistence term "
                          "to each class's matching distance, the synthetic clouds' diagrams against the real ones' "
                          "(shape) or the class's global features' (feature); decision 96")
    condense.add_argument("--topo-weight", type=float, help="the term's weight (> 0), with --topo")
    condense.add_argument("--resume", action="store_true", default=None, help=f"go on from <out>/{CHECKPOINT_NAME} "
                          f"(saved every {DISTILL.checkpoint_every} iterations), exactly")
    _run_options(condense, RECIPE)
    evaluate = argparse.ArgumentParser(prog=f"{PROG} evaluate", description="Train a backbone from scratch on a "
                                       "condensed set (or the full train split) --runs times; test scores, last step.")
    evaluate.add_argument("--from", dest="source", required=True, help="a condensed.npz, or 'full'")
    _data_options(evaluate, False)
    evaluate.add_argument("--rotator", help="--from full only (a condensed file names its own frame): " + ROTATOR_HELP)
    evaluate.add_argument("--model", default=RECIPE.model, help=f"backbone (default {RECIPE.model}; "
                          "train.models.objects)")
    evaluate.add_argument("--runs", type=int, default=5, help="runs with seeds seed, seed+1, ... (default 5)")
    evaluate.add_argument("--split", choices=("test", "val"), default="test",
                          help="scored split: test, or val to choose steps and learning rate (default test)")
    evaluate.add_argument("--out", help="also write every run's scores to this JSON file")
    evaluate.add_argument("--resample", action="store_true", help="train on clouds drawn afresh from the dd3d "
                          "run's generator beside the file at every use (Table 6's sampling)")
    _run_options(evaluate, RECIPE, choices=True)
    table = argparse.ArgumentParser(prog=f"{PROG} table", description="Random, Herding and K-Center at each CPC, "
                                    "aligned and rotated, beside the full set: the table of docs/condense.md.")
    table.add_argument("--out", required=True, help="folder of the sets, the cache and table.{md,json}")
    table.add_argument("--cpcs", type=int, nargs="+", default=[1, 10, 50])
    table.add_argument("--runs", type=int, default=5)
    table.add_argument("--size", type=int, default=TABLE_DATA.size, help="shapes' training clouds a class "
                       "(default: the set's own)")
    table.add_argument("--points", type=int, default=TABLE_DATA.points, help=f"points per cloud (default "
                       f"{TABLE_DATA.points})")
    _run_options(table, TABLE_RECIPE)
    sample = argparse.ArgumentParser(prog=f"{PROG} sample", description="Draw a dd3d run's condensed set again from "
                                     "its generator, at any number of points.")
    sample.add_argument("--from", dest="source", required=True, help="the dd3d run's --out folder")
    sample.add_argument("--points", type=int, required=True, help="points per cloud")
    sample.add_argument("--out", required=True, help="the condensed set file (.npz) to write")
    sample.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    study = argparse.ArgumentParser(prog=f"{PROG} study", description="The DD3D paper's Tables 1-6 on one data set: "
                                    "every set condensed and evaluated once (a stopped study goes on), then "
                                    "<out>/STUDY.md.")
    study.add_argument("--out", required=True, help="folder of the units, study.json and STUDY.md")
    study.add_argument("--preset", choices=tuple(PRESETS), default="paper", help="the budget: paper (1,024 points, "
                       "CPC 1/10/50, 400 iterations: tens of GPU-hours) or cpu (64 points, CPC 1, 40 iterations: "
                       "about an hour of one core for each of Tables 1, 4, 5 and 6, two for Table 3, five for "
                       "Table 2); default paper")
    study.add_argument("--tables", type=int, nargs="+", default=list(TABLES), help="which tables (default all)")
    study.add_argument("--cpcs", type=int, nargs="+", help="Table 1's clouds per class (default the preset's: paper "
                       "1 10 50, cpu 1); Tables 2 and 4-6 take the smallest, Table 3 the largest")
    study.add_argument("--dataset", help="object data set (default the preset's, shapes)")
    study.add_argument("--data-root", help="the download's folder")
    study.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    study.add_argument("--procs", type=int, default=1, help="local processes (default 1; torchrun sets its own)")
    show = argparse.ArgumentParser(prog=f"{PROG} show", description="Real and condensed clouds side by side, a "
                                   "row per class (DD3D Figure 6), into a PNG.")
    show.add_argument("--from", dest="sources", nargs="+", required=True, help="condensed set files (.npz); the real "
                      "clouds are the first's data set's train split")
    show.add_argument("--names", nargs="+", help="a column title per file (default: the methods' names)")
    show.add_argument("--classes", nargs="+", help="class names, a row each (default: the first three)")
    show.add_argument("--data-root", help="the download's folder (not for the generated shapes, lidar_objects)")
    show.add_argument("--out", required=True, help="the picture (.png) to write")
    return {"condense": condense, "evaluate": evaluate, "table": table, "sample": sample, "show": show,
            "study": study}


def _spec(args: argparse.Namespace, model: str = RECIPE.model, steps: int | None = None, lr: float | None = None
          ) -> TrainSpec:
    """The recipe of the options (``steps`` and ``lr`` in their place: one of evaluate's values)."""
    steps, lr = (args.steps if steps is None else steps), (args.lr if lr is None else lr)
    for name, value in (("steps", steps), ("batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {value}")
    if not lr > 0:
        raise ValueError(f"--lr must be positive, got {lr}")
    return TrainSpec(model, steps, lr, args.batch_size)


def _given_data(args: argparse.Namespace) -> DataSpec:
    given = {"setting": args.setting, "task": args.task, "data_seed": args.data_seed, "size": args.size,
             "points": args.points}
    return DataSpec(args.dataset, args.data_root, **{k: v for k, v in given.items() if v is not None})


def _distill(args: argparse.Namespace) -> DistillSpec:
    given = {"iterations": args.iterations, "init": args.init, "resume": args.resume, "topo": args.topo,
             "topo_weight": args.topo_weight}
    if (args.topo is None) != (args.topo_weight is None):
        raise ValueError("--topo and --topo-weight go together: give both (e.g. --topo shape --topo-weight 0.1)")
    if args.topo_weight is not None:
        check_weight(args.topo_weight)
    for key, value in given.items():
        if value is not None and args.method not in DISTILL_OPTIONS[key]:
            raise ValueError(f"--{key.replace('_', '-')} is an option of {', '.join(DISTILL_OPTIONS[key])}, "
                             f"not of {args.method}")
    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be a positive integer, got {args.iterations}")
    return DistillSpec(**{k: v for k, v in given.items() if v is not None})


def _condense(args: argparse.Namespace, info: DistInfo) -> None:
    data = _given_data(args)
    cset = condense_set(data, args.method, args.cpc, args.seed, _spec(args), Path(args.out) / CACHE_NAME, info,
                        distill=_distill(args), rotator=args.rotator)
    if info.is_main:
        path = write_condensed(cset, Path(args.out))
        print(f"{PROG}: {args.method} CPC {args.cpc}: {len(cset)} clouds of {cset.points.shape[1]} points -> {path}")


def _evaluate(args: argparse.Namespace, info: DistInfo) -> None:
    specs = [_spec(args, args.model, steps, lr) for steps in args.steps for lr in args.lr]
    if len(specs) > 1 and args.split == "val":
        raise ValueError("several --steps or --lr are chosen on the validation split, which --split val would "
                         "then also report: report on test")
    if args.source == "full":
        if args.dataset is None:
            raise ValueError("--from full needs --dataset")
        if args.resample:
            raise ValueError("--resample draws from a dd3d run's generator; --from full has none")
        data = _given_data(args)
        test = data.load(args.split)  # checks the setting, which keys the rotator
        frame = Rotator(rotator_kind(test.setting, args.rotator))
        if frame.kind == "learned":
            raise ValueError("--rotator learned is a dd3d run's: evaluate its condensed.npz, which holds the sign")
        test = in_frame(test, frame)
        train, what = clouds_of(in_frame(data.load("train"), frame)), "full train split"
    else:
        if args.rotator is not None:
            raise ValueError(f"{args.source} names its own frame; --rotator is for --from full")
        cset = read_condensed(args.source)
        prov = cset.provenance
        data = file_data(cset, args.data_root)
        for key, value in data.key().items():
            asked = getattr(args, key)
            if asked is not None and asked != value:
                raise ValueError(f"{args.source} holds {key} {value!r}; --{key.replace('_', '-')} {asked!r} differs")
        frame = rotator_of(prov["frame"])
        test = in_frame(data.load(args.split), frame)
        train, what = condensed_clouds(cset, test, args.source), f"{prov['method']} CPC {prov['cpc']}"
        if args.resample:
            train, what = resampled(train, cset, args.source, info.device), f"{what} resampled"
    spec = specs[0]
    if len(specs) > 1:
        spec, tried = choose_recipe(train, clouds_of(in_frame(data.load("val"), frame)), specs, args.runs, args.seed,
                                    info)
        if info.is_main:
            for candidate, scores in tried:
                print(f"val split: {candidate.steps} steps, lr {candidate.lr}: {format_summary(scores, data.task)}")
    runs = evaluate_runs(train, clouds_of(test), spec, args.runs, args.seed, info, desc=what)
    summary = f"{LABELS[SCORES[data.task][0]]} {format_summary(summarise(runs), data.task)}"
    if info.is_main:
        print(f"{data.dataset} {data.setting}, frame {frame.kind}, {what} ({len(train)} clouds), {spec.model}, "
              f"{spec.steps} steps, lr {spec.lr}, {args.runs} runs, {args.split} split, last step: {summary}")
        if args.out:
            atomic_write(json.dumps({"from": args.source, "resample": args.resample, "data": data.key(),
                                     "frame": frame.kind,
                                     "recipe": spec.__dict__, "split": args.split, "runs": runs}, indent=1).encode(),
                         args.out)


def _table(args: argparse.Namespace, info: DistInfo) -> None:
    base = DataSpec("shapes", size=args.size, points=args.points)
    table = coreset_table(base, ("aligned", "rotated"), args.cpcs, args.runs, _spec(args), args.seed,
                          Path(args.out), info)
    if info.is_main:
        size = "" if args.size is None else f"size {args.size}, "
        print(f"# shapes ({size}{args.points} points), pointnet {args.steps} steps, {args.runs} runs, "
              f"test OA % (mAcc %), mean ± 95% interval, last step\n\n{table}")


def _study(args: argparse.Namespace, info: DistInfo) -> None:
    plan = PRESETS[args.preset]
    if args.dataset is not None:
        plan = replace(plan, dataset=args.dataset, root=args.data_root)
    if args.cpcs is not None:
        if min(args.cpcs) < 1:
            raise ValueError(f"--cpcs must be 1 or more, got {args.cpcs}")
        plan = replace(plan, cpcs=tuple(sorted(set(args.cpcs))))
    bad = sorted(set(args.tables) - set(TABLES))
    if bad:
        raise ValueError(f"--tables {bad} are not among {list(TABLES)}")
    text = run_study(plan, tuple(sorted(set(args.tables))), Path(args.out), info)
    if info.is_main:
        print(f"# {PROG} study, preset {args.preset}, CPC {' '.join(map(str, plan.cpcs))}\n\n{text}")


def _sample(args: argparse.Namespace) -> int:
    """The ``sample`` form: one process, no device choice (a draw of the generator takes seconds)."""
    try:
        if args.points < 1:
            raise ValueError(f"--points must be a positive integer, got {args.points}")
        folder = Path(args.source)
        cset = redrawn(folder, args.points, args.seed)
        path = write_condensed(cset, args.out)
    except (*ERRORS, GeneratorFileError) as err:
        return refuse(f"{PROG} sample: error: {err}")
    print(f"{PROG} sample: {len(cset)} clouds of {args.points} points -> {path}")
    return 0


def _show(args: argparse.Namespace) -> int:
    """The ``show`` form: one process, the real clouds those of the first file's data."""
    try:
        sets = [read_condensed(source) for source in args.sources]
        real = in_frame(file_data(sets[0], args.data_root).load("train"), rotator_of(sets[0].provenance["frame"]))
        path = draw_clouds(real, sets, args.out, args.names, args.classes)
    except ERRORS as err:
        return refuse(f"{PROG} show: error: {err}")
    print(f"{PROG} show: real {real.name} clouds beside {len(sets)} condensed set file(s) -> {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command (module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    form = argv[0] if argv and argv[0] in ("evaluate", "table", "sample", "show", "study") else "condense"
    rest = argv[1:] if form != "condense" else argv
    args = build_parsers()[form].parse_args(rest)
    if form in ("sample", "show"):
        return {"sample": _sample, "show": _show}[form](args)
    if args.procs < 1:
        return refuse(f"{PROG}: error: --procs must be a positive integer, got {args.procs}")
    body = {"condense": _condense, "evaluate": _evaluate, "table": _table, "study": _study}[form]
    return launch(main, argv, args.procs, args.device, False, lambda info: body(args, info), PROG,
                  (*ERRORS, FeatureCacheError))
