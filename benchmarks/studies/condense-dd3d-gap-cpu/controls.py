"""DD3D against the baselines, measurement 2: DD3D's matching loop with what it moves replaced, at the CPU preset
(``shapes``, CPC 1, aligned, 64 points, 40 iterations, the cpu recipe, 5 trainings), each variant
in its own study folder ``OUT/<variant>`` with the study's unit names (as
``benchmarks/studies/condense-cpu-released/dd3d_ablation.py``).

    OMP_NUM_THREADS=1 python benchmarks/studies/condense-dd3d-gap-cpu/controls.py OUT VARIANT SEED [SEED ...] [--points N]

Variants (each but the rates ``lr1e-4`` and ``lr3e-3`` patches :data:`train.condense.methods.dd3d.PointGenerator`, what ``distill_dd3d`` builds;
everything else of :func:`train.condense.methods.dd3d.distill_dd3d` runs unchanged: the real batches, the
released loops and inner-set normalisation, the generator's Adam with its weight decay and cut,
the noise draws, the written set):

- ``released``: nothing patched (this machine's DD3D units, paired with the others by seed);
- ``prefit``: DD3D's generator first fitted to Random's clouds of the seed by Chamfer
  (``capacity.py``'s fit, 4,000 Adam steps), then matched as DD3D matches it: the generator
  started where GM's clouds start;
- ``explicit-real``: the generator replaced by explicit clouds (one learnable (64, 3) tensor a
  class, the noise ignored) started from Random's clouds of the seed: GM's representation and start
  in DD3D's loop and optimiser;
- ``explicit-noise``: the same clouds started uniform in the unit ball
  (:func:`train.condense.methods.explicit.initial_clouds`' ``noise``);
- ``lr1e-4``: the released generator with its Adam at lr 1e-4 (the rate the released 1e-3 is cut
  to at half the iterations, after which D falls), weight decay as released (patches
  ``dd3d.generator_adam``); ``lr3e-3``: the same at lr 3e-3 (three
  times the released rate); with ``lr1e-4`` and ``released`` the generator's rate sensitivity.

The generator variants' sets are also evaluated resampled (fresh draws each time a cloud is used,
decision 85) and drawn at 256 points (the study's cross-resolution units, against the real
test clouds at that resolution; Random's units at those resolutions are ``capacity.py``'s).

Prints each variant's per-seed test OA means and the first and last iterations' matching loss D
as JSON (also written to ``OUT/controls-<variant>.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

import train.condense.methods.dd3d as dd3d
from train.condense.files.condensed_file import read_condensed
from train.condense.files.data import DataSpec
from train.condense.methods.explicit import initial_clouds
from train.condense.matching.generator import PointGenerator
from train.condense.studies.study import PRESETS, Unit, run_unit
from train.condense.matching.released import GeneratorAdam, generator_adam
from train.runtime.distributed import DistInfo

sys.path.insert(0, str(Path(__file__).parent))
from capacity import fit  # noqa: E402  (this study's Chamfer fit)


class ExplicitClouds(nn.Module):
    """Explicit clouds in the generator's place: ``forward(noise (B, N), index (B,))`` -> the (B, N, 3)
    clouds ``index`` (N must be their size; the noise is ignored). ``codes`` and ``out`` give only
    what ``draw_batch``/``draw_set`` read (the count, the device) and hold no parameters: the clouds
    are the only parameter (the matching differentiates every parameter the optimiser holds)."""

    def __init__(self, clouds: torch.Tensor):
        super().__init__()
        self.clouds = nn.Parameter(clouds.clone())
        self.w0 = 0.0

    @property
    def codes(self) -> SimpleNamespace:
        return SimpleNamespace(num_embeddings=len(self.clouds))

    @property
    def out(self) -> SimpleNamespace:
        return SimpleNamespace(weight=self.clouds)

    def forward(self, noise: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if noise.shape[1] != self.clouds.shape[1]:
            raise ValueError(f"explicit clouds have {self.clouds.shape[1]} points, {noise.shape[1]} asked")
        return self.clouds[index]


def builder(variant: str, train, seed: int):
    """What ``distill_dd3d`` builds in the generator's place for ``variant`` at ``seed``."""
    def build(clouds: int, w0: float) -> nn.Module:
        if variant == "prefit":
            return fit(train, seed, 4000)[0]
        start = initial_clouds(train, 1, seed, "real" if variant == "explicit-real" else "noise")[0]
        assert len(start) == clouds
        return ExplicitClouds(torch.from_numpy(start))
    return build


RATES = {"lr1e-4": 1e-4, "lr3e-3": 3e-3}  # the rate variants' generator Adam rate (cut by 10 at half the iterations)
VARIANTS = ("released", "prefit", "explicit-real", "explicit-noise", *RATES)
GENERATORS = ("released", "prefit", *RATES)  # the variants whose set is a generator's: also resampled and drawn at DRAW_AT
DRAW_AT = (256,)  # the generator drawn at these resolutions (the study's cross-resolution units)


def oa(result: dict) -> float:
    return round(100.0 * float(np.mean([r["oa"] for r in result["runs"]])), 2)


def main(out: Path, variant: str, seeds: list[int], points: int | None = None) -> dict:
    if variant not in VARIANTS:
        raise SystemExit(f"variant {variant!r} is not one of {', '.join(VARIANTS)}")
    torch.set_num_threads(1)
    plan, info = PRESETS["cpu"], DistInfo(0, 1, 0, torch.device("cpu"))
    plan = plan if points is None else replace(plan, points=points)
    train = DataSpec(plan.dataset, setting="aligned", points=plan.points).load("train")
    record_path = out / f"controls-{variant}{'' if points is None else f'-p{points}'}.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    for seed in seeds:
        dd3d.PointGenerator = PointGenerator if variant in ("released", *RATES) else builder(variant, train, seed)
        dd3d.generator_adam = (lambda task: GeneratorAdam(RATES[variant], generator_adam(task).weight_decay)
                               ) if variant in RATES else generator_adam
        unit = Unit(1, "dd3d", "aligned", 1, seed, plan.points, plan.points)
        result = run_unit(plan, unit, out / variant, info, f"{variant}, seed {seed}")
        dd3d.PointGenerator = PointGenerator  # load_generator (the evaluations below) builds the real one
        extra = {}
        if variant in GENERATORS:
            extra["oa_resampled"] = oa(run_unit(plan, replace(unit, resample=True), out / variant, info,
                                                f"{variant} resampled, seed {seed}"))
            for at in (at for at in DRAW_AT if at != plan.points):
                extra[f"oa_at{at}"] = oa(run_unit(plan, replace(unit, eval_points=at), out / variant, info,
                                                  f"{variant} drawn at {at}, seed {seed}"))
        loss = read_condensed(out / variant / "units" / unit.name / "condensed.npz").provenance["distill"]["loss"]
        record[str(seed)] = {"oa": oa(result), **extra,
                             "runs_oa": [round(100.0 * r["oa"], 2) for r in result["runs"]],
                             "condense_seconds": result.get("condense_seconds"),
                             "loss_first": loss[0], "loss_last": loss[-1], "loss": loss}
        record_path.write_text(json.dumps(record, indent=1))
    return {s: {k: v for k, v in r.items() if k != "loss"} for s, r in record.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("seeds", type=int, nargs="+")
    parser.add_argument("--points", type=int, default=None,
                        help="distil at these points instead of the preset's 64 (record controls-<variant>-p<points>.json)")
    args = parser.parse_args()
    print(json.dumps({args.variant: main(args.out, args.variant, args.seeds, args.points)}, indent=1))
