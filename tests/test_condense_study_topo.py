"""Table 7 of the condensation study (the persistence term, decisions 96 and 97): its units (the
runs without the term are Table 1's sets, the feature reading only where a class has several
clouds), a tiny run that reports it with validation scores and shape gaps kept, the report's
choice on validation and paired gain by hand, and the shape gaps (train.condense.studies.shape_gap)
against a brute force and on sets whose answer is known; Table 8 (the chosen sets across backbones)
follows from Table 7's results and is refused before they are final."""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

import train.condense.studies.study as study
from train.condense.files.condensed_file import CondensedSet, read_condensed
from train.condense.studies.shape_gap import chamfer_to_nearest, shape_gap
from train.condense.studies.study import CROSS_MODELS, Plan, Unit, cross_topo_units, run_study, units
from train.condense.evaluation.training import TrainSpec
from train.data.objects import load_objects
from train.runtime.distributed import DistInfo

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
TINY = Plan(points=32, low_points=(16,), part_points=32, cpcs=(1,), iterations=1, distills=1, runs=2,
            recipe=TrainSpec(steps=2), part_recipe=TrainSpec(steps=2), size=4, topo_weights=(1e3, 1e4))


def test_table_7_runs_each_reading_at_each_weight_and_shares_the_runs_without_the_term_with_table_1() -> None:
    at_one = units(replace(TINY, distills=2), 7)
    assert {(u.method, u.setting, u.topo, u.topo_weight) for u in at_one} == {
        (m, s, t, w) for m in ("gm", "dd3d") for s in ("aligned", "rotated")
        for t, w in ((None, 0.0), ("shape", 1e3), ("shape", 1e4))}  # one cloud a class: no feature reading
    assert len({u.name for u in at_one}) == len(at_one) == 2 * 2 * 3 * 2
    table_1 = {u.name for u in units(replace(TINY, distills=2), 1)}
    assert {u.name for u in at_one if u.topo is None} <= table_1
    assert all(u.name not in table_1 for u in at_one if u.topo is not None)
    at_two = units(replace(TINY, cpcs=(2,)), 7)  # two clouds a class: the feature readings' diagram is fixed
    assert {u.topo for u in at_two} == {None, "shape"}
    at_three = units(replace(TINY, cpcs=(3,)), 7)
    assert {u.topo for u in at_three} == {None, "shape", "feature", "feature_equal"}
    assert "-gm-topo-feature-w10000-cpc3-" in " ".join(u.name for u in at_three)


def test_a_tiny_table_7_reports_validation_and_shape_gaps_and_keeps_them(tmp_path: Path) -> None:
    plan = replace(TINY, topo_weights=(1e4,), size=10)  # 10 clouds a class: a validation split of one a class
    text = run_study(plan, (7,), tmp_path, CPU)
    assert "### Table 7: the persistence term" in text
    for setting in ("aligned", "rotated"):
        for method in ("GM", "DD3D"):
            assert f"| {setting} | 1 | {method} | none |" in text
            assert f"| {setting} | 1 | {method} | shape, w 10000 (chosen on val) |" in text
    record = json.loads((tmp_path / "study.json").read_text())
    rows = record["results"]["7"]
    assert len(rows) == len(units(plan, 7)) and all("val" in run and "oa" in run["val"] for r in rows for run in r["runs"])
    for r in rows:
        gaps = json.loads((tmp_path / "units" / Unit(**r["unit"]).set_name / "shape_gap.json").read_text())
        assert r["shape"] == gaps and gaps["chamfer"] > 0 and gaps["diagram"] >= 0
        assert gaps[study.HELD_OUT]["chamfer"] > 0 and gaps[study.HELD_OUT]["diagram"] >= 0  # the test split's
        assert {k: gaps[study.HELD_OUT][k] for k in ("chamfer", "diagram")} != {k: gaps[k] for k in ("chamfer", "diagram")}
        assert gaps["missing"] == gaps[study.HELD_OUT]["missing"] == []
    assert "| held-out Chamfer | held-out diagram gap |" in text and "leave out" not in text
    rows[0]["shape"][study.HELD_OUT]["missing"] = ["chair"]  # a test split without a class (lidar_objects' rare ones)
    assert "The held-out gaps leave out the classes the test split has no cloud of: chair." in study.report(plan, {7: rows})
    path = tmp_path / "units" / Unit(**rows[0]["unit"]).set_name / "shape_gap.json"
    kept = json.loads(path.read_text())
    old = {k: kept[k] for k in ("chamfer", "diagram")}
    path.write_text(json.dumps(old))  # a file kept before the held-out gaps
    run_study(plan, (7,), tmp_path, CPU)
    assert json.loads(path.read_text()) == {**old, study.HELD_OUT: kept[study.HELD_OUT]}  # the kept ones left as they were
    last = units(plan, 7)[-1]
    assert read_condensed(tmp_path / "units" / last.set_name / "condensed.npz").provenance["topo"] == {
        "reading": "shape", "weight": 1e4}


def test_table_8_runs_after_table_7_on_the_sets_of_the_weight_chosen_on_validation(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(study, "CROSS_MODELS", ("pointnet", "dgcnn"))  # two backbones: the logic, not the cost
    plan = replace(TINY, size=10)
    with pytest.raises(ValueError, match="Table 7 .* has not finished every weight of gm shape, dd3d shape"):
        run_study(plan, (8,), tmp_path, CPU)
    assert not (tmp_path / "units").exists()  # refused before any unit ran
    text = run_study(plan, (7, 8), tmp_path, CPU)
    record = json.loads((tmp_path / "study.json").read_text())["results"]
    seven = record["7"]
    expected = {}
    for method in ("gm", "dd3d"):
        where = {"method": method, "setting": "aligned"}
        vals = {w: np.mean([100 * run["val"]["oa"] for r in seven if r["unit"]["topo_weight"] == w
                            and all(r["unit"][k] == v for k, v in where.items()) for run in r["runs"]])
                for w in plan.topo_weights}
        expected[method] = max(vals, key=vals.get)
        assert f"| aligned | 1 | {method.upper()} | shape, w {expected[method]:g} (chosen on val) |" in text
    eight = [r["unit"] for r in record["8"]]
    assert {(u["method"], u["topo"], u["topo_weight"], u["model"]) for u in eight} == {
        ("full", None, 0.0, m) for m in ("pointnet", "dgcnn")} | {
        (method, topo, w, m) for method in ("gm", "dd3d") for topo, w in ((None, 0.0), ("shape", expected[method]))
        for m in ("pointnet", "dgcnn")}
    assert "### Table 8: the persistence term across backbones" in text and "| GM | gain of shape, w " in text
    # its PointNet rows are Table 7's own results (shared units), its other backbones new ones on the same sets
    seven_pointnet = {json.dumps(r["runs"]) for r in seven if r["unit"]["setting"] == "aligned"}
    assert all(json.dumps(r["runs"]) in seven_pointnet for r in record["8"]
               if r["unit"]["model"] == "pointnet" and r["unit"]["method"] != "full")
    sets = {Unit(**u).set_name for u in eight if u["method"] != "full"}
    assert all((tmp_path / "units" / name / "condensed.npz").exists() for name in sets)
    assert len(sets) == 4  # GM and DD3D, without and with the term: no new distillation


def test_cross_topo_units_keep_table_3_s_names_for_the_sets_without_the_term() -> None:
    plan = replace(TINY, distills=2)
    rows = [_result(t, w, s, [0.5], [0.5 + w / 1e5]) for t, w in ((None, 0.0), ("shape", 1e3), ("shape", 1e4))
            for s in (0, 1)]
    eight = cross_topo_units(plan, rows, ())  # DD3D has no Table 7 rows: only its sets without the term
    three = {u.name for u in units(plan, 3)}
    assert {u.name for u in eight if u.topo is None and u.method in ("gm", "full")} <= three
    assert {(u.method, u.topo, u.topo_weight) for u in eight} == {("full", None, 0.0), ("gm", None, 0.0),
                                                                   ("gm", "shape", 1e4), ("dd3d", None, 0.0)}
    assert len(eight) == len(CROSS_MODELS) * (1 + 2 * 3)
    assert cross_topo_units(plan, rows, ("gm",)) == eight  # GM's choice is final: only DD3D's is missing
    with pytest.raises(ValueError, match="dd3d shape"):
        cross_topo_units(plan, rows, ("gm", "dd3d"))
    with pytest.raises(ValueError, match="gm shape"):  # one seed of a weight missing: not final
        cross_topo_units(plan, rows[:-1], ("gm",))


def _result(topo: str | None, weight: float, seed: int, test: list[float], val: list[float]) -> dict:
    unit = Unit(7, "gm", "aligned", 1, seed, 32, 32, topo=topo, topo_weight=weight)
    return {"unit": dataclasses.asdict(unit), "runs": [{"oa": t, "macc": t, "val": {"oa": v, "macc": v}}
                                                        for t, v in zip(test, val)],
            "shape": {"chamfer": 0.01 * (seed + 1), "diagram": 0.001 * (seed + 1)}}


def test_the_report_chooses_the_weight_on_validation_and_pairs_the_gain_by_seed_by_hand() -> None:
    rows = [_result(None, 0.0, 0, [0.60, 0.62], [0.5, 0.5]), _result(None, 0.0, 1, [0.70, 0.70], [0.5, 0.5]),
            # weight 1e3: the better test, the worse validation; 1e4 is chosen
            _result("shape", 1e3, 0, [0.90, 0.90], [0.4, 0.4]), _result("shape", 1e3, 1, [0.90, 0.90], [0.4, 0.4]),
            _result("shape", 1e4, 0, [0.65, 0.67], [0.6, 0.6]), _result("shape", 1e4, 1, [0.70, 0.74], [0.7, 0.7])]
    text = study.report(TINY, {7: rows})
    assert "| aligned | 1 | GM | shape, w 1000 | 40.0 |" in text
    # gains: s0 66 - 61 = +5, s1 72 - 70 = +2: mean 3.5, t(0.975, 1) * 1.5 = 19.1; gaps the seeds' means
    assert ("| aligned | 1 | GM | shape, w 10000 (chosen on val) | 65.0 | 69.0 ± 38.1 [66.0 / 72.0] (mAcc 69.0) | "
            "+3.5 ± 19.1 (s0 +5.0, s1 +2.0) | 0.0150 | 0.0015 |") in text
    assert "| aligned | 1 | GM | none | 50.0 | 65.5 ± 57.2 [61.0 / 70.0] (mAcc 65.5) | - | 0.0150 | 0.0015 |" in text
    partial = study.report(TINY, {7: rows[:4]})
    assert "| aligned | 1 | GM | shape, w 1000 (best val of 1 weights so far) |" in partial
    unscored = [{**r, "runs": [{k: v for k, v in run.items() if k != "val"} for run in r["runs"]]} for r in rows]
    assert "| aligned | 1 | GM | shape, w 10000 | - |" in study.report(TINY, {7: unscored})  # no split: no choice


def test_table_9_runs_the_part_reading_at_each_weight_beside_table_2s_sets() -> None:
    nine = units(replace(TINY, distills=2), 9)
    assert {(u.method, u.setting, u.task, u.topo, u.topo_weight) for u in nine} == {
        (m, "aligned", "parts", t, w) for m in ("gm", "dd3d") for t, w in ((None, 0.0), ("shape", 1e3), ("shape", 1e4))}
    assert len({u.name for u in nine}) == len(nine) == 2 * 3 * 2
    table_2 = {u.name for u in units(replace(TINY, distills=2), 2)}
    assert {u.name for u in nine if u.topo is None} <= table_2
    assert all(u.name not in table_2 for u in nine if u.topo is not None)


def test_a_tiny_table_9_chooses_on_validation_miou_and_keeps_the_shape_gaps(tmp_path: Path) -> None:
    plan = replace(TINY, topo_weights=(1e4,), size=10)
    text = run_study(plan, (9,), tmp_path, CPU)
    assert "### Table 9: the persistence term on part segmentation" in text
    assert text.startswith("Data: shapes (size 10), 32 points (32 for part segmentation);")
    assert "| setting | CPC | method | term | val instance mIoU | test instance mIoU |" in text
    for method in ("GM", "DD3D"):
        assert f"| aligned | 1 | {method} | none |" in text
        assert f"| aligned | 1 | {method} | shape, w 10000 (chosen on val) |" in text
    rows = json.loads((tmp_path / "study.json").read_text())["results"]["9"]
    assert len(rows) == 4 and all("instance_miou" in run["val"] for r in rows for run in r["runs"])
    assert all(r["shape"]["chamfer"] > 0 for r in rows)
    topo = [r for r in rows if r["unit"]["topo"]][0]
    assert read_condensed(tmp_path / "units" / Unit(**topo["unit"]).set_name / "condensed.npz").provenance["topo"] == {
        "reading": "shape", "weight": 1e4}


def test_chamfer_to_the_nearest_real_cloud_equals_a_brute_force() -> None:
    rng = np.random.default_rng(7)
    cloud, real = torch.from_numpy(rng.normal(size=(20, 3))), torch.from_numpy(rng.normal(size=(37, 25, 3)))
    brute = min(np.mean([min(np.sum((a - b) ** 2) for b in r) for a in cloud.numpy()])
                + np.mean([min(np.sum((a - b) ** 2) for a in cloud.numpy()) for b in r]) for r in real.numpy())
    assert chamfer_to_nearest(cloud, real) == pytest.approx(brute, rel=1e-10)
    with pytest.raises(ValueError, match="no real cloud"):
        chamfer_to_nearest(cloud, real[:0])


def test_a_set_of_moved_and_scaled_real_clouds_has_no_gap_and_noise_has_one() -> None:
    real = load_objects("shapes", split="train", points=64, size=4)
    rows = np.array([np.flatnonzero(real.labels == k)[0] for k in range(3)])
    copies = real.points[rows] * 0.3 + np.float32(2.0)  # the unit sphere undoes a shift and a scale

    def cset(points: np.ndarray) -> CondensedSet:
        return CondensedSet(points=points.astype(np.float32), labels=real.labels[rows], provenance={})
    same = shape_gap(cset(copies), real)
    assert same["chamfer"] < 1e-6 and same["diagram"] < 1e-6  # float32 rounding of the moved copies
    noise = shape_gap(cset(np.random.default_rng(0).normal(size=copies.shape)), real)
    assert noise["chamfer"] > 0.05 and noise["diagram"] > 1e-3


@pytest.mark.parametrize("folder,note", [(f, "(chosen on val)") for f in (
    "condense-topo-cpu", "condense-topo-lidar-cpu", "condense-topo-cpc10-cpu", "condense-topo-parts-cpu")] + [
    (f, "(best val of 1 weights so far)") for f in (
    "condense-topo-cpc10-amd-cpu", "condense-topo-lidar-cpc10-cpu")])  # probes at one weight: no final choice
def test_the_kept_persistence_term_studies_report_their_markdown_again_from_their_json(folder: str, note: str) -> None:
    kept = Path(__file__).parents[1] / "benchmarks" / "studies" / folder
    record = json.loads((kept / "study.json").read_text())
    text = study.report(study.plan_of(record["plan"]), {int(t): rows for t, rows in record["results"].items()})
    markdown = (kept / "STUDY.md").read_text()
    tables = [table for table in ("### Table 7", "### Table 8", "### Table 9") if table in markdown]
    for table in tables:
        assert markdown.split(table)[1].split("###")[0] in text
    assert note in markdown.split(tables[0])[1].split("###")[0]


def test_a_kept_study_restored_as_unit_folders_is_read_back_as_its_finished_units(tmp_path: Path) -> None:
    from benchmarks.studies.restore_units import restore_units
    kept = Path(__file__).parents[1] / "benchmarks" / "studies" / "condense-topo-cpc10-amd-cpu"
    record = json.loads((kept / "study.json").read_text())
    plan = study.plan_of(record["plan"])
    rows = [row for table_rows in record["results"].values() for row in table_rows]
    names = {study.Unit(**row["unit"]).name for row in rows}
    assert restore_units(kept, tmp_path) == len(names) < len(rows)  # units shared by tables written once
    for row in rows:
        unit = study.Unit(**row["unit"])
        [back] = study.finished_units(plan, [unit], tmp_path)
        # the kept row's unit as today's Unit reads it (fields added since take their defaults)
        assert back == {**{key: value for key, value in row.items() if key != "shape"}, "unit": asdict(unit)}
        if "shape" in row:
            assert json.loads((tmp_path / "units" / unit.set_name / study.SHAPE_NAME).read_text()) == row["shape"]
    study.check_plan(plan, tmp_path)  # the kept plan travels with the units
    assert restore_units(kept, tmp_path) == 0  # the same units again: nothing to write, nothing refused
    changed = tmp_path / "units" / study.Unit(**rows[0]["unit"]).name / "result.json"
    changed.write_text(json.dumps({**json.loads(changed.read_text()), "condense_seconds": -1.0}))
    before = sorted(path for path in tmp_path.rglob("*") if path.is_file())
    shutil.rmtree(tmp_path / "units" / study.Unit(**rows[-1]["unit"]).name)  # one unit missing, one with other content
    with pytest.raises(FileExistsError, match="exists with other content"):
        restore_units(kept, tmp_path)
    assert sorted(path for path in tmp_path.rglob("*") if path.is_file()) == [
        path for path in before if study.Unit(**rows[-1]["unit"]).name not in str(path)]  # refused before writing


def test_two_kept_studies_sharing_units_restore_into_one_folder(tmp_path: Path) -> None:
    """A study kept a seed at a time over units restored from another kept study holds those units
    again (as the study read them back): both restore into one folder."""
    from benchmarks.studies.restore_units import restore_units
    kept = Path(__file__).parents[1] / "benchmarks" / "studies"
    restore_units(kept / "condense-topo-ratio-400-cpu", tmp_path)
    assert restore_units(kept / "condense-t1-400-cpu", tmp_path) > 0
    records = [json.loads((kept / name / "study.json").read_text())
               for name in ("condense-t1-400-cpu", "condense-topo-ratio-400-cpu")]
    names = {study.Unit(**row["unit"]).name
             for record in records for rows in record["results"].values() for row in rows}
    assert all((tmp_path / "units" / name / "result.json").exists() for name in names)
    plan = study.plan_of(records[0]["plan"])  # three seeds
    table10 = units(plan, 10)
    finished = {study.Unit(**row["unit"]).name for row in study.finished_units(plan, table10, tmp_path)}
    assert finished == names & {unit.name for unit in table10}  # every kept Table 10 unit of either study, no other
    assert len(finished) >= 7  # 3 seeds of GM and DD3D without the term, GM's seed 0 with it


def test_a_set_restored_without_its_clouds_or_gaps_is_reported_without_gaps(tmp_path: Path) -> None:
    """A unit restored from a kept study that holds no shape gaps for it (its Table 1 row alone;
    here the kept gaps removed) is Table 10's set without the term: the report reads it back
    without gaps instead of failing on the clouds a restored unit does not have."""
    from benchmarks.studies.restore_units import restore_units
    kept = Path(__file__).parents[1] / "benchmarks" / "studies" / "condense-t1-400-cpu"
    restore_units(kept, tmp_path)
    plan = replace(study.plan_of(json.loads((kept / "study.json").read_text())["plan"]), distills=1)
    [no_term] = [unit for unit in units(plan, 10) if unit.method == "gm" and unit.topo is None]
    (tmp_path / "units" / no_term.set_name / study.SHAPE_NAME).unlink()
    [row] = study.finished_units(plan, [no_term], tmp_path)
    [back] = study._with_shapes(plan, [row], tmp_path, CPU)
    assert back == row and not (tmp_path / "units" / no_term.set_name / study.SHAPE_NAME).exists()
    assert "| GM |" in study.report(plan, {10: [back]})


def test_a_class_the_real_split_lacks_is_left_out_of_the_gaps_and_named() -> None:
    real = load_objects("shapes", split="train", points=64, size=4)
    rows = np.array([np.flatnonzero(real.labels == k)[0] for k in range(3)])
    clouds = np.random.default_rng(1).normal(size=(3, 64, 3)).astype(np.float32)
    whole = shape_gap(CondensedSet(points=clouds, labels=real.labels[rows], provenance={}), real)
    assert whole["missing"] == []
    kept = real.labels != real.labels[rows[2]]  # a split without the third class (a small test split's rare one)
    lacking = replace(real, points=real.points[kept], labels=real.labels[kept])
    first_two = shape_gap(CondensedSet(points=clouds[:2], labels=real.labels[rows[:2]], provenance={}), real)
    got = shape_gap(CondensedSet(points=clouds, labels=real.labels[rows], provenance={}), lacking)
    assert got["missing"] == [real.class_names[real.labels[rows[2]]]]
    assert got["chamfer"] == pytest.approx(first_two["chamfer"], rel=1e-12)
    assert got["diagram"] == pytest.approx(first_two["diagram"], rel=1e-12)
    with pytest.raises(ValueError, match="no class of the set has a real cloud"):
        shape_gap(CondensedSet(points=clouds[2:], labels=real.labels[rows[2:]], provenance={}), lacking)
