"""DD3D against the baselines, measurement 1: can DD3D's generator hold the real clouds at this resolution?

DD3D's generator (:class:`train.condense.matching.generator.PointGenerator`, ``shapes``' w0, built and seeded
as :func:`train.condense.methods.dd3d.distill_dd3d` builds it) is fitted with a symmetric Chamfer loss,
no gradient matching, to the clouds Random picks for the same seed (CPC 1, aligned: one real
training cloud a class, :func:`train.condense.methods.coreset.select_per_class` with ``random_order``),
each step on fresh noise at the clouds' resolution, with DD3D's released Adam (lr 1e-3, weight
decay 5e-4, cut by 10 at half the steps, decision 92). ``--steps`` 4000 is the generator's Adam
steps in a 400-iteration DD3D run at CPC 1 (10 outer steps an iteration); the Chamfer distance
is also recorded at step 400 (a 40-iteration run's steps).

The fitted set is drawn as DD3D draws its condensed set (:func:`train.condense.methods.dd3d.draw_set`:
noise from the seed, in the unit sphere), written with the generator as a study unit
(``init`` ``chamferfit<steps>``: its own folder name) and evaluated with the study's ``cpu`` preset
(:func:`train.condense.studies.study.run_unit`: the cpu recipe, 5 trainings), beside Random's unit of the
same seed at the same resolution (``--steps 0``: Random and its bootstrap only), and evaluated again on fresh draws of the generator each time a
cloud is used (the study's ``resample`` units, decision 85: Table 6's "DD3D resampled"). With ``--draw-at M`` the fitted generator is also drawn at M
points (the study's cross-resolution units) beside Random at M points.

    OMP_NUM_THREADS=1 python benchmarks/studies/condense-dd3d-gap-cpu/capacity.py OUT --points 64 --seeds 0 1 2

The ``bootstrap`` unit (``random`` with ``init`` ``bootstrap``) is what a perfect point-wise generator of
Random's clouds would draw: each cloud's points drawn with replacement from its Random cloud.

``--dataset`` takes another object data set than the cpu preset's ``shapes`` (``lidar_objects``: its
OUT apart, its record named ``capacity-lidar_objects-p<points>-steps<steps>.json``). Prints (and
writes ``OUT/capacity-p<points>-steps<steps>.json``) per seed: test OA and mAcc means of Random and
of the fit, and the Chamfer distances (unit sphere, :func:`train.condense.studies.shape_gap.chamfer_to_nearest`'s
measure): the fit's drawn cloud to its target, to the nearest real cloud of its class, and the
target's own distance to the nearest *other* real cloud of its class (how far apart two real
clouds of a class are at this resolution).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from train.condense.files.condensed_file import CondensedSet, current_commit, write_condensed
from train.condense.methods.coreset import random_order, select_per_class
from train.condense.files.data import DataSpec
from train.condense.methods.dd3d import GENERATOR_NAME, draw_set, save_generator, unit_sphere
from train.condense.matching.controls import chamfer
from train.condense.matching.generator import DATASET_W0, PointGenerator
from train.condense.matching.released import generator_adam
from train.condense.files.rotator import Rotator, frame_record
from train.condense.studies.shape_gap import chamfer_to_nearest
from train.condense.studies.study import PRESETS, Plan, Unit, run_unit
from train.runtime.distributed import DistInfo

INIT = "chamferfit"  # the fitted units' init field (their folder names): INIT + the Adam steps
FIT_DRAWS = 5  # fresh draws the fit's Chamfer distance to its target is averaged over


def targets(train, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random's picks at CPC 1 for ``seed`` (indices into the split) and their labels."""
    index = select_per_class(train.labels, np.empty((len(train), 0)), 1, random_order, seed)
    return index, train.labels[index]


def fit(train, seed: int, steps: int, log_every: int = 400) -> tuple[PointGenerator, dict]:
    """DD3D's generator fitted to Random's clouds of ``seed`` (module docstring); its trajectory."""
    index, labels = targets(train, seed)
    target = torch.from_numpy(train.points[index])
    points = train.points.shape[1]
    torch.manual_seed(seed)  # as distill_dd3d: the generator's initialisation from the seed
    draws = torch.Generator().manual_seed(seed)
    generator = PointGenerator(len(labels), DATASET_W0[train.name])
    adam = generator_adam("classification")
    optimizer = torch.optim.Adam(generator.parameters(), lr=adam.lr, weight_decay=adam.weight_decay)
    rows = torch.arange(len(labels))
    trajectory, start = {}, time.perf_counter()
    for step in range(steps):
        if step == steps // 2:
            for group in optimizer.param_groups:
                group["lr"] = adam.lr / 10
        clouds = generator(torch.rand(len(labels), points, generator=draws), rows)
        loss = chamfer(clouds, target).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % log_every == 0 or step == 0:
            trajectory[step + 1] = float(loss.detach())
    return generator, {"index": index.tolist(), "labels": labels.tolist(), "trajectory": trajectory,
                       "fit_seconds": time.perf_counter() - start}


def distances(generator: PointGenerator, train, index: np.ndarray, seed: int) -> dict[str, float]:
    """The fit's Chamfer distances (unit sphere) and the real clouds' own, means over the classes (the
    real clouds' own over the classes with more than one training cloud)."""
    points = train.points.shape[1]
    target = unit_sphere(torch.from_numpy(train.points[index]).double())
    drawn = [torch.from_numpy(draw_set(generator, Rotator("none"), points, seed + 1000 * d)[0]).double()
             for d in range(FIT_DRAWS)]
    to_target = float(np.mean([chamfer(d, target).mean().item() for d in drawn]))
    to_nearest, real_nn, real_median = [], [], []
    for row, i in enumerate(index):
        k = train.labels[i]
        members = np.flatnonzero(train.labels == k)
        real = unit_sphere(torch.from_numpy(train.points[members]).double())
        to_nearest.append(chamfer_to_nearest(drawn[0][row], real))
        others = real[members != i]
        if len(others) == 0:  # a class of one training cloud (lidar_objects' bicycle) has no other to be near
            continue
        real_nn.append(chamfer_to_nearest(target[row], others))
        real_median.append(float(torch.median(chamfer(target[row].expand(len(others), -1, -1), others))))
    return {"fit_to_target": to_target, "fit_to_nearest_real": float(np.mean(to_nearest)),
            "target_to_nearest_other_real": float(np.mean(real_nn)),
            "target_to_median_other_real": float(np.mean(real_median))}


def provenance_of(train, seed: int, dataset: str) -> dict:
    """A condensed file's provenance for a set of this study (aligned, CPC 1, the data's frame)."""
    return {"method": "dd3d", "dataset": dataset, "setting": "aligned", "task": "classification", "cpc": 1,
            "seed": seed, "data_seed": 0, "size": None, "commit": current_commit(),
            "class_names": list(train.class_names), "part_names": None, "frame": frame_record(Rotator("none")),
            "distill": None}


def bootstrap(train, index: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """What a perfect point-wise generator of Random's clouds draws: each cloud's points drawn with
    replacement from its Random cloud (i.i.d. draws, as DD3D's one noise scalar a point gives), in the
    unit sphere as ``draw_set`` puts them; and the mean Chamfer distance of such a draw to its target
    over :data:`FIT_DRAWS` draws (the floor of the fit's ``fit_to_target``)."""
    target = torch.from_numpy(train.points[index]).double()
    points = target.shape[1]
    rng = np.random.default_rng([seed, 93])
    draws = [unit_sphere(target[torch.arange(len(index))[:, None], torch.from_numpy(rng.integers(0, points, (len(index), points)))])
             for _ in range(FIT_DRAWS)]
    gap = float(np.mean([chamfer(d, unit_sphere(target)).mean().item() for d in draws]))
    return draws[0].numpy().astype(np.float32), gap


def record_name(dataset: str, points: int, steps: int) -> str:
    """The record's file name: the preset's data set (``shapes``) unnamed, any other named."""
    named = "" if dataset == PRESETS["cpu"].dataset else f"{dataset}-"
    return f"capacity-{named}p{points}-steps{steps}.json"


def put(row: dict, key: str, result: dict) -> None:
    """``row[key]`` the unit's mean test OA %, and the same key with ``_macc`` for ``_oa`` its mAcc %
    (the score that compares sets where one class is most of the test clouds, ``lidar_objects``)."""
    for score in ("oa", "macc"):
        row[key.replace("_oa", f"_{score}", 1)] = round(100.0 * float(np.mean([r[score] for r in result["runs"]])), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--points", type=int, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--steps", type=int, default=4000, help="the fit's Adam steps (0: no fit, Random and its "
                                                                   "bootstrap only)")
    parser.add_argument("--draw-at", type=int, nargs="*", default=[])
    parser.add_argument("--dataset", default=PRESETS["cpu"].dataset, help="the object data set (default the cpu "
                                                                           "preset's); OUT holds one")
    args = parser.parse_args()
    torch.set_num_threads(1)
    plan: Plan = replace(PRESETS["cpu"], points=args.points, dataset=args.dataset)
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    train = DataSpec(plan.dataset, setting="aligned", points=args.points).load("train")
    record_path = args.out / record_name(args.dataset, args.points, args.steps)
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    for seed in args.seeds:
        row = record.setdefault(str(seed), {})
        unit = Unit(1, "dd3d", "aligned", 1, seed, args.points, args.points, init=f"{INIT}{args.steps}")
        folder = args.out / "units" / unit.name
        if args.steps > 0 and not (folder / "condensed.npz").exists():
            generator, log = fit(train, seed, args.steps)
            labels = np.asarray(log["labels"], dtype=np.int64)
            save_generator(generator, Rotator("none"), labels, None, folder / GENERATOR_NAME)
            clouds, _ = draw_set(generator, Rotator("none"), args.points, seed)
            provenance = {**provenance_of(train, seed, plan.dataset),
                          "distill": {"chamfer_fit": {"steps": args.steps, "trajectory": log["trajectory"]}}}
            write_condensed(CondensedSet(clouds, labels, provenance), folder)
            row["fit"] = {**log, **distances(generator, train, np.asarray(log["index"]), seed)}
            record_path.write_text(json.dumps(record, indent=1))
        boot = Unit(1, "random", "aligned", 1, seed, args.points, args.points, init="bootstrap")
        if not (args.out / "units" / boot.name / "condensed.npz").exists():
            index, labels = targets(train, seed)
            clouds, gap = bootstrap(train, index, seed)
            provenance = {**provenance_of(train, seed, plan.dataset), "method": "random",
                          "distill": {"bootstrap": "each cloud its Random cloud's points drawn with replacement"}}
            write_condensed(CondensedSet(clouds, labels.astype(np.int64), provenance), args.out / "units" / boot.name)
            row["bootstrap_to_target"] = gap
        put(row, "bootstrap_oa", run_unit(plan, boot, args.out, info, f"bootstrap, seed {seed}"))
        put(row, "random_oa", run_unit(plan, Unit(1, "random", "aligned", 1, seed, args.points, args.points),
                                       args.out, info, f"random, seed {seed}"))
        if args.steps == 0:  # Random and its bootstrap only
            record_path.write_text(json.dumps(record, indent=1))
            continue
        put(row, "fit_oa", run_unit(plan, unit, args.out, info, f"capacity fit, seed {seed}"))
        put(row, "fit_oa_resampled", run_unit(plan, replace(unit, resample=True), args.out, info,
                                              f"capacity fit resampled, seed {seed}"))
        for at in args.draw_at:
            put(row, f"fit_oa_at{at}", run_unit(plan, replace(unit, eval_points=at), args.out, info,
                                                f"capacity fit at {at}, seed {seed}"))
            put(row, f"random_oa_p{at}", run_unit(plan, Unit(1, "random", "aligned", 1, seed, at, at), args.out, info,
                                                  f"random at {at}, seed {seed}"))
        record_path.write_text(json.dumps(record, indent=1))
    print(json.dumps({s: {k: v for k, v in r.items() if k != "fit"} | ({} if "fit" not in r else {
        "chamfer": {k: round(v, 5) for k, v in r["fit"].items() if k.startswith(("fit_to", "target_to"))},
        "fit_loss_at": {k: round(v, 5) for k, v in r["fit"]["trajectory"].items()}}) for s, r in record.items()},
        indent=1))


if __name__ == "__main__":
    main()
