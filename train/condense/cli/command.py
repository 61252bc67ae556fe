"""The command ``python -m train.condense`` (``__main__`` calls :func:`main`): condense an object
data set into a file, evaluate a condensed set, or run the coreset table (``docs/condense.md``).

    python -m train.condense --dataset D --method M --cpc C [--setting aligned|rotated|rotated_raw]
                             [--task classification|parts] [--rotator none|pca|fixed|learned] --out O
                             [--iterations N] [--init real|noise] [--cloud-optimizer adam|sgd] [--cloud-lr LR]
                             [--resume | --overwrite]
    python -m train.condense evaluate --from O|O/condensed.npz|full [--dataset D] [--rotator R] [--model pointnet]
                                      [--runs 5] [--recipe cpu|paper]  # paper: DD3D's released evaluation
    python -m train.condense evaluate --from O --resample  # a dd3d set drawn afresh at every use
    python -m train.condense evaluate --from GM0 GM1 --against R0 R1  # distillations, paired gain
    python -m train.condense table --out O          # the embedded shapes set, CPC 1/10/50, both settings
    python -m train.condense sample --from O --points N --out F.npz   # a dd3d run's generator drawn again
    python -m train.condense show --from A B ... [--names ...] [--classes ...] --out F.png  # Figure 6
    python -m train.condense study --out O --preset paper|cpu [--tables 1 ... 9] [--cpcs 1 10] [--iterations N]
        [--size S] [--methods gm dd3d] [--settings aligned] [--terms none feature] [--topo-weights 1000]
        # a selection: those units

Every form runs in one process, in ``--procs N`` local processes or under ``torchrun`` (the ranks
share each training step, :mod:`train.condense.evaluation.training`), on ``--device`` (auto: CUDA when there
is one); the distillation methods gm, dm and dd3d (decisions 78-81) share the classes between
the ranks (decision 84), while tm, ``sample`` and ``show`` run in one process. Clouds are condensed
and evaluated in the rotator's frame (decision 86): ``--rotator`` of the condense form (default:
none aligned, fixed rotated) is written into the file, and ``evaluate`` puts its clouds in the
file's frame (``--rotator`` there only for ``--from full``). Every ``--from`` takes a run folder or
its ``condensed.npz``. Every ``--out`` is checked, and a run folder held, before any work
(:mod:`train.condense.cli.out_folder`, decision 90); ``--overwrite`` replaces on success (decision 99).
A refusal is one line, exit status 2, a full disk and memory that runs out too; Ctrl-C or SIGTERM
stops a form with one line saying what was kept and how to go on, exit status 130 or 143
(:mod:`train.condense.cli.stop`).
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import shlex
import signal
import sys
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.run: idle OpenMP threads sleep

import torch  # noqa: E402

from train.condense.files.condensed_file import FILE_NAME, read_condensed, set_path, write_condensed  # noqa: E402
from train.condense.files.data import DataSpec, clouds_of, condensed_clouds, file_data, in_frame  # noqa: E402
from train.condense.methods.dd3d import GeneratorFileError, redrawn  # noqa: E402
from train.condense.files.distill_checkpoint import CHECKPOINT_NAME, SAVE_MINUTES, saved_iteration  # noqa: E402
from train.condense.methods.explicit import CLOUD_STEPS, INITS, OPTIMIZERS, cloud_step  # noqa: E402
from train.condense.matching.features import CACHE_NAME, FeatureCacheError  # noqa: E402
from train.condense.matching.controls import CONTROLS, check_ratio  # noqa: E402
from train.condense.matching.generator import NOISE_DIMS, WIDTH as GENERATOR_WIDTH  # noqa: E402
from train.condense.matching.matching_loops import DistillSpec  # noqa: E402
from train.condense.methods import (DISTILLATIONS, FEATURE_METHODS, METHODS, TOPO_DISTILLATIONS,  # noqa: E402
                                    checked_split, condense_set, loss_line)
from train.condense.studies.pictures import draw_clouds, draw_diagrams  # noqa: E402
from train.condense.evaluation.metrics import SCORES, common_seeds, paired_gain, summarise, two_level  # noqa: E402
from train.condense.evaluation.protocol import (BEST, LABELS, choose_recipe, evaluate_runs, format_gain,  # noqa: E402
                                     format_summary, format_two_level, validation_record)
from train.condense.evaluation.recipes import RECIPES, named_recipe  # noqa: E402
from train.condense.matching.released import iterations_for  # noqa: E402
from train.condense.cli.out_folder import (check_replaceable, clear_for_run, finish_replacing,  # noqa: E402
                                           hold_folder, mark_ready, run_folder)
from train.condense.methods.resample import resampled  # noqa: E402
from train.condense.files.rotator import ROTATORS, Rotator, rotator_kind, rotator_of  # noqa: E402
from train.condense.cli.stop import STOP_SIGNALS, Stopped, stopped_code, stopping  # noqa: E402
from train.condense.studies.study import (PRESETS, TABLES, TITLES, TOPO_RATIOS, TOPO_WEIGHTS, Selection,  # noqa: E402
                                          run_study)
from train.condense.studies.table import coreset_table  # noqa: E402
from train.condense.matching.topology_term import READINGS, check_weight  # noqa: E402
from train.condense.evaluation.training import TrainSpec  # noqa: E402
from train.data.objects import OBJECT_SETS, SETTINGS, TASKS, ObjectSet  # noqa: E402
from train.models.objects import CLASSIFIERS, PART_SEGMENTERS  # noqa: E402
from train.runtime.distributed import SPAWNED_ENV, DistInfo, launch  # noqa: E402
from train.runtime.files import NoRoomError, atomic_write  # noqa: E402
from train.runtime.logging_utils import refuse  # noqa: E402
from train.runtime.memory import check_fits, memory_refused  # noqa: E402
from train.runtime.out_paths import check_file_out, check_folder_out  # noqa: E402

PROG = "python -m train.condense"
FORMS = ("evaluate", "table", "sample", "show", "study")  # condensing is the form without a name
LAUNCHED = ("condense", "evaluate", "table", "study")  # the forms of train.runtime.distributed.launch
# every refusal of the data sets, the file and the options, a full disk and memory asked in vain (decision 99)
ERRORS = (ValueError, FileNotFoundError, NoRoomError, MemoryError)
RECIPE = TrainSpec()
DISTILL = DistillSpec()
DISTILL_OPTIONS = {"iterations": DISTILLATIONS, "init": tuple(CLOUD_STEPS), "cloud_optimizer": tuple(CLOUD_STEPS),
                   "cloud_lr": tuple(CLOUD_STEPS), "resume": DISTILLATIONS, "topo": TOPO_DISTILLATIONS,
                   "topo_weight": TOPO_DISTILLATIONS, "topo_ratio": TOPO_DISTILLATIONS, "control": TOPO_DISTILLATIONS,
                   "noise_dims": ("dd3d",)}  # who takes which
ROTATOR_HELP = (f"the frame, one of {', '.join(ROTATORS)}: pca puts clouds on their principal axes, fixed also signs "
                "each axis by mean sin(x), learned (dd3d) trains the sign (default: none aligned, fixed rotated)")
DEVICE_HELP = "auto (CUDA when torch sees a GPU, else the CPU), cpu or cuda (default auto)"
FROM_HELP = "a run's --out folder or its condensed.npz"
MEMORY_FIX = ("give fewer --points or clouds (--cpc, --size), a smaller --batch-size, or a machine or device "
              "with more memory")
TABLE_DATA = DataSpec("shapes", points=128)  # the table's budget: minutes on 2 cores (decision 73)
TABLE_RECIPE = TrainSpec(steps=100)


def _data_options(p: argparse.ArgumentParser, dataset_required: bool) -> None:
    p.add_argument("--dataset", required=dataset_required, help=f"object data set, one of {', '.join(OBJECT_SETS)} "
                   "(docs/objects.md)" + ("" if dataset_required else "; default: the file's"))
    p.add_argument("--data-root", help="the download's folder (not for the generated shapes, lidar_objects)")
    p.add_argument("--setting", help=f"one of {', '.join(SETTINGS)} (default aligned)")
    p.add_argument("--task", help=f"one of {', '.join(TASKS)} (default classification)")
    p.add_argument("--data-seed", type=int, help="the data set's seed (a generated set's content; default 0)")
    p.add_argument("--size", type=int, help="size of a generated set (load_objects)")
    p.add_argument("--points", type=int, help="points per cloud (default 1,024; 2,048 for parts)")


def _run_options(p: argparse.ArgumentParser, recipe: TrainSpec, choices: bool = False) -> None:
    """The recipe (``recipe`` the cpu recipe's values here), seed and processes; with ``choices``
    ``--steps``, ``--epochs`` and ``--lr`` take several values."""
    several = {"nargs": "+"} if choices else {}
    chosen = "; several values are chosen among on the validation split" if choices else ""
    p.add_argument("--recipe", choices=RECIPES, default="cpu", help="how a backbone is trained (decision 94): cpu, "
                   f"fixed Adam steps ({recipe.steps}, batch {recipe.batch_size}, lr {recipe.lr}); paper, DD3D's "
                   "released evaluation (classification: 201 epochs at batch 256, Adam 1e-3 with weight decay 5e-4, "
                   "cosine to 1e-4, scale 0.8-1.25, jitter and small rotation; parts: SGD, 1,001 epochs); default cpu")
    p.add_argument("--steps", type=int, **several, help=f"cpu recipe: training steps (default {recipe.steps})" + chosen)
    p.add_argument("--epochs", type=int, **several, help="paper recipe: passes over the set (default 201; parts "
                   "1,001)" + chosen)
    p.add_argument("--lr", type=float, **several, help="learning rate at the start (default the recipe's: 1e-3; "
                   "paper parts 1e-2)" + chosen)
    p.add_argument("--batch-size", type=int, help=f"clouds a step (default the recipe's: cpu {recipe.batch_size}, "
                   "paper 256, paper parts 32; the whole set when smaller)")
    p.add_argument("--best-every", type=int, help="paper recipe: score the test split every K epochs for the "
                   "best-test-epoch number, reported apart for comparison with the paper only (default 1 as the "
                   "released code for classification, 0 for parts; 0: never; each scoring predicts the whole split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the method or of the first run (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help=DEVICE_HELP)
    p.add_argument("--procs", type=int, default=1, help="local processes (default 1; torchrun sets its own)")
    p.set_defaults(cpu_steps=recipe.steps)


def build_parsers() -> dict[str, argparse.ArgumentParser]:
    condense = argparse.ArgumentParser(
        prog=PROG, description="Condense an object data set into <out>/condensed.npz.",
        epilog=f"Other forms (each with its own --help): {PROG} evaluate (train on a set, score it), {PROG} table "
        f"(the coreset table), {PROG} sample (draw a dd3d run's generator again), {PROG} show (pictures of real and "
        f"condensed clouds), {PROG} study (the DD3D paper's tables). docs/condense.md")
    _data_options(condense, True)
    condense.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)} (tm is a miniature of "
                          "trajectory matching: 3 experts of 5 epochs, decision 93)")
    condense.add_argument("--cpc", type=int, required=True, help="clouds per class")
    condense.add_argument("--out", required=True, help="folder of condensed.npz (and the feature network's cache); "
                          "one that holds another run's set is refused unless --overwrite")
    condense.add_argument("--iterations", type=int, help=f"outer iterations of {', '.join(DISTILLATIONS)} (default: "
                          "the data set's in the released DD3D code, 400, or 200 for ScanObjectNN and the LiDAR "
                          "cuts; decision 92); --points is the resolution distilled at")
    condense.add_argument("--init", choices=INITS, help=f"gm, dm, tm: explicit clouds from real ones or noise "
                          f"(default {DISTILL.init}; part segmentation starts from real ones)")
    condense.add_argument("--cloud-optimizer", choices=OPTIMIZERS, help="gm, dm, tm: the clouds' optimiser, Adam or "
                          "SGD with momentum 0.5 (default: the method's, chosen on validation: " + ", ".join(
                              f"{m} {o} {r[o]:g}" for m, (o, r) in CLOUD_STEPS.items()) + "; decision 93)")
    condense.add_argument("--cloud-lr", type=float, help="gm, dm, tm: the clouds' learning rate (default: the rate "
                          "chosen on validation for the method and optimiser: " + ", ".join(
                              f"{m} {o} {lr:g}" for m, (_, r) in CLOUD_STEPS.items() for o, lr in r.items()) + ")")
    condense.add_argument("--rotator", help=ROTATOR_HELP)
    condense.add_argument("--topo", choices=READINGS, help=f"{', '.join(TOPO_DISTILLATIONS)}: add a persistence term "
                          "to each class's matching distance, the synthetic clouds' diagrams against the real ones' "
                          "(shape) or the class's global features' (feature; feature_equal: against real sets of the "
                          "synthetic set's size); decisions 96 and 98")
    condense.add_argument("--topo-weight", type=float, help="the term's weight (> 0), with --topo")
    condense.add_argument("--topo-ratio", type=float, help="with --topo, in place of --topo-weight: the term scaled at "
                          "every class's step so that its gradient norm on the synthetic parameters is this many times "
                          "the matching distance's (> 0; decision 102)")
    condense.add_argument("--noise-dims", type=int, choices=NOISE_DIMS, help="dd3d: noise scalars a point of the "
                          "generator, 1 as released (a cloud is a curve) or 2 (a surface); decision 101")
    condense.add_argument("--control", choices=CONTROLS, help="with --topo: in the term's place, a geometric term "
                          "that is not topological, scaled at every class's step to the term's gradient norm on the "
                          "synthetic parameters: chamfer (to the nearest real cloud of the batch) or start (to each "
                          "cloud's start); decision 101")
    condense.add_argument("--resume", action="store_true", default=None, help=f"go on from <out>/{CHECKPOINT_NAME} "
                          f"(saved after the first iteration, every {DISTILL.checkpoint_every} and at least every "
                          f"{SAVE_MINUTES:g} minutes), exactly; with --overwrite, from the stopped --overwrite run's")
    condense.add_argument("--overwrite", action="store_true", help="replace the set, checkpoint and generator another "
                          "run left in --out, once this run has written its set (until then they stay as they are; "
                          "decision 99)")
    _run_options(condense, RECIPE)
    evaluate = argparse.ArgumentParser(prog=f"{PROG} evaluate", description="Train a backbone from scratch on a "
                                       "condensed set (or the full train split) --runs times; test scores, last step.")
    evaluate.add_argument("--from", dest="source", nargs="+", required=True, help=f"{FROM_HELP}, or 'full' "
                          "(the train split); several sets of one method (one a distillation seed): each "
                          "evaluated, then their mean with the 95%% t interval over the distillations' means")
    evaluate.add_argument("--against", nargs="+", help="with --from's files: the reference's files (Random's draws "
                          "of the same seeds), evaluated too; the gain is paired by seed")
    _data_options(evaluate, False)
    evaluate.add_argument("--rotator", help="--from full only (a condensed file names its own frame): " + ROTATOR_HELP)
    evaluate.add_argument("--model", default=RECIPE.model, help=f"backbone, one of {', '.join(CLASSIFIERS)} "
                          f"(parts: {', '.join(PART_SEGMENTERS)}; default {RECIPE.model})")
    evaluate.add_argument("--runs", type=int, default=5, help="runs with seeds seed, seed+1, ... (default 5)")
    evaluate.add_argument("--split", choices=("test", "val"), default="test",
                          help="scored split: test, or val to choose steps and learning rate (default test)")
    evaluate.add_argument("--out", help="also write every run's scores to this JSON file (checked before training; an "
                          "existing file is replaced only when it is such a scores file, or with --overwrite)")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing --out that is not a scores "
                          "file")
    evaluate.add_argument("--resample", action="store_true", help="train on clouds drawn afresh from the dd3d "
                          "run's generator beside the file at every use (Table 6's sampling)")
    _run_options(evaluate, RECIPE, choices=True)
    table = argparse.ArgumentParser(prog=f"{PROG} table", description="Random, Herding and K-Center at each CPC, "
                                    "aligned and rotated, beside the full set: the table of docs/condense.md.")
    table.add_argument("--out", required=True, help="folder of the sets, the cache and table.{md,json}")
    table.add_argument("--cpcs", type=int, nargs="+", default=[1, 10, 50], help="clouds per class, a row each "
                       "(default 1 10 50)")
    table.add_argument("--runs", type=int, default=5, help="evaluation runs of each set (default 5)")
    table.add_argument("--size", type=int, default=TABLE_DATA.size, help="shapes' training clouds a class "
                       "(default: the set's own)")
    table.add_argument("--points", type=int, default=TABLE_DATA.points, help=f"points per cloud (default "
                       f"{TABLE_DATA.points})")
    _run_options(table, TABLE_RECIPE)
    sample = argparse.ArgumentParser(prog=f"{PROG} sample", description="Draw a dd3d run's condensed set again from "
                                     "its generator, at any number of points.")
    sample.add_argument("--from", dest="source", required=True, help=f"the dd3d run: {FROM_HELP}")
    sample.add_argument("--points", type=int, required=True, help="points per cloud")
    sample.add_argument("--out", required=True, help="the condensed set file (.npz) to write; an existing one is "
                        "refused unless --overwrite")
    sample.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    sample.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    study = argparse.ArgumentParser(prog=f"{PROG} study", description="The DD3D paper's Tables 1-6 on one data set, "
                                    "and Tables 7-10 (the persistence term, decisions 96-97 and 101-102): every set "
                                    "condensed and evaluated once (a stopped study goes on), then <out>/STUDY.md.")
    study.add_argument("--out", required=True, help="folder of the units, study.json and STUDY.md")
    study.add_argument("--preset", choices=tuple(PRESETS), required=True, help="the budget, named on every call "
                       "(decision 90): paper (1,024 points, CPC 1/10/50, the released iterations: tens of GPU-hours) or cpu "
                       "(64 points, CPC 1, 40 iterations: about an hour of one core for each of Tables 1, 4, 5 and "
                       "6, two for Table 3, five for Table 2)")
    study.add_argument("--tables", type=int, nargs="+", default=list(TABLES), help="which tables (default all)")
    study.add_argument("--cpcs", type=int, nargs="+", help="Table 1's clouds per class (default the preset's: paper "
                       "1 10 50, cpu 1); Tables 2 and 4-6 take the smallest, Table 3 the largest, Table 7 every one")
    study.add_argument("--iterations", type=int, help="outer iterations of every distillation (default the "
                       "preset's: paper the data set's released count, cpu 40); a folder holds one count")
    study.add_argument("--points", type=int, help="points per cloud of the classification tables (default the "
                       "preset's: paper 1,024, cpu 64); a unit's folder names its points")
    study.add_argument("--draw-points", type=int, help="Table 1 adds DD3D's sets drawn at this many points, more than "
                       "--points, beside Random's draw at it (the paper's Table 4 reading; default none)")
    study.add_argument("--distills", type=int, help="distillations of each method, seeds 0.. (default the preset's: 2)")
    study.add_argument("--methods", nargs="+", default=[], help=f"run only these methods' units, of {', '.join(TITLES)} "
                       "(default every one; the others finished in --out are reported)")
    study.add_argument("--settings", nargs="+", default=[], help=f"run only these settings' units, of "
                       f"{', '.join(SETTINGS)} (default every one)")
    study.add_argument("--terms", nargs="+", default=[], help="run only the units with these persistence terms, of "
                       f"none, {', '.join(READINGS)} (default every one)")
    study.add_argument("--topo-weights", type=float, nargs="+", default=[], help="run only the term's units at "
                       f"these weights, of {' '.join(f'{w:g}' for w in TOPO_WEIGHTS)} (default every one; the "
                       "units without the term are not selected by it)")
    study.add_argument("--topo-ratios", type=float, nargs="+", default=[], help="run only Table 10's units at these "
                       f"strengths of the term relative to the matching, of {' '.join(f'{r:g}' for r in TOPO_RATIOS)} "
                       "(default every one)")
    study.add_argument("--controls", nargs="+", default=[], help="run only Table 10's units of the term itself (term) "
                       f"or of these controls in its place, of term, {', '.join(CONTROLS)} (default every one)")
    study.add_argument("--dataset", help=f"object data set, one of {', '.join(OBJECT_SETS)} (default the "
                       "preset's, shapes)")
    study.add_argument("--data-root", help="the download's folder")
    study.add_argument("--size", type=int, help="size of a generated set (shapes: training clouds a class, default "
                       "100; lidar_objects: scenes, default 120, where bicycle has one training cloud: 2000 give it "
                       "the 10 of CPC 10); a folder holds one size")
    study.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help=DEVICE_HELP)
    study.add_argument("--procs", type=int, default=1, help="local processes (default 1; torchrun sets its own)")
    show = argparse.ArgumentParser(prog=f"{PROG} show", description="Real and condensed clouds side by side, a "
                                   "row per class (DD3D Figure 6), into a PNG.")
    show.add_argument("--from", dest="sources", nargs="+", required=True, help=f"condensed sets, each {FROM_HELP}; "
                      "the real clouds are the first's data set's train split")
    show.add_argument("--names", nargs="+", help="a column title per file (default: the methods' names)")
    show.add_argument("--classes", nargs="+", help="class names, a row each (default: the first three)")
    show.add_argument("--data-root", help="the download's folder (not for the generated shapes, lidar_objects)")
    show.add_argument("--diagrams", action="store_true", help="draw instead the persistence diagrams (H0, H1) of "
                      "each set's first cloud of one class (--classes: one name; default the first) beside the real "
                      "cloud's, as the persistence term computes them (decision 96)")
    show.add_argument("--out", required=True, help="the picture (.png) to write; an existing file is replaced only "
                      "when it is a PNG picture, or with --overwrite")
    show.add_argument("--overwrite", action="store_true", help="replace an existing --out that is not a PNG picture")
    return {"condense": condense, "evaluate": evaluate, "table": table, "sample": sample, "show": show,
            "study": study}


def _spec(args: argparse.Namespace, task: str, model: str = RECIPE.model, length: int | None = None,
          lr: float | None = None) -> TrainSpec:
    """The recipe of the options for ``task``: ``--recipe``'s values, those given in their place
    (``length`` and ``lr``: one of evaluate's values of ``--steps`` or ``--epochs`` and ``--lr``)."""
    counted = {"cpu": "steps", "paper": "epochs"}[args.recipe]
    for other in ("steps", "epochs"):
        if other != counted and getattr(args, other) is not None:
            raise ValueError(f"--{other} is not a count of the {args.recipe} recipe, which counts --{counted}")
    if args.recipe == "cpu" and args.best_every is not None:
        raise ValueError("--best-every scores the paper recipe's epochs; the cpu recipe scores its last step only")
    length = getattr(args, counted) if length is None else length
    if length is None and args.recipe == "cpu":
        length = args.cpu_steps
    given = {counted: length, "lr": args.lr if lr is None else lr, "batch_size": args.batch_size,
             "test_every": args.best_every}
    for name, value in given.items():
        if isinstance(value, (int, float)) and not value > 0 and not (name == "test_every" and value == 0):
            flag = "--best-every" if name == "test_every" else f"--{name.replace('_', '-')}"
            raise ValueError(f"{flag} must be positive, got {value}")
    return replace(named_recipe(args.recipe, task, model), **{k: v for k, v in given.items() if v is not None})


def _check_recipe_options(args: argparse.Namespace) -> None:
    """ValueError in one line when a condense run of a method that trains no feature network is
    given the recipe's options, which would do nothing (decision 99)."""
    if args.method in FEATURE_METHODS:
        return
    given = [f"--{name.replace('_', '-')}" for name in ("steps", "epochs", "lr", "batch_size", "best_every")
             if getattr(args, name) is not None] + (["--recipe"] if args.recipe != RECIPE.recipe else [])
    if given:
        raise ValueError(f"{given[0]} sets how the feature network of {' and '.join(FEATURE_METHODS)} is trained; "
                         f"{args.method} trains none, so it would do nothing: leave it out (a set's recipe is "
                         "evaluate's)")


def _given_data(args: argparse.Namespace) -> DataSpec:
    given = {"setting": args.setting, "task": args.task, "data_seed": args.data_seed, "size": args.size,
             "points": args.points}
    return DataSpec(args.dataset, args.data_root, **{k: v for k, v in given.items() if v is not None})


def _distill(args: argparse.Namespace) -> DistillSpec:
    given = {"iterations": args.iterations, "init": args.init, "cloud_optimizer": args.cloud_optimizer,
             "cloud_lr": args.cloud_lr, "resume": args.resume, "topo": args.topo, "topo_weight": args.topo_weight,
             "topo_ratio": args.topo_ratio, "control": args.control, "noise_dims": args.noise_dims}
    if args.topo_ratio is not None:
        check_ratio(args.topo_ratio, args.topo, args.topo_weight or 0.0)
    elif (args.topo is None) != (args.topo_weight is None):
        raise ValueError("--topo and --topo-weight go together (or --topo-ratio in the weight's place): give both "
                         "(e.g. --topo shape --topo-weight 0.1)")
    if args.topo_weight is not None:
        check_weight(args.topo_weight)
    for key, value in given.items():
        if value is not None and args.method not in DISTILL_OPTIONS[key]:
            raise ValueError(f"--{key.replace('_', '-')} is an option of {', '.join(DISTILL_OPTIONS[key])}, not of "
                             f"{args.method}")
    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be a positive integer, got {args.iterations}")
    spec = DistillSpec(**{k: v for k, v in given.items() if v is not None})
    if args.method in CLOUD_STEPS:
        cloud_step(args.method, spec)  # refuses a learning rate before the data are read
    return spec


def _condense(args: argparse.Namespace, info: DistInfo, argv: list[str], train: ObjectSet | None = None) -> None:
    """The condense form; ``train``: the train split when this process read and checked it already.
    The run writes into its run folder (an ``--overwrite`` run's staging folder, whose files are put
    in place once the set is written, :mod:`train.condense.cli.out_folder`); a full disk ends in one
    line saying what was kept and how to go on."""
    data = _given_data(args)
    out = Path(args.out)
    work = run_folder(out, args.overwrite)
    try:
        cset = condense_set(data, args.method, args.cpc, args.seed, _spec(args, data.task), work / CACHE_NAME, info,
                            train, _distill(args), args.rotator)
        if info.is_main:
            write_condensed(cset, work)
    except NoRoomError as err:
        kept, again = _kept("condense", args, argv)
        raise NoRoomError(err.errno, f"{err}; {kept}; then go on with: {shlex.join([*PROG.split(), *again])}") from None
    if info.is_main:
        if work != out:
            mark_ready(out)
            finish_replacing(out)
        print(f"{PROG}: {args.method} CPC {args.cpc}: {len(cset)} clouds of {cset.points.shape[1]} points -> "
              f"{out / FILE_NAME}")
        record = cset.provenance["distill"]
        if record is not None:
            print(f"{PROG}: {loss_line(record)}")


@dataclass(frozen=True)
class Evaluated:
    """One set's evaluation: the file's provenance (None for the full set), the recipe, the runs."""

    provenance: dict[str, Any] | None
    spec: TrainSpec
    runs: list[dict[str, Any]]


def _evaluate(args: argparse.Namespace, info: DistInfo) -> None:
    """The evaluate form: one set, or several distillations of a method (and a reference's)."""
    if len(args.source) == 1 and args.against is None:
        _evaluate_set(args, args.source[0], args.out, info)
    else:
        _evaluate_distillations(args, info)


def _evaluate_set(args: argparse.Namespace, source: str, out: str | None, info: DistInfo) -> Evaluated:
    """One set (a file or ``full``) trained ``--runs`` times, its line printed, its record written to ``out``."""
    lengths, rates = args.steps or args.epochs or [None], args.lr or [None]
    if (len(lengths) > 1 or len(rates) > 1) and args.split == "val":
        raise ValueError("several --steps or --lr are chosen on the validation split, which --split val would "
                         "then also report: report on test")
    if source == "full":
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
        source = str(set_path(source))
        if args.rotator is not None:
            raise ValueError(f"{source} names its own frame; --rotator is for --from full")
        cset = read_condensed(source)
        prov = cset.provenance
        data = file_data(cset, args.data_root)
        for key, value in data.key().items():
            asked = getattr(args, key)
            if asked is not None and asked != value:
                raise ValueError(f"{source} holds {key} {value!r}; --{key.replace('_', '-')} {asked!r} differs")
        frame = rotator_of(prov["frame"])
        test = in_frame(data.load(args.split), frame)
        train, what = condensed_clouds(cset, test, source), f"{prov['method']} CPC {prov['cpc']}"
        if args.resample:
            train, what = resampled(train, cset, source, info.device), f"{what} resampled"
    specs = [_spec(args, data.task, args.model, length, lr) for length in lengths for lr in rates]
    spec, tried = specs[0], []
    if len(specs) > 1:
        spec, tried = choose_recipe(train, clouds_of(in_frame(data.load("val"), frame)), specs, args.runs, args.seed,
                                    info)
        if info.is_main:
            for candidate, scores in tried:
                print(f"val split: {candidate.length}, lr {candidate.lr}: {format_summary(scores, data.task)}")
    runs = evaluate_runs(train, clouds_of(test), spec, args.runs, args.seed, info, desc=what)
    first = LABELS[SCORES[data.task][0]]
    summary = f"{first} {format_summary(summarise(runs), data.task)}"
    if info.is_main:
        print(f"{spec.recipe} recipe: {data.dataset} {data.setting}, frame {frame.kind}, {what} ({len(train)} clouds), "
              f"{spec.model}, {spec.length}, lr {spec.lr}, {args.runs} runs, {args.split} split, last step: {summary}")
        if spec.test_every:
            best = format_summary(summarise([run[BEST] for run in runs]), data.task)
            print(f"best {args.split} epoch, for comparison with the paper's numbers only (the {args.split} split "
                  f"scored after every {spec.test_every} of {spec.epochs} epochs: "
                  f"{-(-spec.epochs // spec.test_every)} predictions of its {len(test)} clouds a run): {first} {best}")
        if out:
            atomic_write(json.dumps({"from": source, "resample": args.resample, "data": data.key(),
                                     "frame": frame.kind, "recipe": spec.record(), "split": args.split, "runs": runs,
                                     "validation": validation_record(tried)}, indent=1).encode(), out)
    return Evaluated(None if source == "full" else prov, spec, runs)


def _provenances(sources: Sequence[str]) -> list[dict[str, Any]]:
    """The provenance of each file of a list of distillations, read once for the checks before
    anything trains; ``full`` refused (each file is one distillation seed)."""
    if "full" in sources:
        raise ValueError("several --from files, or --against, are condensed files (one a distillation seed), "
                         "not full")
    return [read_condensed(set_path(source)).provenance for source in sources]


def _seeds(sources: Sequence[str], provenances: Sequence[dict[str, Any]]) -> list[int]:
    """The distillation seed of each file of a list (``provenances`` theirs), checked before anything
    trains: files of one method, one seed a file."""
    seeds: list[int] = []
    method = None
    for source, prov in zip(sources, provenances):
        method = method or prov["method"]
        if prov["seed"] in seeds or prov["method"] != method:
            raise ValueError(f"{source}: {prov['method']} seed {prov['seed']}; each file of a list must be another "
                             f"seed of one method ({method})")
        seeds.append(prov["seed"])
    return seeds


def _one_data_and_cpc(sources: Sequence[str], provenances: Sequence[dict[str, Any]]) -> None:
    """Refuse, before anything trains, files of --from and --against (``provenances`` theirs) made
    from other data or at another CPC than the first file: their scores and gains are not comparable."""
    fields = ("dataset", "setting", "task", "data_seed", "size", "cpc")
    first = provenances[0]
    for source, prov in zip(sources[1:], provenances[1:]):
        for field in fields:
            if prov[field] != first[field]:
                raise ValueError(f"{source}: {field} {prov[field]!r}, {sources[0]} {first[field]!r}; every file of "
                                 "--from and --against must be of one data set and CPC")


def _evaluate_distillations(args: argparse.Namespace, info: DistInfo) -> None:
    """Several distillations of one method (decision 94): each file's line, then the mean with the
    t interval over the distillations' means, and the gain over ``--against`` paired by seed."""
    if any(len(values or []) > 1 for values in (args.steps, args.epochs, args.lr)):
        raise ValueError("several --steps, --epochs or --lr with several files: choose the recipe on one set first")
    sides = {"from": args.source, "against": args.against or []}
    provenances = {side: _provenances(files) for side, files in sides.items()}
    seeds = {side: _seeds(files, provenances[side]) for side, files in sides.items()}
    _one_data_and_cpc([*sides["from"], *sides["against"]], [*provenances["from"], *provenances["against"]])
    if args.against:  # refused before anything trains
        common_seeds(seeds["from"], seeds["against"], ("--from", "--against"))
    ours, theirs = ({seed: _evaluate_set(args, source, None, info) for seed, source in zip(seeds[side], files)}
                    for side, files in (("from", args.source), ("against", args.against or [])))
    some = next(iter(ours.values()))
    task = some.provenance["task"]
    score = SCORES[task][0]
    points = {side: {seed: [100.0 * run[score] for run in e.runs] for seed, e in found.items()}
              for side, found in (("from", ours), ("against", theirs))}
    cell = two_level(list(points["from"].values()))
    record: dict[str, Any] = {"from": args.source, "against": args.against, "recipe": some.spec.record(),
                              "split": args.split, "runs": {str(s): e.runs for s, e in ours.items()},
                              "against_runs": {str(s): e.runs for s, e in theirs.items()},
                              "distillations": asdict(cell)}
    lines = [f"{some.provenance['method']} over {len(ours)} distillations (seeds {', '.join(map(str, ours))}): "
             f"{LABELS[score]} {format_two_level(cell)} (95% t interval over the distillations' means; with 2 the t "
             "factor is 12.7)"]
    if theirs:
        gain = paired_gain(points["from"], points["against"])
        record["gain"] = asdict(gain)
        lines.append(f"gain over --against ({next(iter(theirs.values())).provenance['method']}) paired by seed: "
                     f"{format_gain(gain)}")
    if info.is_main:
        print("\n".join(lines))
        if args.out:
            atomic_write(json.dumps(record, indent=1).encode(), args.out)


def _table(args: argparse.Namespace, info: DistInfo) -> None:
    base = DataSpec("shapes", size=args.size, points=args.points)
    recipe = _spec(args, base.task)
    table = coreset_table(base, ("aligned", "rotated"), args.cpcs, args.runs, recipe, args.seed,
                          Path(args.out), info)
    if info.is_main:
        size = "" if args.size is None else f"size {args.size}, "
        print(f"# shapes ({size}{args.points} points), pointnet {recipe.length}, {args.runs} runs, test OA % (mAcc %), "
              f"mean ± 95% interval, last step; {recipe.describe()}\n\n{table}")


def _study(args: argparse.Namespace, info: DistInfo) -> None:
    plan = PRESETS[args.preset]
    if args.data_root is not None and args.dataset is None:
        raise ValueError(f"--data-root is the download of --dataset; the preset's data set ({plan.dataset}) is "
                         "generated and reads none: give --dataset with it, or leave it out")
    if args.dataset is not None:
        plan = replace(plan, dataset=args.dataset, root=args.data_root)
    if args.cpcs is not None:
        if min(args.cpcs) < 1:
            raise ValueError(f"--cpcs must be 1 or more, got {args.cpcs}")
        plan = replace(plan, cpcs=tuple(sorted(set(args.cpcs))))
    counts = ("iterations", "points", "draw_points", "distills")
    for name in counts:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be 1 or more, got {value}")
    plan = replace(plan, **{name: value for name in counts if (value := getattr(args, name)) is not None})
    if plan.draw_points is not None and plan.draw_points <= plan.points:
        raise ValueError(f"--draw-points {plan.draw_points} must be more than the clouds' {plan.points} points "
                         "(DD3D's sets drawn denser than they were distilled)")
    if args.size is not None:
        plan = replace(plan, size=args.size)  # load_objects checks it, naming the data set
    select = Selection(tuple(args.methods), tuple(args.settings), tuple(args.terms), tuple(args.topo_weights),
                       tuple(args.topo_ratios), tuple(args.controls))
    bad = sorted(set(args.tables) - set(TABLES))
    if bad:
        raise ValueError(f"--tables {bad} are not among {list(TABLES)}")
    text = run_study(plan, tuple(sorted(set(args.tables))), Path(args.out), info, select)
    if info.is_main:
        print(f"# {PROG} study, preset {args.preset}, CPC {' '.join(map(str, plan.cpcs))}\n\n{text}")


def _draw_bytes(clouds: int, points: int) -> int:
    """The memory a draw of ``clouds`` clouds of ``points`` points from a generator holds at its
    peak: three float32 activations of the generator's width a point (a sine layer's input and output
    and its modulation); the process's peak resident growth measured 1.01 and 1.00 times it at 10
    clouds of 20,000 and 50,000 points (AMD EPYC, one thread)."""
    return 3 * clouds * points * GENERATOR_WIDTH * 4


def _sample(args: argparse.Namespace) -> int:
    """The ``sample`` form: one process, no device choice (a draw of the generator takes seconds)."""
    try:
        if args.points < 1:
            raise ValueError(f"--points must be a positive integer, got {args.points}")
        source = set_path(args.source)
        clouds = len(read_condensed(source).labels)
        check_fits(_draw_bytes(clouds, args.points), f"drawing {clouds} clouds of {args.points} points",
                   "ask for fewer --points")
        cset = redrawn(source.parent, args.points, args.seed)
        path = write_condensed(cset, args.out)
    except (*ERRORS, GeneratorFileError) as err:
        return refuse(f"{PROG} sample: error: {err}")
    print(f"{PROG} sample: {len(cset)} clouds of {args.points} points -> {path}")
    return 0


def _show(args: argparse.Namespace) -> int:
    """The ``show`` form: one process, the real clouds those of the first file's data."""
    try:
        sets = [read_condensed(set_path(source)) for source in args.sources]
        real = in_frame(file_data(sets[0], args.data_root).load("train"), rotator_of(sets[0].provenance["frame"]))
        path = (draw_diagrams if args.diagrams else draw_clouds)(real, sets, args.out, args.names, args.classes)
    except ERRORS as err:
        return refuse(f"{PROG} show: error: {err}")
    what = "diagrams" if args.diagrams else "clouds"
    print(f"{PROG} show: real {real.name} {what} beside {len(sets)} condensed set file(s) -> {path}")
    return 0


def _form(argv: list[str]) -> str:
    """The form ``argv`` names: condense when it starts with an option; ValueError for an unknown name."""
    if not argv or argv[0].startswith("-"):
        return "condense"
    if argv[0] in FORMS:
        return argv[0]
    close = difflib.get_close_matches(argv[0], FORMS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown form {argv[0]!r}{hint} (the forms: {', '.join(FORMS)}; condensing names none: "
                     f"{PROG} --dataset D --method M --cpc C --out O)")


def _launching() -> bool:
    """Whether this process speaks for the run: the one the user started, or torchrun's rank 0 (not
    a rank that ``--procs`` started, whose launching process holds the folder and says the lines)."""
    return SPAWNED_ENV not in os.environ and os.environ.get("RANK", "0") == "0"


def _spawns(args: argparse.Namespace) -> bool:
    """Whether this process starts ``--procs`` ranks (which are passed the signals, spawn_local)."""
    return args.procs > 1 and "WORLD_SIZE" not in os.environ


def _scores_file(path: Path) -> bool:
    """Whether ``path`` holds what ``evaluate --out`` writes: a JSON object of runs, recipe and split."""
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"runs", "recipe", "split"} <= set(record)


def _png_file(path: Path) -> bool:
    """Whether ``path`` starts with the PNG signature (what ``show`` writes)."""
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


def _prepare(form: str, args: argparse.Namespace, held: ExitStack) -> ObjectSet | None:
    """Every check before any work (decision 90): the device, the options and, for condense, every
    refusal its train split can give (:func:`checked_split`), then every --out; the run folder held
    (and, for condense, cleared for the run) by the process the user started. The condense form's
    train split when this process goes on to condense it (None: not read, or read by the ranks)."""
    if getattr(args, "device", "auto") == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device cuda: this torch {torch.__version__} sees no CUDA device (built for CUDA "
                         f"{torch.version.cuda or 'none'}); give --device cpu, or auto")
    if getattr(args, "procs", 1) < 1:
        raise ValueError(f"--procs must be a positive integer, got {args.procs}")
    out = None if args.out is None else Path(args.out)
    if form in ("evaluate", "sample", "show"):
        if out is not None:
            check_file_out(out, *{"evaluate": (None,), "sample": (".npz", "condensed set"),
                                  "show": (".png", "picture")}[form])
        if form == "sample" and out.exists() and not args.overwrite:
            raise ValueError(f"--out {out} already exists: give another file, or --overwrite to replace it")
        if form in ("evaluate", "show") and out is not None:
            own, what = {"evaluate": (_scores_file, "a scores file of evaluate (JSON)"),
                         "show": (_png_file, "a PNG picture")}[form]
            check_replaceable(out, own, what, args.overwrite)
        return None
    train = None
    if form == "condense":
        data = _given_data(args)
        _check_recipe_options(args)
        distill, _ = _distill(args), _spec(args, data.task)  # refused before the run folder is touched
        if _launching():  # a rank reads and checks its split in condense_set
            processes = int(os.environ.get("WORLD_SIZE", args.procs))
            train, _ = checked_split(data, args.method, args.cpc, distill, args.rotator, processes=processes)
    check_folder_out(out)
    if _launching():
        held.enter_context(hold_folder(out))
        if form == "condense":
            clear_for_run(out, bool(args.resume) and args.method in DISTILLATIONS, args.overwrite)
    return None if _spawns(args) else train


def _kept(form: str, args: argparse.Namespace, argv: list[str]) -> tuple[str, list[str]]:
    """What a stopped or failed run of ``form`` kept, and the arguments that go on from it."""
    kept, again = "nothing is kept", argv
    if form == "condense":
        unchanged = " (the set already in --out is unchanged)" if args.overwrite else ""
        path = run_folder(Path(args.out), args.overwrite) / CHECKPOINT_NAME
        done = saved_iteration(path) if args.method in DISTILLATIONS else None
        if args.method not in DISTILLATIONS:
            kept = f"nothing is kept{unchanged}"
        elif done is None:
            kept = f"its first iteration had not ended: nothing is kept{unchanged}"
        else:
            total = args.iterations or iterations_for(args.dataset, args.task or "classification")
            kept = f"the checkpoint of iteration {done} of {total} is kept in {path}{unchanged}"
            again = argv + ([] if "--resume" in argv else ["--resume"])
    elif form == "study":
        kept = (f"the finished units and the last checkpoint of the unit under way are kept in "
                f"{Path(args.out) / 'units'}, and the study goes on from them")
    elif form == "table":
        kept = "the sets written so far are kept, not the table"
    return kept, again


def _stop_line(form: str, args: argparse.Namespace, argv: list[str], signum: int) -> str:
    """What a stop kept, and the command that goes on from it (:mod:`train.condense.cli.stop`)."""
    kept, again = _kept(form, args, argv)
    return f"{PROG}: stopped by {signal.Signals(signum).name}; {kept}; go on with: {shlex.join([*PROG.split(), *again])}"


def _run_form(form: str, args: argparse.Namespace, argv: list[str], train: ObjectSet | None) -> int:
    """The form's work: sample and show in this process, the others launched (their exit status);
    ``train``: the condense form's train split, read by :func:`_prepare`."""
    if form not in LAUNCHED:
        return {"sample": _sample, "show": _show}[form](args)
    body = {"condense": partial(_condense, argv=argv, train=train), "evaluate": _evaluate, "table": _table,
            "study": _study}[form]

    def guarded(info: DistInfo) -> None:
        with memory_refused(f"{PROG}{'' if form == 'condense' else ' ' + form}", MEMORY_FIX):
            body(args, info)
    return launch(main, argv, args.procs, args.device, False, guarded, PROG, (*ERRORS, FeatureCacheError),
                  STOP_SIGNALS if _spawns(args) else ())


def main(argv: Sequence[str] | None = None) -> int:
    """The command (module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        form = _form(argv)
    except ValueError as err:
        return refuse(f"{PROG}: error: {err}")
    args = build_parsers()[form].parse_args(argv[1:] if form != "condense" else argv)
    with stopping(), ExitStack() as held:
        try:
            train = _prepare(form, args, held)
        except (ValueError, OSError, MemoryError) as err:
            return refuse(f"{PROG}{'' if form in LAUNCHED else ' ' + form}: error: {err}")
        try:
            code = _run_form(form, args, argv, train)
        except Stopped as stop:
            code = stop.code
        signum = stopped_code(code)
        if signum is not None and _launching():
            print(_stop_line(form, args, argv, signum), file=sys.stderr, flush=True)
        return code
