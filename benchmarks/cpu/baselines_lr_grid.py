"""The explicit baselines' optimiser chosen on validation (decision 93): GM, DM and TM on ``shapes``
at the study's CPU preset (aligned, CPC 1, 64 points, 40 iterations) distilled with each optimiser
and learning rate of a grid (Dataset Condensation's SGD with momentum 0.5, and Adam), every set
trained ``runs`` times with the preset's recipe and scored on the ``val`` split; the Random draw
of the same seeds beside it. The test split takes no part.

    OMP_NUM_THREADS=1 python -m benchmarks.cpu.baselines_lr_grid run --methods gm --seeds 0 --work /tmp/grid
    python -m benchmarks.cpu.baselines_lr_grid collect --work /tmp/grid \
        --out benchmarks/studies/condense-cpu/baselines-lr-grid.json

``run`` writes one JSON a cell into ``--work`` (a cell another process started is skipped, so
several processes share the grid; a stopped cell's ``.started`` file is removed to run it again); ``collect`` gathers them, with each
setting's mean validation OA over every seed and run and the best setting of each method and
optimiser (the earliest on a tie). Each set is kept as ``--work``/sets/<cell>/condensed.npz. A
setting whose seed 0 scores over :data:`PRUNE` points below Random's seed 0 is not run again at
the later seeds (its rate destroys the clouds), which keeps GM's grid within an hour here.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.condense.files.condensed_file import write_condensed
from train.condense.files.data import DataSpec, clouds_of, in_frame
from train.condense.matching.features import CACHE_NAME
from train.condense.matching.matching_loops import DistillSpec
from train.condense.methods import condense_set
from train.condense.evaluation.metrics import summarise
from train.condense.evaluation.protocol import evaluate_runs
from train.condense.files.rotator import Rotator
from train.condense.studies.study import PRESETS
from train.condense.evaluation.training import Clouds
from train.runtime.distributed import DistInfo
from train.runtime.files import atomic_write

PLAN = PRESETS["cpu"]
DATA = DataSpec(PLAN.dataset, points=PLAN.points)
# SGD's rates span a step of about 2e-4 to 0.2 a coordinate at the start: D's and DM's gradients are
# about 20 a coordinate (root mean square) on real shapes clouds at 64 points, CPC 1
GRID = (("sgd", 1e-5), ("sgd", 1e-4), ("adam", 1e-3), ("adam", 1e-2), ("sgd", 1e-3), ("sgd", 1e-2))
CPU = DistInfo(0, 1, 0, torch.device("cpu"))
PRUNE = 10.0  # validation OA points below Random at seed 0 that skip a setting's later seeds


def cell_name(method: str, optimizer: str, lr: float, seed: int) -> str:
    return f"{method}-{optimizer}-{lr:g}-s{seed}" if method != "random" else f"random-s{seed}"


def run_cell(method: str, optimizer: str, lr: float, seed: int, runs: int, val: Clouds, work: Path) -> dict[str, Any]:
    """One set distilled (or drawn) and trained ``runs`` times, scored on ``val``."""
    start = time.perf_counter()
    spec = DistillSpec(iterations=PLAN.iterations, cloud_optimizer=optimizer, cloud_lr=lr)
    cset = condense_set(DATA, method, 1, seed, PLAN.recipe, work / "cache" / CACHE_NAME, CPU, distill=spec)
    seconds = time.perf_counter() - start
    if np.isfinite(cset.points).all():
        write_condensed(cset, work / "sets" / cell_name(method, optimizer, lr, seed))
    record = cset.provenance["distill"] or {}
    cell: dict[str, Any] = {"method": method, "optimizer": optimizer if method != "random" else None,
                            "lr": lr if method != "random" else None, "seed": seed, "condense_seconds": seconds,
                            "loss": record.get("loss"),
                            "moved": float(np.abs(cset.points - condense_set(DATA, "random", 1, seed, PLAN.recipe,
                                           work / "cache" / CACHE_NAME, CPU).points).mean())}
    if not np.isfinite(cset.points).all():
        return {**cell, "runs": None, "diverged": True}
    train = Clouds(cset.points, cset.labels, val.num_classes)
    return {**cell, "runs": evaluate_runs(train, val, PLAN.recipe, runs, 0, CPU, desc=cell_name(method, optimizer, lr,
                                                                                               seed))}


def pruned(work: Path, method: str, optimizer: str, lr: float, seed: int) -> bool:
    """A later seed's cell is skipped when seed 0's cell of the setting scored over ``PRUNE`` points
    of validation OA below seed 0's Random draw: the rate destroys the clouds."""
    first, random = work / f"{cell_name(method, optimizer, lr, 0)}.json", work / "random-s0.json"
    if seed == 0 or not first.exists() or not random.exists():
        return False
    cell, base = json.loads(first.read_text()), json.loads(random.read_text())
    return cell["runs"] is None or 100 * (np.mean([r["oa"] for r in base["runs"]])
                                          - np.mean([r["oa"] for r in cell["runs"]])) > PRUNE


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    work = Path(args.work)
    val = clouds_of(in_frame(DATA.load("val"), Rotator("none")))
    grid = GRID if args.only is None else [(o, float(lr)) for o, lr in (pair.split(":") for pair in args.only)]
    cells = [("random", "", 0.0, s) for s in args.seeds] + [
        (m, o, lr, s) for m in args.methods for s in args.seeds for o, lr in grid]
    for method, optimizer, lr, seed in cells:
        path = work / f"{cell_name(method, optimizer, lr, seed)}.json"
        if pruned(work, method, optimizer, lr, seed):
            print(f"{path.stem}: pruned (seed 0 over {PRUNE:g} points below Random)", flush=True)
            continue
        try:
            path.with_suffix(".started").open("x").close()  # one process a cell
        except FileExistsError:
            continue
        cell = run_cell(method, optimizer, lr, seed, args.runs, val, work)
        atomic_write(json.dumps(cell, indent=1).encode(), path)
        oa = "diverged" if cell["runs"] is None else f"{100 * np.mean([r['oa'] for r in cell['runs']]):.1f}"
        print(f"{path.stem}: val OA {oa}, {cell['condense_seconds']:.0f} s, moved {cell['moved']:.4f}", flush=True)


def collect(args: argparse.Namespace) -> None:
    cells = [json.loads(p.read_text()) for p in sorted(Path(args.work).glob("*.json"))]
    settings: dict[str, dict[str, Any]] = {}
    for cell in cells:
        key = cell_name(cell["method"], cell["optimizer"], cell["lr"], 0)[:-3]
        entry = settings.setdefault(key, {"method": cell["method"], "optimizer": cell["optimizer"], "lr": cell["lr"],
                                          "seeds": [], "runs": [], "diverged": False})
        entry["seeds"].append(cell["seed"])
        entry["diverged"] |= cell["runs"] is None
        entry["runs"] += cell["runs"] or []
    for entry in settings.values():
        entry["val"] = None if entry["diverged"] else summarise(entry["runs"])
    chosen: dict[str, str] = {}
    for key, entry in settings.items():
        if entry["val"] is None or entry["method"] == "random":
            continue
        for group in (entry["method"], f"{entry['method']}-{entry['optimizer']}"):
            best = chosen.get(group)
            if best is None or entry["val"]["oa"][0] > settings[best]["val"]["oa"][0]:
                chosen[group] = key
    out = {"plan": {"dataset": PLAN.dataset, "setting": "aligned", "points": PLAN.points, "cpc": 1,
                    "iterations": PLAN.iterations, "recipe": PLAN.recipe.__dict__, "split": "val"},
           "grid": [list(g) for g in GRID], "settings": settings, "chosen": chosen, "cells": cells}
    atomic_write(json.dumps(out, indent=1).encode(), args.out)
    for key, entry in settings.items():
        val = "diverged" if entry["val"] is None else f"{entry['val']['oa'][0]:.1f} ± {entry['val']['oa'][1]:.1f}"
        print(f"{key}: val OA {val} ({len(entry['runs'])} runs)")
    print("chosen:", chosen)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu.baselines_lr_grid")
    forms = p.add_subparsers(dest="form", required=True)
    r = forms.add_parser("run")
    r.add_argument("--methods", nargs="+", default=["gm", "dm"])
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    r.add_argument("--runs", type=int, default=3)
    r.add_argument("--only", nargs="+", help="these settings of the grid, OPTIMIZER:LR each (default all)")
    r.add_argument("--work", required=True)
    c = forms.add_parser("collect")
    c.add_argument("--work", required=True)
    c.add_argument("--out", required=True)
    args = p.parse_args()
    (run if args.form == "run" else collect)(args)


if __name__ == "__main__":
    main()
