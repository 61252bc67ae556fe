"""Why the persistence term hurts DD3D (benchmarks/CONDENSE-STUDY.md, sections 3 and 8): Table 7's DD3D units (shapes,
aligned, CPC 1, 64 points, 40 iterations, the cpu recipe) made again with the term changed one way
at a time, each variant in its own folder.

    OMP_NUM_THREADS=1 python benchmarks/studies/condense-topo-cpu/dd3d_topo_ablation.py OUT VARIANT

Variants: ``h1-only`` (the shape reading's PWCD summed over H1 alone, H0's pairs weighted 0: is the
collapse into thin curves H0's pull on every point's nearest-neighbour distance?) at W 10^4 and
10^5, where the full term costs 14 and 37 points; ``w100`` (the full term at W 10^2, below the
study's grid). Prints, per weight and seed, the test and validation OA means and both shape gaps
(train.condense.studies.shape_gap, the full H0 + H1 diagram gap, measured with the term's code as it is)
as JSON; compare with Table 7's DD3D rows (benchmarks/studies/condense-topo-cpu/study.json).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

import train.condense.matching.topology_term as topology_term
from train.condense.files.condensed_file import read_condensed
from train.condense.files.data import DataSpec, in_frame
from train.condense.files.rotator import rotator_of
from train.condense.studies.shape_gap import shape_gap
from train.condense.studies.study import PRESETS, Unit, run_unit
from train.runtime.distributed import DistInfo

SEEDS = (0, 1)


def _h1_only() -> None:
    full = topology_term.segment_pwcd

    def h1(*args: object) -> torch.Tensor:
        values = full(*args)  # one value a (set, target, dimension), dimensions innermost: H0, H1
        return values * torch.tensor([0.0, 1.0], dtype=values.dtype, device=values.device).repeat(len(values) // 2)
    topology_term.segment_pwcd = h1


VARIANTS = {"h1-only": (_h1_only, (1e4, 1e5)), "w100": (lambda: None, (1e2,))}


def run(out: Path, variant: str) -> dict[str, dict[str, float]]:
    patch, weights = VARIANTS[variant]
    full = topology_term.segment_pwcd
    patch()
    plan, info = PRESETS["cpu"], DistInfo(0, 1, 0, torch.device("cpu"))
    done = []
    for weight in weights:
        for seed in SEEDS:
            unit = Unit(7, "dd3d", "aligned", 1, seed, plan.points, plan.points, topo="shape", topo_weight=weight)
            done.append((unit, run_unit(plan, unit, out / variant, info, f"{variant}, W {weight:g}, seed {seed}")))
    topology_term.segment_pwcd = full  # the gaps measured with the full diagram distance
    real = DataSpec(plan.dataset, plan.root, "aligned", "classification", size=plan.size, points=plan.points).load("train")
    report = {}
    for unit, result in done:
        cset = read_condensed(out / variant / "units" / unit.set_name / "condensed.npz")
        gaps = shape_gap(cset, in_frame(real, rotator_of(cset.provenance["frame"])))
        report[f"W {unit.topo_weight:g}, seed {unit.seed}"] = {
            "test": round(100.0 * float(np.mean([r["oa"] for r in result["runs"]])), 2),
            "val": round(100.0 * float(np.mean([r["val"]["oa"] for r in result["runs"]])), 2), **gaps}
    return report


if __name__ == "__main__":
    out, variants = Path(sys.argv[1]), sys.argv[2:]
    if len(variants) != 1:
        raise SystemExit("one variant a process (each patches the code it runs)")
    print(json.dumps({variants[0]: run(out, variants[0])}, indent=1))
