"""Is it the topology, or any extra loss at that strength? A probe of the persistence term against its
non-topological controls at matched strength (decision 101), at the CPU preset (shapes, 64 points,
CPC 1, aligned, 40 outer iterations, the cpu recipe: 5 trainings of 100 steps a set).

For each method (GM, DD3D) and distillation seed, four sets: no term; the shape reading at W;
the chamfer control and the start control in its place, each scaled at every class's step to the
term's gradient norm on the synthetic parameters. Each set is scored on the test split (and on
validation) and its Chamfer and diagram gaps are measured against the training split and the
held-out test split (``train.condense.studies.shape_gap``). A unit is written when it has finished
(``units/<name>/result.json``; its set and scores are the study's unit of it, made by
``study.run_unit`` under ``<out>/study``), so a stopped probe goes on.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/studies/condense-topo-controls-cpu/probe.py run OUT \
        [--methods gm dd3d] [--seeds 0 1 2] [--weight 10000]
    PYTHONPATH=. python benchmarks/studies/condense-topo-controls-cpu/probe.py keep OUT   # -> results.json here
    PYTHONPATH=. python benchmarks/studies/condense-topo-controls-cpu/probe.py report OUT|KEPT   # the table

``keep`` copies every finished unit's record into ``results.json`` beside this script (the sets and
checkpoints stay in OUT); ``report`` reads a probe folder or that file.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.condense.evaluation.metrics import paired_gain
from train.condense.evaluation.protocol import VAL, format_gain
from train.condense.files.condensed_file import read_condensed
from train.condense.files.data import DataSpec, in_frame
from train.condense.files.rotator import rotator_of
from train.condense.studies.shape_gap import shape_gap
from train.condense.studies.study import PRESETS, Unit
from train.condense.studies.study import run_unit as study_unit
from train.runtime.distributed import DistInfo
from train.runtime.files import atomic_write

PLAN = PRESETS["cpu"]
DATA = DataSpec("shapes", None, "aligned", "classification", points=PLAN.points)
VARIANTS = ("none", "shape", "chamfer", "start")  # no term, the term, its two controls


def unit_name(method: str, variant: str, seed: int, weight: float) -> str:
    return f"{method}-{variant}" + ("" if variant == "none" else f"-w{weight:g}") + f"-s{seed}"


def run_unit(out: Path, method: str, variant: str, seed: int, weight: float, info: DistInfo) -> dict[str, Any]:
    """One set condensed and evaluated as the study's unit of it (``study.run_unit``, its folder under
    ``<out>/study``), then measured (module docstring); its record, read back when finished."""
    path = out / "units" / unit_name(method, variant, seed, weight) / "result.json"
    if path.exists():
        return json.loads(path.read_text())
    term = {} if variant == "none" else {"topo": "shape", "topo_weight": weight,
                                         "control": None if variant == "shape" else variant}
    unit = Unit(10, method, "aligned", 1, seed, PLAN.points, PLAN.points, **term)
    result = study_unit(PLAN, unit, out / "study", info, f"probe, {path.parent.name}")
    cset = read_condensed(out / "study" / "units" / unit.set_name / "condensed.npz")
    frame = rotator_of(cset.provenance["frame"])
    train, test = (in_frame(DATA.load(split), frame) for split in ("train", "test"))
    norms = cset.provenance["distill"].get("strength_norms")
    record = {"method": method, "variant": variant, "seed": seed, "weight": None if variant == "none" else weight,
              "iterations": PLAN.iterations, "runs": result["runs"], "seconds": result.get("condense_seconds"),
              "gaps": {"train": shape_gap(cset, train), "test": shape_gap(cset, test)},
              "control_norms": None if norms is None else {"term": norms["term"], "control": norms["control"],
                                                           "steps": norms["steps"]}}
    atomic_write(json.dumps(record, indent=1).encode(), path)
    return record


def finished(out: Path) -> list[dict[str, Any]]:
    """The records of a probe folder's finished units, or of a kept ``results.json``."""
    if out.is_file():
        return json.loads(out.read_text())
    return [json.loads(p.read_text()) for p in sorted((out / "units").glob("*/result.json"))]


def report(out: Path) -> str:
    """The probe's table: each variant's test OA over the seeds all four variants finished, its gain
    over no term paired by seed, the gaps (train / held-out test) and the matched norms."""
    results = finished(out)
    lines = ["| method | variant | seeds | test OA % | val OA % | gain over none (paired) | Chamfer gap train / test | "
             "diagram gap train / test | term norm / control norm |", "|---|---|---|---|---|---|---|---|---|"]
    for method in ("gm", "dd3d"):  # the seeds whose four variants have all finished, so rows compare
        done = [{r["seed"] for r in results if r["method"] == method and r["variant"] == v} for v in VARIANTS]
        mine = [r for r in results if r["method"] == method and r["seed"] in set.intersection(*done)]
        base = {r["seed"]: [100 * run["oa"] for run in r["runs"]] for r in mine if r["variant"] == "none"}
        for variant in VARIANTS:
            rows = [r for r in mine if r["variant"] == variant]
            if not rows:
                continue
            oa = {r["seed"]: [100 * run["oa"] for run in r["runs"]] for r in rows}
            val = np.mean([100 * run[VAL]["oa"] for r in rows for run in r["runs"] if VAL in run])
            gain = "-" if variant == "none" or not set(oa) & set(base) else format_gain(paired_gain(oa, base))
            gaps = {k: " / ".join(f"{np.mean([r['gaps'][s][k] for r in rows]):.4f}" for s in ("train", "test"))
                    for k in ("chamfer", "diagram")}
            norms = [r["control_norms"] for r in rows if r["control_norms"]]
            norm = (f"{np.mean([n['term'] for n in norms]):.3g} / {np.mean([n['control'] for n in norms]):.3g}"
                    if norms else "-")
            lines.append(f"| {method} | {variant} | {', '.join(map(str, sorted(oa)))} | "
                         f"{np.mean([np.mean(v) for v in oa.values()]):.1f} | {val:.1f} | {gain} | {gaps['chamfer']} | "
                         f"{gaps['diagram']} | {norm} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("form", choices=("run", "keep", "report"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--methods", nargs="+", default=["gm", "dd3d"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--weight", type=float, default=1e4)
    args = parser.parse_args()
    if args.form == "report":
        print(report(args.out))
        return
    if args.form == "keep":
        atomic_write(json.dumps(finished(args.out), indent=1).encode(), Path(__file__).with_name("results.json"))
        return
    torch.set_num_threads(1)
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    for seed in args.seeds:
        for method in args.methods:
            for variant in VARIANTS:
                run_unit(args.out, method, variant, seed, args.weight, info)


if __name__ == "__main__":
    main()
