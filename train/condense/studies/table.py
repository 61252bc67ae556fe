"""The coreset table (DD3D Table 1's baseline rows): Random, Herding and
K-Center at each CPC, aligned and rotated, beside the full ``train`` split, every set evaluated
``runs`` times with the protocol (:mod:`train.condense.evaluation.protocol`), mean and 95% interval; each
setting in its default rotator's frame (decision 86: the rotated clouds on their principal axes
with the fixed sign, as the paper's note to Table 1 has every method with rotated data).

Each condensed set is also written (``<out>/<setting>/<method>-cpc<C>/condensed.npz``), the
feature network cached per setting (``<out>/<setting>/feature_net.pt``), the scores of every run
kept in ``<out>/table.json`` and the table in ``<out>/table.md``.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from train.condense.files.condensed_file import write_condensed
from train.condense.files.data import DataSpec, clouds_of, condensed_clouds, in_frame
from train.condense.matching.features import CACHE_NAME
from train.condense.methods import condense_set
from train.condense.evaluation.metrics import summarise
from train.condense.evaluation.protocol import evaluate_runs, format_summary
from train.condense.files.rotator import Rotator, rotator_kind
from train.condense.evaluation.training import TrainSpec
from train.runtime.distributed import DistInfo
from train.runtime.files import atomic_write

TITLES = {"random": "Random", "herding": "Herding", "kcenter": "K-Center"}


def coreset_table(base: DataSpec, settings: Sequence[str], cpcs: Sequence[int], runs: int, recipe: TrainSpec,
                  seed: int, out: Path, info: DistInfo) -> str:
    """Run every set of the table and return it as markdown (module docstring)."""
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for setting in settings:
        data = replace(base, setting=setting)
        frame = Rotator(rotator_kind(setting, None))
        train, test_set = data.load("train"), in_frame(data.load("test"), frame)
        test = clouds_of(test_set)
        results[setting] = {"full": evaluate_runs(clouds_of(in_frame(train, frame)), test, recipe, runs, seed, info,
                                                  desc=f"{setting} full set")}
        for method in TITLES:
            for cpc in cpcs:
                cset = condense_set(data, method, cpc, seed, recipe, out / setting / CACHE_NAME, info, train=train)
                path = out / setting / f"{method}-cpc{cpc}"
                if info.is_main:
                    write_condensed(cset, path)
                condensed = condensed_clouds(cset, test_set, str(path))
                results[setting][f"{method}-cpc{cpc}"] = evaluate_runs(condensed, test, recipe, runs, seed, info,
                                                                       desc=f"{setting} {method} CPC {cpc}")
    task = base.task
    lines = [f"| setting | CPC | {' | '.join(TITLES.values())} | full set |", "|---|---|" + "---|" * (len(TITLES) + 1)]
    for setting, scores in results.items():
        full = format_summary(summarise(scores["full"]), task)
        for cpc in cpcs:
            cells = [format_summary(summarise(scores[f"{m}-cpc{cpc}"]), task) for m in TITLES]
            lines.append(f"| {setting} | {cpc} | {' | '.join(cells)} | {full} |")
    table = "\n".join(lines)
    if info.is_main:
        record = {"data": {**base.key(), "setting": list(settings)}, "recipe": recipe.record(), "runs": runs,
                  "seed": seed, "scores": results}
        atomic_write(json.dumps(record, indent=1).encode(), out / "table.json")
        atomic_write((table + "\n").encode(), out / "table.md")
    return table
