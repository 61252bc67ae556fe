"""Which of decision 92's changes moves DD3D at the CPU preset (benchmarks/CONDENSE-STUDY.md, section
1.4, "DD3D at the CPU budget"): Table 1's DD3D units (shapes, CPC 1, 64 points, 40 iterations, the cpu recipe)
made again with one released setting taken back at a time, each variant in its own study folder.

    OMP_NUM_THREADS=1 python benchmarks/studies/condense-cpu-released/dd3d_ablation.py OUT VARIANT

Variants: ``no-net-decay`` (the network's learning rate never cut inside an iteration: the inner
epochs without gm_inr.py's StepLR), ``no-unit-sphere`` (generated clouds used as drawn, not
re-centred and scaled into the unit sphere). Prints each variant's per-seed test OA means as JSON.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

import train.condense.methods.dd3d as dd3d
from train.condense.studies.study import PRESETS, Unit, run_unit
from train.runtime.distributed import DistInfo

SEEDS = (0, 1)
SETTINGS = ("aligned", "rotated")


def _no_net_decay() -> None:
    released = dd3d.loops_of
    dd3d.loops_of = lambda train, cpc: dataclasses.replace(released(train, cpc), net_decay=False)


def _no_unit_sphere() -> None:
    dd3d.unit_sphere = lambda clouds: clouds  # draw_batch's: the inner loop's sets, the written set, resampling


VARIANTS = {"no-net-decay": _no_net_decay, "no-unit-sphere": _no_unit_sphere}


def run(out: Path, variant: str) -> dict[str, dict[int, float]]:
    VARIANTS[variant]()
    plan, info = PRESETS["cpu"], DistInfo(0, 1, 0, torch.device("cpu"))
    means: dict[str, dict[int, float]] = {}
    for setting in SETTINGS:
        for seed in SEEDS:
            unit = Unit(1, "dd3d", setting, 1, seed, plan.points, plan.points)
            result = run_unit(plan, unit, out / variant, info, f"{variant}, {setting}, seed {seed}")
            means.setdefault(setting, {})[seed] = round(100.0 * float(np.mean([r["oa"] for r in result["runs"]])), 2)
    return means


if __name__ == "__main__":
    out, variants = Path(sys.argv[1]), sys.argv[2:]
    if len(variants) != 1:
        raise SystemExit("one variant a process (each patches the code it runs)")
    print(json.dumps({variants[0]: run(out, variants[0])}, indent=1))
