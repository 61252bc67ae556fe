"""Where a condensed set's OA comes from, class by class: each Table 7 set of a study folder trained
again with the study's recipe and seeds (the same runs as its result.json, checked), and each run's
recall per class and share of the test predictions per class recorded beside the test split's own
class shares (benchmarks/CONDENSE-STUDY.md, section 7: does the term's OA gain on DD3D
rotated come from telling classes apart, or from predicting the frequent class more often?).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/studies/condense-topo-lidar-cpc10-cpu/per_class.py OUT JSON

OUT is a study's --out holding Table 7's units with their sets (``units/<set>/condensed.npz``);
JSON gets, per unit, the runs' OA (and their largest difference from result.json's), the mean
recall and prediction share of each class, and the test split's class shares.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from train.condense.studies import study
from train.condense.files.data import clouds_of
from train.condense.evaluation.metrics import classification_scores
from train.condense.evaluation.training import predict, train_backbone
from train.runtime.distributed import DistInfo


def per_class(out: Path) -> dict[str, Any]:
    """The record of every Table 7 unit of ``out`` whose set is there (module docstring)."""
    record = json.loads((out / "study.json").read_text())
    plan = study.plan_of(record["plan"])
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    found: dict[str, Any] = {"plan": record["plan"], "units": {}}
    for row in record["results"]["7"]:
        unit = study.Unit(**row["unit"])
        folder = out / "units" / unit.set_name
        if not (folder / "condensed.npz").exists():
            continue
        unit_clouds = study.unit_clouds(plan, unit, out, info)
        train, test = unit_clouds.train, unit_clouds.test
        clouds = clouds_of(test)
        classes = len(test.class_names)
        recalls, shares, oas = [], [], []
        for r in range(len(row["runs"])):  # evaluate_runs' seeds: 0, 1, ...
            model = train_backbone(train, plan.recipe_of(unit), r, info, desc=f"{unit.name} run {r + 1}")
            predicted = predict(model, clouds, info)
            oas.append(classification_scores(predicted, test.labels)["oa"])  # as the study scores it
            recalls.append([float(np.mean(predicted[test.labels == c] == c)) for c in range(classes)])
            shares.append(np.bincount(predicted, minlength=classes) / len(predicted))
        found["units"][unit.name] = {
            "oa": oas, "oa_differs_from_result_by": float(np.max(np.abs(np.array(oas) - [k["oa"] for k in row["runs"]]))),
            "classes": list(test.class_names),
            "recall": np.mean(recalls, axis=0).tolist(), "predicted_share": np.mean(shares, axis=0).tolist(),
            "test_share": (np.bincount(test.labels, minlength=classes) / len(test.labels)).tolist()}
        print(unit.name, f"OA {100 * np.mean(oas):.1f}", file=sys.stderr, flush=True)
    return found


if __name__ == "__main__":
    Path(sys.argv[2]).write_text(json.dumps(per_class(Path(sys.argv[1])), indent=1))
