"""DD3D and Random of Table 1 (the CPU preset, shapes) distilled with more seeds, to tell a change
in DD3D's mean from the spread between its distillations (benchmarks/CONDENSE-STUDY.md, section 1.3).

    OMP_NUM_THREADS=1 python benchmarks/studies/condense-cpu-released/more_seeds.py OUT SEED [SEED ...]

OUT is the study's --out (its Table 1 units are read; units of the new seeds are written beside
them, and the per-seed means of every seed found are printed as JSON).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from train.condense.studies.study import PRESETS, Unit, run_unit
from train.runtime.distributed import DistInfo

METHODS = ("random", "dd3d")


def main(out: Path, seeds: list[int]) -> dict[str, dict[int, float]]:
    plan = PRESETS["cpu"]
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    for seed in seeds:
        for setting in ("aligned", "rotated"):
            for method in METHODS:
                unit = Unit(1, method, setting, 1, seed, plan.points, plan.points)
                run_unit(plan, unit, out, info, f"more seeds, seed {seed}")
    means: dict[str, dict[int, float]] = {}
    for setting in ("aligned", "rotated"):
        for method in METHODS:
            for seed in range(max(seeds) + 1):  # Table 1's units only (its rotator's folder names)
                path = out / "units" / Unit(1, method, setting, 1, seed, plan.points, plan.points).name / "result.json"
                if path.exists():
                    runs = json.loads(path.read_text())["runs"]
                    means.setdefault(f"{setting} {method}", {})[seed] = round(100.0 * float(np.mean([r["oa"] for r in runs])), 2)
    return means


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), [int(s) for s in sys.argv[2:]]), indent=1, sort_keys=True))
