"""The tables of STUDY.md from this folder's kept JSON (``capacity.py``'s, ``controls.py``'s and ``matching.py``'s records):
per row the mean over seeds, each seed's value, and the paired difference to its reference by seed
with its 95% t interval (:func:`train.condense.evaluation.metrics.paired_gain`).

    python benchmarks/studies/condense-dd3d-gap-cpu/summary.py [FOLDER]
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from train.condense.evaluation.metrics import paired_gain
from train.condense.studies.study import PRESETS
from train.study.report import mean_ci

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from capacity import record_name  # noqa: E402  (this study's scripts)
from controls import RATES, VARIANTS  # noqa: E402


def _load(folder: Path, name: str) -> dict:
    for path in (folder / name, folder / "controls" / name):  # kept here flat; a run's OUT keeps controls/ apart
        if path.exists():
            return json.loads(path.read_text())
    return {}


def _by_seed(record: dict, key: str) -> dict[int, list[float]]:
    return {int(s): [float(r[key])] for s, r in record.items() if key in r}


def _cell(values: dict[int, list[float]]) -> str:
    if not values:
        return "-"
    seeds = sorted(values)
    return f"{np.mean([values[s][0] for s in seeds]):.1f} [" + " / ".join(f"{values[s][0]:.1f}" for s in seeds) + "]"


def _gain(values: dict[int, list[float]], reference: dict[int, list[float]]) -> str:
    if not set(values) & set(reference):
        return "-"
    gain = paired_gain(values, reference)
    half = "" if math.isnan(gain.half) else f" ± {gain.half:.1f}"
    zero = "" if math.isnan(gain.half) else (" (includes 0)" if abs(gain.mean) <= gain.half else "")
    return (f"{gain.mean:+.1f}{half}{zero} (" + ", ".join(f"s{s} {d:+.1f}" for s, d in sorted(gain.by_seed.items()))
            + ")")


SHAPES = PRESETS["cpu"].dataset
# capacity.py's records: (data set, points, fit steps; 0 no fit)
RECORDS = ((SHAPES, 64, 4000), (SHAPES, 64, 400), (SHAPES, 256, 4000), (SHAPES, 1024, 0), (SHAPES, 1024, 4000),
           ("lidar_objects", 64, 400))


def _macc(key: str) -> str:
    return key.replace("_oa", "_macc", 1)


def capacity_rows(folder: Path) -> list[str]:
    rows = ["| data set, points, fit steps | row | test OA [by seed] | paired vs Random (same points) | "
            "mAcc [by seed] | paired mAcc |", "|---|---|---|---|---|---|"]
    for i, (dataset, points, steps) in enumerate(RECORDS):
        record = _load(folder, record_name(dataset, points, steps))
        if not record:
            continue
        # a record after another of its data set and points shares that one's Random and bootstrap units
        shared = any(earlier[:2] == (dataset, points) for earlier in RECORDS[:i])
        random, random_macc = _by_seed(record, "random_oa"), _by_seed(record, "random_macc")
        for key, name in (("random_oa", "Random"), ("bootstrap_oa", "bootstrap of Random's clouds"),
                          ("fit_oa", "generator fitted, drawn"), ("fit_oa_resampled", "generator fitted, resampled")):
            values, macc = _by_seed(record, key), _by_seed(record, _macc(key))
            if not values or (key in ("random_oa", "bootstrap_oa") and shared):
                continue
            first = key == "random_oa"
            rows.append(f"| {dataset}, {points}, {steps} | {name} | {_cell(values)} | "
                        f"{'' if first else _gain(values, random)} | {_cell(macc)} | "
                        f"{'' if first or not macc else _gain(macc, random_macc)} |")
        for at in (1024,):
            ref = _by_seed(record, f"random_oa_p{at}")
            if ref:
                rows.append(f"| {dataset}, {points} drawn at {at}, {steps} | Random at {at} | {_cell(ref)} | | | |")
                values = _by_seed(record, f"fit_oa_at{at}")
                rows.append(f"| {dataset}, {points} drawn at {at}, {steps} | generator fitted at {points}, drawn at "
                            f"{at} | {_cell(values)} | {_gain(values, ref)} | | |")
    return rows


def chamfer_rows(folder: Path) -> list[str]:
    rows = ["| data set, points, fit steps | fit to its target | bootstrap to its target | fit to nearest real | "
            "target to nearest other real | target to median other real | fit loss at step 400 / last |",
            "|---|---|---|---|---|---|---|"]
    for dataset, points, steps in RECORDS:
        record = _load(folder, record_name(dataset, points, steps))
        fits = [r["fit"] for r in record.values() if "fit" in r]
        boots = [r["bootstrap_to_target"] for r in record.values() if "bootstrap_to_target" in r]
        if not fits:
            if boots:
                rows.append(f"| {dataset}, {points}, no fit | | {np.mean(boots):.4f} | | | | |")
            continue
        mean = {k: np.mean([f[k] for f in fits]) for k in ("fit_to_target", "fit_to_nearest_real",
                                                           "target_to_nearest_other_real", "target_to_median_other_real")}
        at400 = np.mean([f["trajectory"].get("400", np.nan) for f in fits])
        last = np.mean([f["trajectory"][str(steps)] for f in fits])
        rows.append(f"| {dataset}, {points}, {steps} | {mean['fit_to_target']:.4f} | "
                    f"{f'{np.mean(boots):.4f}' if boots else 'as above'} | {mean['fit_to_nearest_real']:.4f} | "
                    f"{mean['target_to_nearest_other_real']:.4f} | {mean['target_to_median_other_real']:.4f} | "
                    f"{at400:.4f} / {last:.4f} |")
    return rows


def control_rows(folder: Path) -> list[str]:
    random = _by_seed(_load(folder, record_name(SHAPES, 64, 4000)), "random_oa")
    random256 = _by_seed(_load(folder, record_name(SHAPES, 256, 4000)), "random_oa")
    kept = _load(folder, "controls-released.json")
    rows = ["| variant | evaluated | test OA [by seed] | paired vs Random (at the points evaluated) | paired vs released | "
            "D first / last iteration |",
            "|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        record = _load(folder, f"controls-{variant}.json")
        if not record:
            continue
        loss = (f"{np.mean([r['loss_first'] for r in record.values()]):.0f} / "
                f"{np.mean([r['loss_last'] for r in record.values()]):.0f}")
        for key, name in (("oa", "drawn at 64"), ("oa_resampled", "resampled at 64"), ("oa_at256", "drawn at 256"),
                          ("oa_at1024", "drawn at 1,024")):
            values = _by_seed(record, key)
            if not values:
                continue
            vs_released = _gain(values, _by_seed(kept, key)) if variant != "released" else ""
            vs_random = (_gain(values, random) if key in ("oa", "oa_resampled") else
                         _gain(values, random256) if key == "oa_at256" else "")
            rows.append(f"| {variant} | {name} | {_cell(values)} | {vs_random} | {vs_released} | "
                        f"{loss if key == 'oa' else ''} |")
    released256 = _load(folder, "controls-released-p256.json")
    for variant in ("released", *RATES):
        at256 = _load(folder, f"controls-{variant}-p256.json")
        for key, name in (("oa", "drawn at 256"), ("oa_resampled", "resampled at 256")):
            values = _by_seed(at256, key)
            if values:
                loss = (f"{np.mean([r['loss_first'] for r in at256.values()]):.0f} / "
                        f"{np.mean([r['loss_last'] for r in at256.values()]):.0f}") if key == "oa" else ""
                vs_released = _gain(values, _by_seed(released256, key)) if variant != "released" else ""
                rows.append(f"| {variant}, distilled at 256 points | {name} | {_cell(values)} | "
                            f"{_gain(values, random256)} | {vs_released} | {loss} |")
    start = _load(folder, record_name(SHAPES, 64, 4000))
    prefit = _load(folder, "controls-prefit.json")
    for key, fitted, name in (("oa", "fit_oa", "drawn at 64"), ("oa_resampled", "fit_oa_resampled", "resampled at 64")):
        if prefit:
            rows.append(f"| prefit against its start (section 1's fit, before matching) | {name} | "
                        f"{_cell({k: v for k, v in _by_seed(start, fitted).items() if str(k) in prefit})} before | {_gain(_by_seed(prefit, key), _by_seed(start, fitted))} "
                        "after minus before | | |")
    return rows


LIDAR_STUDY = HERE.parent / "condense-t1-lidar-cpu" / "study.json"  # Tables 1 and 6 on lidar_objects, kept
LIDAR_SETS = (("Random", "random", False), ("GM", "gm", False), ("DM", "dm", False), ("DD3D, drawn", "dd3d", False),
              ("DD3D, resampled", "dd3d", True))


def lidar_rows(path: Path = LIDAR_STUDY) -> list[str]:
    """The kept ``lidar_objects`` study's aligned CPC 1 sets: OA and mAcc (the score that compares
    sets where cars are most of the test clouds) by seed, each paired with Random's of the seed."""
    if not path.exists():
        return []
    results = json.loads(path.read_text())["results"]
    units = [row for table in ("1", "6") for row in results.get(table, [])]

    def scores(method: str, resample: bool, score: str) -> dict[int, list[float]]:
        return {row["unit"]["seed"]: [100.0 * float(np.mean([run[score] for run in row["runs"]]))] for row in units
                if (row["unit"]["method"], row["unit"]["resample"], row["unit"]["cpc"]) == (method, resample, 1)}
    rows = ["| lidar_objects, 64 points, 40 iterations | test OA [by seed] | paired vs Random | mAcc [by seed] | "
            "paired mAcc |", "|---|---|---|---|---|"]
    random = {score: scores("random", False, score) for score in ("oa", "macc")}
    for name, method, resample in LIDAR_SETS:
        oa, macc = scores(method, resample, "oa"), scores(method, resample, "macc")
        first = method == "random"
        rows.append(f"| {name} | {_cell(oa)} | {'' if first else _gain(oa, random['oa'])} | {_cell(macc)} | "
                    f"{'' if first else _gain(macc, random['macc'])} |")
    for resample in (False, True):
        gaps = [_gain(scores("dd3d", resample, score), scores("gm", False, score)) for score in ("oa", "macc")]
        rows.append(f"| DD3D, {'resampled' if resample else 'drawn'}, minus GM (paired) | | {gaps[0]} | | {gaps[1]} |")
    return rows


D_AT = (1, 10, 20, 21, 30, 40)  # iterations whose D is shown (the rate is cut after iteration 20 of 40)


def loss_rows(folder: Path) -> list[str]:
    rows = ["| variant | seeds | " + " | ".join(f"D at iteration {i}" for i in D_AT) + " |",
            "|---|---|" + "---|" * len(D_AT)]
    for variant in VARIANTS:
        record = _load(folder, f"controls-{variant}.json")
        if record:
            losses = np.array([r["loss"] for r in record.values()])
            rows.append(f"| {variant} | {len(losses)} | " + " | ".join(f"{losses[:, i - 1].mean():.0f}" for i in D_AT)
                        + " |")
    return rows


MATCHED = ("random", "bootstrap", "gm", "gm bootstrap", "dm", "dd3d drawn", "dd3d matched", "dd3d fresh, sphere")


def matching_rows(folder: Path, points: int) -> list[str]:
    """``matching.py``'s record: per candidate D (summed over the classes, mean over the networks)
    by seed, and its difference from Random's on the same networks, the 95% t interval over seeds."""
    record = _load(folder, f"matching-p{points}.json")
    if not record:
        return []
    seeds = sorted(record["seeds"], key=int)
    rows = [f"| set ({points} points) | D [by seed] | minus Random's D, same networks [by seed] |", "|---|---|---|"]
    for name in MATCHED:
        cells = [record["seeds"][s]["d"].get(name) for s in seeds]
        if None in cells:
            continue
        d = [c["mean"] for c in cells]
        minus = [c["minus_random"] for c in cells]  # already paired: each seed's mean over its networks
        mean, half = mean_ci(minus)
        by_seed = " / ".join(f"{v:+.0f}" for v in minus)
        rows.append(f"| {name} | {np.mean(d):.0f} [" + " / ".join(f"{v:.0f}" for v in d) + "] | "
                    + ("" if name == "random" else f"{mean:+.0f} ± {half:.0f} [{by_seed}]") + " |")
    history = [record["seeds"][s]["history"] for s in seeds]
    for method in ("gm", "dd3d"):
        at = history[0][method]
        rows.append(f"| {method}'s own training D (its networks and batches), iteration "
                    + ", ".join(at) + " | " + ", ".join(f"{np.mean([h[method][i] for h in history]):.0f}" for i in at)
                    + " | |")
    return rows


def tables(folder: Path) -> list[str]:
    """Every table of STUDY.md made from ``folder``'s records (and the kept ``lidar_objects`` study),
    an empty line between two."""
    parts = (capacity_rows(folder), chamfer_rows(folder), control_rows(folder), loss_rows(folder),
             matching_rows(folder, 64), matching_rows(folder, 256), lidar_rows())
    return [line for part in parts for line in (*part, "")][:-1]


if __name__ == "__main__":
    print("\n".join(tables(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)))
