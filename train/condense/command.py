"""The command ``python -m train.condense`` (``__main__`` calls :func:`main`): condense an object
data set into a file, evaluate a condensed set, or run the coreset table (``docs/condense.md``).

    python -m train.condense --dataset D --method M --cpc C [--setting aligned|rotated]
                             [--task classification|parts] --out O
                             [--iterations N] [--init real|noise] [--rotator none|fixed|learned] [--resume]
    python -m train.condense evaluate --from O/condensed.npz|full [--dataset D] [--model pointnet] [--runs 5]
    python -m train.condense table --out O          # the embedded shapes set, CPC 1/10/50, both settings
    python -m train.condense sample --from O --points N --out F.npz   # a dd3d run's generator drawn again

Every form runs in one process, in ``--procs N`` local processes or under ``torchrun`` (the ranks
share each training step, :mod:`train.condense.training`), on ``--device`` (auto: CUDA when there
is one); the distillation methods gm, dm and dd3d (decisions 78-81) share the classes between
the ranks (decision 84), while tm and ``sample`` run in one process. A refusal is one line, exit
status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.run: idle OpenMP threads sleep

from train.condense.condensed_file import CondensedSet, read_condensed, write_condensed  # noqa: E402
from train.condense.data import DataSpec, clouds_of, condensed_clouds  # noqa: E402
from train.condense.dd3d import GENERATOR_NAME, GeneratorFileError, draw_set, load_generator  # noqa: E402
from train.condense.distill_checkpoint import CHECKPOINT_NAME  # noqa: E402
from train.condense.features import CACHE_NAME, FeatureCacheError  # noqa: E402
from train.condense.matching_loops import DistillSpec  # noqa: E402
from train.condense.methods import DISTILLATIONS, METHODS, condense_set  # noqa: E402
from train.condense.metrics import SCORES, summarise  # noqa: E402
from train.condense.protocol import LABELS, choose_recipe, evaluate_runs, format_summary  # noqa: E402
from train.condense.table import coreset_table  # noqa: E402
from train.condense.training import TrainSpec  # noqa: E402
from train.runtime.distributed import DistInfo, launch  # noqa: E402
from train.runtime.files import atomic_write  # noqa: E402
from train.runtime.logging_utils import refuse  # noqa: E402

PROG = "python -m train.condense"
ERRORS = (ValueError, FileNotFoundError)  # every refusal of the data sets, the file and the options
RECIPE = TrainSpec()
DISTILL = DistillSpec()
DISTILL_OPTIONS = {"iterations": DISTILLATIONS, "init": ("gm", "dm", "tm"), "rotator": ("dd3d",),  # who takes which
                   "resume": DISTILLATIONS}
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
    condense = argparse.ArgumentParser(prog=PROG, description="Condense an object data set into <out>/condensed.npz.")
    _data_options(condense, True)
    condense.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    condense.add_argument("--cpc", type=int, required=True, help="clouds per class")
    condense.add_argument("--out", required=True, help="folder of condensed.npz (and the feature network's cache)")
    condense.add_argument("--iterations", type=int, help=f"outer iterations of {', '.join(DISTILLATIONS)} (default "
                          f"{DISTILL.iterations}); --points is the resolution distilled at")
    condense.add_argument("--init", help=f"gm, dm, tm: explicit clouds from real ones or noise (default "
                          f"{DISTILL.init})")
    condense.add_argument("--rotator", help="dd3d: none, fixed or learned sign (default: none aligned, fixed rotated)")
    condense.add_argument("--resume", action="store_true", default=None, help=f"go on from <out>/{CHECKPOINT_NAME} "
                          f"(saved every {DISTILL.checkpoint_every} iterations), exactly")
    _run_options(condense, RECIPE)
    evaluate = argparse.ArgumentParser(prog=f"{PROG} evaluate", description="Train a backbone from scratch on a "
                                       "condensed set (or the full train split) --runs times; test scores, last step.")
    evaluate.add_argument("--from", dest="source", required=True, help="a condensed.npz, or 'full'")
    _data_options(evaluate, False)
    evaluate.add_argument("--model", default=RECIPE.model, help=f"backbone (default {RECIPE.model}; "
                          "train.models.objects)")
    evaluate.add_argument("--runs", type=int, default=5, help="runs with seeds seed, seed+1, ... (default 5)")
    evaluate.add_argument("--split", choices=("test", "val"), default="test",
                          help="scored split: test, or val to choose steps and learning rate (default test)")
    evaluate.add_argument("--out", help="also write every run's scores to this JSON file")
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
    return {"condense": condense, "evaluate": evaluate, "table": table, "sample": sample}


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
    given = {"iterations": args.iterations, "init": args.init, "rotator": args.rotator, "resume": args.resume}
    for key, value in given.items():
        if value is not None and args.method not in DISTILL_OPTIONS[key]:
            raise ValueError(f"--{key} is an option of {', '.join(DISTILL_OPTIONS[key])}, not of {args.method}")
    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be a positive integer, got {args.iterations}")
    return DistillSpec(**{k: v for k, v in given.items() if v is not None})


def _condense(args: argparse.Namespace, info: DistInfo) -> None:
    data = _given_data(args)
    cset = condense_set(data, args.method, args.cpc, args.seed, _spec(args), Path(args.out) / CACHE_NAME, info,
                        distill=_distill(args))
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
        data = _given_data(args)
        test = data.load(args.split)
        train, what = clouds_of(data.load("train")), "full train split"
    else:
        cset = read_condensed(args.source)
        prov = cset.provenance
        from_file = {"dataset": prov["dataset"], "setting": prov["setting"], "task": prov["task"],
                     "data_seed": prov["data_seed"], "size": prov["size"], "points": cset.points.shape[1]}
        for key, value in from_file.items():
            asked = getattr(args, key)
            if asked is not None and asked != value:
                raise ValueError(f"{args.source} holds {key} {value!r}; --{key.replace('_', '-')} {asked!r} differs")
        data = DataSpec(root=args.data_root, **from_file)
        test = data.load(args.split)
        train, what = condensed_clouds(cset, test, args.source), f"{prov['method']} CPC {prov['cpc']}"
    spec = specs[0]
    if len(specs) > 1:
        spec, tried = choose_recipe(train, clouds_of(data.load("val")), specs, args.runs, args.seed, info)
        if info.is_main:
            for candidate, scores in tried:
                print(f"val split: {candidate.steps} steps, lr {candidate.lr}: {format_summary(scores, data.task)}")
    runs = evaluate_runs(train, clouds_of(test), spec, args.runs, args.seed, info, desc=what)
    summary = f"{LABELS[SCORES[data.task][0]]} {format_summary(summarise(runs), data.task)}"
    if info.is_main:
        print(f"{data.dataset} {data.setting}, {what} ({len(train)} clouds), {spec.model}, {spec.steps} steps, "
              f"lr {spec.lr}, {args.runs} runs, {args.split} split, last step: {summary}")
        if args.out:
            atomic_write(json.dumps({"from": args.source, "data": data.key(), "recipe": spec.__dict__,
                                     "split": args.split, "runs": runs}, indent=1).encode(), args.out)


def _table(args: argparse.Namespace, info: DistInfo) -> None:
    base = DataSpec("shapes", size=args.size, points=args.points)
    table = coreset_table(base, ("aligned", "rotated"), args.cpcs, args.runs, _spec(args), args.seed,
                          Path(args.out), info)
    if info.is_main:
        size = "" if args.size is None else f"size {args.size}, "
        print(f"# shapes ({size}{args.points} points), pointnet {args.steps} steps, {args.runs} runs, "
              f"test OA % (mAcc %), mean ± 95% interval, last step\n\n{table}")


def _sample(args: argparse.Namespace) -> int:
    """The ``sample`` form: one process, no device choice (a draw of the generator takes seconds)."""
    try:
        if args.points < 1:
            raise ValueError(f"--points must be a positive integer, got {args.points}")
        folder = Path(args.source)
        distilled = read_condensed(folder / "condensed.npz")
        generator, rotator, labels, partition = load_generator(folder / GENERATOR_NAME)
        points, parts = draw_set(generator, rotator, args.points, args.seed, partition)
        cset = CondensedSet(points, labels, distilled.provenance, parts)
        path = write_condensed(cset, args.out)
    except (*ERRORS, GeneratorFileError) as err:
        return refuse(f"{PROG} sample: error: {err}")
    print(f"{PROG} sample: {len(cset)} clouds of {args.points} points -> {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command (module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    form = argv[0] if argv and argv[0] in ("evaluate", "table", "sample") else "condense"
    rest = argv[1:] if form != "condense" else argv
    args = build_parsers()[form].parse_args(rest)
    if form == "sample":
        return _sample(args)
    if args.procs < 1:
        return refuse(f"{PROG}: error: --procs must be a positive integer, got {args.procs}")
    body = {"condense": _condense, "evaluate": _evaluate, "table": _table}[form]
    return launch(main, argv, args.procs, args.device, False, lambda info: body(args, info), PROG,
                  (*ERRORS, FeatureCacheError))
