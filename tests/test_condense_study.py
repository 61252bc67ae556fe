"""The DD3D study (train.condense.studies.study, decision 87) on a tiny plan: every table's units run and
are reported, a unit of the same set is shared between tables, a finished study is read back
without condensing or training again, a table run alone reports the folder's other finished
units too, two processes read a set only once the main one has written it, and the command
refuses an unknown table in one line. Decision 94: a result records its recipe (one of another
recipe refused), an epochs recipe's best test epoch reported apart, the two-level cells and the
paired gains over Random by hand, the kept CPU studies still reported."""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import train.condense.cli.command as command
import train.condense.studies.study as study
from train.condense.cli.command import main
import train.condense.files.data as data_module
from train.condense.files.condensed_file import read_condensed
from train.condense.files.data import DataSpec
from train.condense.studies.study import CROSS_MODELS, Plan, run_study, units
from train.condense.evaluation.training import TrainSpec
from train.data.objects import load_objects
from train.runtime.distributed import DistInfo, cleanup
from train.runtime.leaving import leave
from tests.test_condense_ddp import _free_port, joined_rank

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
TINY = Plan(points=32, low_points=(16,), part_points=32, cpcs=(1,), iterations=1, distills=1, runs=2,
            recipe=TrainSpec(steps=2), part_recipe=TrainSpec(steps=2), size=4)


def test_a_tiny_study_reports_its_tables_and_a_second_run_reads_them_back(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    text = run_study(TINY, (1, 4, 5, 6), tmp_path, CPU)
    for title in ("Table 1: classification", "Table 4: DD3D distilled at fewer points, evaluated at 32",
                  "Table 5: the rotator", "Table 6: explicit clouds", "Seconds to condense"):
        assert title in text
    assert "| DD3D, rotated, rotator learned |" in text and "| GM, init noise |" in text and "| DD3D, resampled |" in text
    assert (tmp_path / "STUDY.md").read_text() == text
    record = json.loads((tmp_path / "study.json").read_text())
    assert {r["unit"]["method"] for r in record["results"]["1"]} == {"full", "random", "herding", "kcenter", "gm",
                                                                       "dm", "tm", "dd3d"}
    assert all(len(r["runs"]) == TINY.runs for rows in record["results"].values() for r in rows)
    folders = {u.set_name for t in (1, 4, 5, 6) for u in units(TINY, t) if u.method != "full"}
    assert {p.name for p in (tmp_path / "units").iterdir()} >= folders  # Table 6's DD3D is Table 1's
    assert len(folders) < sum(len(units(TINY, t)) for t in (1, 4, 5, 6))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished unit ran again")
    monkeypatch.setattr(study, "condense_set", refuse)
    monkeypatch.setattr(study, "evaluate_runs", refuse)
    assert run_study(TINY, (1, 4, 5, 6), tmp_path, CPU) == text
    assert run_study(TINY, (4,), tmp_path, CPU) == text  # one table run: the folder's other finished tables kept
    assert json.loads((tmp_path / "study.json").read_text()) == record


def test_a_table_run_alone_reports_the_finished_units_of_the_others_and_only_those(tmp_path: Path) -> None:
    run_study(TINY, (4,), tmp_path, CPU)
    done = {u.name for u in units(TINY, 4)}
    text = run_study(TINY, (2,), tmp_path, CPU)
    assert "Table 2: part segmentation" in text and "Table 4: DD3D distilled at fewer points" in text
    assert "Table 1: classification" in text  # Table 4's full-resolution DD3D units are Table 1's
    assert "Table 5" not in text
    record = json.loads((tmp_path / "study.json").read_text())
    # Tables 3, 6-8 and 10 also hold Table 1's DD3D units, Table 9 Table 2's GM and DD3D units
    assert set(record["results"]) == {"1", "2", "3", "4", "6", "7", "8", "9", "10"}
    for table in ("1", "3", "6", "7", "8", "10"):
        assert {study.Unit(**r["unit"]).name for r in record["results"][table]} <= done
    assert {study.Unit(**r["unit"]).name for r in record["results"]["9"]} <= {u.name for u in units(TINY, 2)}


def test_table_3_evaluates_table_1s_largest_sets_with_every_backbone_and_table_2_the_parts() -> None:
    three = units(TINY, 3)
    assert {u.model for u in three} == set(CROSS_MODELS) and {u.method for u in three} == {"dm", "gm", "dd3d", "full"}
    assert {u.set_name for u in three if u.method != "full"} <= {u.name for u in units(TINY, 1)}
    assert {u.name for u in three if u.model == "pointnet"} <= {u.name for u in units(TINY, 1)}  # Table 1's units
    assert sorted(u.model for u in three if u.method == "full") == sorted(CROSS_MODELS)
    two = units(TINY, 2)
    assert {u.task for u in two} == {"parts"} and [u.method for u in two] == ["full", "random", "gm", "dd3d"]
    paper = units(study.PRESETS["paper"], 1)
    assert not any(u.method == "tm" and u.cpc == 50 for u in paper)  # the paper's table has no TM at 50
    assert len({u.seed for u in paper if u.method == "gm"}) == 2


def test_the_study_command_takes_points_distillations_and_a_denser_draw_and_refuses_bad_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    plans: list[Plan] = []
    monkeypatch.setattr(command, "run_study", lambda plan, *args: plans.append(plan) or "")
    base = ["study", "--out", str(tmp_path), "--preset", "cpu", "--tables", "1", "--device", "cpu"]
    assert main([*base, "--points", "256", "--distills", "3", "--draw-points", "1024"]) == 0
    assert plans == [replace(study.PRESETS["cpu"], points=256, distills=3, draw_points=1024)]
    one = units(plans[0], 1)
    assert {u.seed for u in one if u.method == "gm"} == {0, 1, 2} and {u.points for u in one if u.method == "gm"} == {256}
    drawn = [u for u in one if u.eval_points == 1024]
    assert {(u.method, u.points, u.setting, u.seed) for u in drawn} == {
        (m, p, s, seed) for m, p in (("random", 1024), ("dd3d", 256)) for s in ("aligned", "rotated") for seed in range(3)}
    assert {u.set_name for u in drawn if u.method == "dd3d"} <= {u.name for u in one}  # Table 1's own DD3D sets, drawn
    for given, said in ((["--points", "0"], "--points must be 1 or more, got 0"),
                        (["--distills", "-1"], "--distills must be 1 or more, got -1"),
                        (["--draw-points", "64"], "--draw-points 64 must be more than the clouds' 64 points")):
        assert main([*base, *given]) == 2
        assert said in capsys.readouterr().err
    assert len(plans) == 1


def test_table_1_at_a_denser_draw_reports_random_and_dd3d_there_paired_by_seed(tmp_path: Path) -> None:
    dense = replace(TINY, draw_points=48, distills=2)
    text = run_study(dense, (1,), tmp_path, CPU, study.Selection(methods=("random", "dd3d"), settings=("aligned",)))
    assert "### Table 1 at 48 points: DD3D distilled at 32 points and drawn at 48" in text
    rows = json.loads((tmp_path / "study.json").read_text())["results"]["1"]
    assert sorted((r["unit"]["method"], r["unit"]["points"], r["unit"]["eval_points"]) for r in rows) == sorted(
        [(m, p, e) for m, p, e in (("random", 32, 32), ("dd3d", 32, 32), ("random", 48, 48), ("dd3d", 32, 48))] * 2)
    made = {"random": {0: [0.5, 0.7], 1: [0.4, 0.4]}, "dd3d": {0: [0.65, 0.65], 1: [0.5, 0.6]}}
    results = {1: [{"unit": dataclasses.asdict(study.Unit(1, m, "aligned", 1, seed, 32 if m == "dd3d" else 48, 48)),
                    "runs": [{"oa": x, "macc": x} for x in scores]} for m, seeds in made.items()
                   for seed, scores in seeds.items()]}
    table = study.report(dense, results)
    # Random 60 and 40, DD3D 65 and 55: gains +5 and +15, mean 10, 12.706 * 5 = 63.5
    assert "| aligned | 1 | 50.0 ± 127.1 [60.0 / 40.0] (mAcc 50.0) | 60.0 ± 63.5 [65.0 / 55.0] (mAcc 60.0) | " \
           "+10.0 ± 63.5 (s0 +5.0, s1 +15.0) |" in table
    assert "### Table 1: classification" not in table  # no unit at the clouds' own 32 points


def test_the_study_command_refuses_an_unknown_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["study", "--out", str(tmp_path), "--preset", "cpu", "--tables", "1", "11", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == ("python -m train.condense: error: --tables [11] are not among "
                                               "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]")


def test_the_study_command_takes_table_1s_cpcs_and_refuses_one_below_1(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    plans: list[Plan] = []

    def planned(plan: Plan, tables: tuple[int, ...], out: Path, info: DistInfo, select: study.Selection) -> str:
        plans.append(plan)
        return ""
    monkeypatch.setattr(command, "run_study", planned)
    assert main(["study", "--out", str(tmp_path), "--preset", "cpu", "--cpcs", "10", "1", "10", "--device", "cpu"]) == 0
    assert plans[0] == replace(study.PRESETS["cpu"], cpcs=(1, 10))
    assert "preset cpu, CPC 1 10" in capsys.readouterr().out
    assert {u.cpc for u in units(plans[0], 3) if u.method != "full"} == {10}  # Table 3 takes the largest
    assert main(["study", "--out", str(tmp_path), "--preset", "cpu", "--cpcs", "0", "1", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == "python -m train.condense: error: --cpcs must be 1 or more, got [0, 1]"
    assert len(plans) == 1


def _slow_writer_rank(rank: int, port: int, out: str) -> None:
    info = joined_rank(rank, 2, port)
    try:
        if rank == 0:  # the main rank writes the set late: the other must wait for it, not fail to read it
            write = study.write_condensed

            def late_write(*args: object) -> None:
                time.sleep(3.0)
                write(*args)
            study.write_condensed = late_write
        unit = units(TINY, 6)[0]  # GM from noise: a distilled set, every rank condenses, the main rank writes
        result = study.run_unit(TINY, unit, Path(out), info, "Table 6, unit 1 of 4")
        assert len(result["runs"]) == TINY.runs
    finally:
        cleanup()
    leave(0)


def test_two_processes_read_a_set_only_after_the_main_one_wrote_it(tmp_path: Path) -> None:
    mp.spawn(_slow_writer_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "units" / units(TINY, 6)[0].name / "result.json").exists()


def test_a_result_records_its_recipe_and_one_of_another_recipe_is_refused(tmp_path: Path) -> None:
    run_study(TINY, (4,), tmp_path, CPU)
    unit = units(TINY, 4)[0]
    kept = json.loads((tmp_path / "units" / unit.name / "result.json").read_text())
    assert kept["recipe"] == TrainSpec(steps=2).record() and kept["recipe"]["recipe"] == "cpu"
    other = replace(TINY, recipe=TrainSpec(steps=3))
    with pytest.raises(ValueError, match=r"result.json was evaluated with the cpu recipe .* study into another --out"):
        run_study(other, (4,), tmp_path, CPU)


def test_an_epochs_recipe_reports_the_best_test_epoch_apart_for_comparison_only(tmp_path: Path) -> None:
    plan = replace(TINY, recipe=TrainSpec(steps=None, epochs=2, batch_size=256, test_every=1, recipe="paper"))
    text = run_study(plan, (4,), tmp_path, CPU)
    assert "| row | score | condense s | best test epoch* |" in text
    assert f"\\* {study.COMPARISON}." in text and "paper recipe: pointnet, 2 epochs, batch 256" in text
    runs = json.loads((tmp_path / "study.json").read_text())["results"]["4"][0]["runs"]
    assert all(run["best_test_epoch"]["epoch"] in (1, 2) and "oa" in run for run in runs)


def _result(method: str, seed: int, scores: list[float], setting: str = "aligned") -> dict:
    unit = study.Unit(1, method, setting, 0 if method == "full" else 1, seed, 32, 32)
    return {"unit": dataclasses.asdict(unit), "runs": [{"oa": x, "macc": x} for x in scores]}


def test_the_report_gives_two_levels_and_the_paired_gain_over_random_by_hand() -> None:
    results = {1: [_result("full", 0, [0.9, 0.92]), _result("random", 0, [0.60, 0.62]),
                   _result("random", 1, [0.70, 0.66]), _result("gm", 0, [0.65, 0.67]), _result("gm", 1, [0.70, 0.70])]}
    text = study.report(TINY, results)
    # random: means 61 and 68, t(0.975, 1) * 3.5 = 44.5; gm: 66 and 70, 12.706 * 2 = 25.4
    assert "| aligned | 1 | 64.5 ± 44.5 [61.0 / 68.0] (mAcc 64.5) | 68.0 ± 25.4 [66.0 / 70.0] (mAcc 68.0) | " \
           "91.0 ± 12.7 (mAcc 91.0 ± 12.7) |" in text
    # gains s0 +5, s1 +2: mean 3.5, 12.706 * 1.5 = 19.1
    assert "| aligned | 1 | +3.5 ± 19.1 (s0 +5.0, s1 +2.0) |" in text
    assert "| rotated | 1 | - | - | - |" in text
    assert text.startswith("Data: shapes (size 4), 32 points; 1 outer iterations")
    assert study.report(replace(TINY, size=None), results).startswith("Data: shapes, 32 points;")


def test_a_generated_split_is_made_once_a_process_and_a_change_to_one_copy_reaches_no_other(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple] = []
    real_load = data_module.load_objects
    monkeypatch.setattr(data_module, "load_objects", lambda *a, **k: made.append(a) or real_load(*a, **k))
    spec = DataSpec("shapes", size=3, points=16, data_seed=7)  # a seed no other test reads: made here
    first = spec.load("train")
    first.points[0, 0, 0] = 99.0
    again = DataSpec("shapes", size=3, points=16, data_seed=7).load("train")
    assert len(made) == 1 and again.points[0, 0, 0] != 99.0
    fresh = load_objects("shapes", split="train", points=16, size=3, seed=7)
    np.testing.assert_array_equal(again.points, fresh.points)
    np.testing.assert_array_equal(again.labels, fresh.labels)
    spec.load("test"), replace(spec, size=4).load("train")
    assert len(made) == 3


@pytest.mark.parametrize("kept", sorted(Path(__file__).parents[1].glob("benchmarks/studies/condense-cpu*/study.json")))
def test_a_kept_study_written_before_recipes_had_names_still_reports(kept: Path) -> None:
    record = json.loads(kept.read_text())
    plan = study.plan_of(record["plan"])
    assert plan.recipe.recipe == "cpu" and plan.part_recipe == plan.recipe
    text = study.report(plan, {int(t): rows for t, rows in record["results"].items()})
    assert "Table 1's gains over Random's draw of the same seed" in text and "] (mAcc " in text


@pytest.mark.parametrize("name, budget, marks", [
    ("condense-t1-400-cpu", (400, 3, 64, 1024), ("### Table 1 at 1024 points", "| DD3D, resampled |")),
    ("condense-t1-400-cpu/paper-recipe", (400, 3, 64, None), ("paper recipe: pointnet, 201 epochs",
                                                              "| aligned | 1 | +11.3 ± 3.8 (s0 +9.9")),
    ("condense-topo-ratio-cpu", (40, 3, 64, None), ("### Table 10:", "| DD3D | shape | chamfer control | 3 |",
                                                    "| 1 | DD3D, 2 noise scalars a point | shape, r 1 |")),
    ("condense-topo-ratio-cpc10-cpu", (10, 3, 64, None), ("| 10 | DD3D | chamfer control, r 1 |",
                                                          "| GM | feature | chamfer control | 3 |")),
    ("condense-t1-lidar-cpu", (40, 5, 64, None), ("| aligned | 1 | +3.1 ± 2.7 (s0 +2.1", "| DD3D, resampled |",
                                                  "test split has no cloud of: bicyclist.")),
    ("condense-t1-400-cpu/p256", (400, 3, 256, 1024), ("| +12.0 ± 5.5 (s0 +14.5, s1 +11.0, s2 +10.4) |",
                                                       "| DD3D, resampled | 76.9 ± 4.2")),
    ("condense-t1-400-cpu/p256-rotated", (400, 3, 256, 1024), (
        "| rotated | 1 | +8.0 ± 4.6 (s0 +6.9, s1 +10.1, s2 +6.9) | ", "| +5.3 ± 10.7 (s0 +4.7, s1 +9.8, s2 +1.3) |")),
    ("condense-topo-ratio-400-cpu", (400, 3, 64, None), ("| 1 | GM | shape, r 1 | 72.2 ± 5.0 [74.2 / 70.2 / 72.3] "
                                                         "(mAcc 72.2) | -1.3 ± 4.5 (s0 +0.7, s1 -2.8, s2 -1.8) |",
                                                         "| GM | shape | chamfer control | 3 | +4.8 ± 3.3 | 3 of 3 |",
                                                         "| DD3D | shape | chamfer control | 3 | -0.4 ± 10.4 | 1 of 3 |",
                                                         "| GM | shape | start control | 3 | +10.2 ± 4.4 | 3 of 3 |",
                                                         "| 1 | DD3D, 2 noise scalars a point | none | 53.5 ± 8.0 "
                                                         "[50.8 / 57.0 / 52.5] (mAcc 53.5) |",
                                                         "| DD3D | shape | start control | 3 | +34.0 ± 18.7 | 3 of 3 |",
                                                         "| DD3D, 2 noise scalars a point | shape | no term | 3 | "
                                                         "-1.2 ± 2.6 | 0 of 3 |")),
    ("condense-topo-ratio-lidar-cpu", (40, 3, 64, None), ("| GM | shape | chamfer control | 3 | +0.3 ± 1.2 | 6 of 9 |",
                                                          "The held-out gaps leave out the classes the test split has "
                                                          "no cloud of: bicyclist.")),
    ("condense-topo-t8-dd3d-cpu", (40, 2, 64, None), ("| aligned | 1 | DD3D | shape, w 1000 (chosen on val) |",
                                                      "| DD3D | gain of shape, w 1000 | -0.2 ± 0.2 (s0 -0.2, s1 -0.2) | "
                                                      "-0.7 ± 27.9"))])
def test_a_kept_study_is_the_report_of_its_results(name: str, budget: tuple, marks: tuple[str, ...]) -> None:
    """A kept study's STUDY.md is what the report makes of its study.json, line for line:
    ``condense-t1-400-cpu`` (Table 1 at 400 iterations with the 1,024-point draw, Table 6's resampled
    DD3D), its ``paper-recipe`` (the same sets trained with the paper's recipe),
    ``condense-topo-ratio-cpu`` (Table 10, the term against its controls),
    ``condense-topo-ratio-cpc10-cpu`` (Table 10 at CPC 10, the feature reading) and
    ``condense-t1-lidar-cpu`` (Tables 1 and 6 on ``lidar_objects``, five distillations),
    ``condense-t1-400-cpu/p256`` (Tables 1 and 6 at 256 points, DD3D also drawn at 1,024), its
    ``p256-rotated`` (Table 1 rotated at 256 points, run a seed at a time) and
    ``condense-topo-ratio-lidar-cpu`` (Table 10 on ``lidar_objects``), ``condense-topo-ratio-400-cpu``
    (Table 10 at 400 iterations, r 1, run a seed or a control at a time: GM's and DD3D's three seeds of the term
    and of both controls, DD3D's surfaces without and with the term) and
    ``condense-topo-t8-dd3d-cpu`` (Table 7's DD3D and Table 8 with DD3D's chosen sets)."""
    folder = Path(__file__).parents[1] / "benchmarks" / "studies" / name
    record = json.loads((folder / "study.json").read_text())
    plan = study.plan_of(record["plan"])
    assert (plan.iterations, plan.distills, plan.points, plan.draw_points) == budget
    text = study.report(plan, {int(t): rows for t, rows in record["results"].items()})
    assert text == (folder / "STUDY.md").read_text()
    assert all(mark in text for mark in marks)


def test_the_study_command_runs_the_cpu_preset_with_its_recipe_on_a_tiny_budget(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(study.PRESETS, "cpu", TINY)  # the cpu preset's recipe, at a test's budget
    assert main(["study", "--out", str(tmp_path), "--preset", "cpu", "--tables", "4", "--device", "cpu"]) == 0
    assert "cpu recipe: pointnet, 2 steps, batch 32" in capsys.readouterr().out
    assert study.PRESETS["paper"].recipe.recipe == "paper" and study.PRESETS["paper"].part_recipe.optimizer == "sgd"


def test_a_selection_runs_only_its_units_and_reports_every_finished_one(tmp_path: Path) -> None:
    only = study.Selection(methods=("random", "full"), settings=("aligned",))
    text = run_study(TINY, (1,), tmp_path, CPU, only)
    ran = {r["unit"]["method"] + "/" + r["unit"]["setting"]
           for r in json.loads((tmp_path / "study.json").read_text())["results"]["1"]}
    assert ran == {"random/aligned", "full/aligned"}
    assert "| aligned | 1 |" in text and "| rotated | 1 | - |" in text  # the rotated row empty
    run_study(TINY, (1,), tmp_path, CPU, study.Selection(methods=("random",), settings=("rotated",)))
    rows = json.loads((tmp_path / "study.json").read_text())["results"]["1"]
    assert {r["unit"]["method"] + "/" + r["unit"]["setting"] for r in rows} == ran | {"random/rotated"}
    assert len(rows) == len({study.Unit(**r["unit"]).name for r in rows})  # each unit once


def test_a_selection_of_terms_takes_the_units_of_those_readings_or_none() -> None:
    seven = units(replace(TINY, cpcs=(3,)), 7)  # the feature readings act from CPC 3
    takes = study.Selection(methods=("dd3d",), terms=("none", "feature")).takes
    assert {(u.method, u.topo) for u in seven if takes(u)} == {("dd3d", None), ("dd3d", "feature")}
    assert all(study.Selection().takes(u) for u in seven)


def test_a_selection_of_weights_takes_those_weights_units_and_every_unit_without_the_term() -> None:
    seven = units(replace(TINY, cpcs=(3,)), 7)  # the feature readings act from CPC 3
    takes = study.Selection(topo_weights=(1e3,)).takes
    taken = {(u.method, u.topo, u.topo_weight) for u in seven if takes(u)}
    assert taken == {(m, t, w) for m in ("gm", "dd3d")
                     for t, w in ((None, 0.0), ("shape", 1e3), ("feature", 1e3), ("feature_equal", 1e3))}
    assert {u.topo_weight for u in seven} == {0.0, *study.TOPO_WEIGHTS}  # the others were there to leave out


def test_the_study_command_refuses_an_unknown_method_or_setting_a_bad_size_and_a_folder_of_another_plan(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["study", "--out", str(tmp_path), "--preset", "cpu", "--tables", "1", "--device", "cpu"]
    assert main([*base, "--methods", "gm", "nerf"]) == 2
    assert "--methods ['nerf'] are not among ['random', 'herding'" in capsys.readouterr().err
    assert main([*base, "--settings", "upside_down"]) == 2
    assert "--settings ['upside_down'] are not among ['aligned', 'rotated', 'rotated_raw']" in capsys.readouterr().err
    assert main([*base, "--terms", "none", "colour"]) == 2
    assert "--terms ['colour'] are not among ['none', 'shape', 'feature', 'feature_equal']" in capsys.readouterr().err
    assert main([*base, "--topo-weights", "1000", "300"]) == 2
    assert "--topo-weights [300.0] are not among [1000.0, 10000.0, 100000.0]" in capsys.readouterr().err
    assert main([*base, "--iterations", "0"]) == 2
    assert "--iterations must be 1 or more, got 0" in capsys.readouterr().err
    (tmp_path / "study.json").write_text(json.dumps({"plan": dataclasses.asdict(study.PRESETS["cpu"]), "results": {}}))
    assert main([*base, "--iterations", "10"]) == 2
    assert "holds a study of iterations 40" in capsys.readouterr().err
    assert main([*base, "--size", "1500"]) == 2
    assert "holds a study of size None" in capsys.readouterr().err
    assert main([*base[:2], str(tmp_path / "other"), *base[3:], "--size", "0"]) == 2
    assert "size of shapes must be a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("method, table", [("random", 1), ("dd3d", 4), ("full", 1)])
def test_unit_clouds_are_what_run_unit_trained_on(tmp_path: Path, method: str, table: int) -> None:
    """``study.unit_clouds`` (the public way to a unit's clouds, for scripts that train them again)
    gives the clouds ``run_unit`` evaluated: the same runs come out of them; Table 4's DD3D unit
    trains on its generator's draw at another resolution."""
    unit = next(u for u in units(TINY, table) if u.method == method and (table != 4 or u.eval_points != u.points))
    result = study.run_unit(TINY, unit, tmp_path, CPU, "Table 1, unit 1 of 1")
    clouds = study.unit_clouds(TINY, unit, tmp_path, CPU)
    assert clouds.train.points.shape[1] == unit.eval_points and clouds.test.points.shape[1] == unit.eval_points
    again = study.evaluate_runs(clouds.train, data_module.clouds_of(clouds.test), TINY.recipe_of(unit), TINY.runs, 0,
                                CPU, desc="again", val=clouds.val)
    assert [run["oa"] for run in again] == pytest.approx([run["oa"] for run in result["runs"]], abs=1e-9)


def test_table_10_holds_the_term_and_each_control_at_each_ratio_and_dd3ds_surfaces() -> None:
    ten = units(replace(TINY, distills=2), 10)
    names = [u.name for u in ten]
    assert len(names) == len(set(names)) == 2 * (2 * (1 + 3 * 3) + (1 + 3))  # CPC 1: the shape reading only
    assert {(u.method, u.control, u.noise_dims) for u in ten if u.topo} == {
        (m, c, 1) for m in ("gm", "dd3d") for c in (None, "chamfer", "start")} | {("dd3d", None, 2)}
    assert {u.topo_ratio for u in ten if u.topo} == set(study.TOPO_RATIOS) and {u.topo_weight for u in ten} == {0.0}
    plain = {u.name for u in ten if u.topo is None and u.noise_dims == 1}
    assert plain <= {u.name for u in units(replace(TINY, distills=2), 1)}  # Table 1's sets, shared
    assert {"classification-aligned-none-dd3d-noise2-topo-shape-r0.1-cpc1-p32-s0-pointnet",
            "classification-aligned-none-gm-topo-shape-r1-chamfer-cpc1-p32-s1-pointnet"} <= set(names)
    takes = study.Selection(topo_ratios=(0.1,), controls=("term", "start")).takes
    assert {(u.topo_ratio, u.control) for u in ten if takes(u) and u.topo} == {(0.1, None), (0.1, "start")}
    assert all(takes(u) for u in ten if u.topo is None)  # units without the term are not selected by either
    assert not any(study.Selection(topo_weights=(1e3,)).takes(u) for u in ten if u.topo)  # weights select Table 7's
    with pytest.raises(ValueError, match=r"--controls \['pull'\] are not among \['term', 'chamfer', 'start'\]"):
        study.Selection(controls=("pull",))
    with pytest.raises(ValueError, match="--topo-ratios and --controls select among Table 10's units"):
        run_study(TINY, (1,), Path("unused"), CPU, study.Selection(controls=("term",)))


def test_a_tiny_table_10_runs_records_its_strength_and_reports_the_term_against_its_control(tmp_path: Path) -> None:
    only = study.Selection(methods=("gm",), topo_ratios=(0.1,), controls=("term", "chamfer"))
    text = run_study(TINY, (10,), tmp_path, CPU, only)
    assert "### Table 10: the persistence term against its non-topological controls" in text
    assert "| 1 | GM | none |" in text and "| 1 | GM | shape, r 0.1 |" in text and "| 1 | GM | chamfer control, r 0.1 |" in text
    assert "| GM | shape | chamfer control | 1 |" in text  # pooled: one seed
    chamfer = next(u for u in units(TINY, 10) if u.control == "chamfer" and u.topo_ratio == 0.1 and u.method == "gm")
    cset = read_condensed(tmp_path / "units" / chamfer.set_name / "condensed.npz")
    assert cset.provenance["topo"] == {"reading": "shape", "ratio": 0.1, "control": "chamfer"}
    assert cset.provenance["distill"]["strength_norms"]["matching"] > 0
    assert json.loads((tmp_path / "units" / chamfer.set_name / study.SHAPE_NAME).read_text())[study.HELD_OUT]


def test_table_10s_pooled_differences_by_hand() -> None:
    def row(seed: int, score: float, ratio: float | None = None, control: str | None = None) -> dict:
        unit = study.Unit(10, "gm", "aligned", 1, seed, 32, 32, topo=None if ratio is None else "shape",
                          topo_ratio=ratio, control=control)
        return {"unit": dataclasses.asdict(unit), "runs": [{"oa": score, "macc": score}]}
    plan = replace(TINY, topo_ratios=(0.1, 1.0))
    rows = [row(0, 0.60), row(1, 0.62), row(0, 0.64, 0.1), row(1, 0.60, 0.1), row(0, 0.61, 0.1, "start"),
            row(1, 0.62, 0.1, "start"), row(0, 0.70, 1.0), row(1, 0.66, 1.0), row(0, 0.60, 1.0, "start"),
            row(1, 0.61, 1.0, "start")]
    text = "\n".join(study._control_table(plan, rows))
    assert "| 1 | GM | start control, r 0.1 | 61.5 ± 6.4 [61.0 / 62.0] (mAcc 61.5) | +0.5 ± 6.4 (s0 +1.0, s1 +0.0) | " \
           "+0.5 ± 31.8 (s0 +3.0, s1 -2.0) |" in text
    # over no term, s0 +4 (r 0.1) and +10 (r 1), s1 -2 and +4: seeds' means 7 and 1, mean 4, sd 4.243,
    # t(1) 12.706 * 4.243 / sqrt(2) = 38.1; three of the four pairs above zero
    assert "| GM | shape | no term | 2 | +4.0 ± 38.1 | 3 of 4 |" in text
    # the term minus start: s0 +3 and +10, s1 -2 and +5: seeds' means 6.5 and 1.5, mean 4, sd 3.536, 31.8
    assert "| GM | shape | start control | 2 | +4.0 ± 31.8 | 3 of 4 |" in text


def test_the_dd3d_gap_report_holds_every_row_its_kept_json_gives() -> None:
    """``condense-dd3d-gap-cpu``'s STUDY.md quotes its tables: every row ``summary.py`` makes of the
    kept JSON records (capacity, controls, losses, matching, the kept ``lidar_objects`` study) is in it
    verbatim."""
    import importlib.util
    folder = Path(__file__).parents[1] / "benchmarks" / "studies" / "condense-dd3d-gap-cpu"
    spec = importlib.util.spec_from_file_location("dd3d_gap_summary", folder / "summary.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    rows = [row for row in summary.tables(folder) if row.startswith("| ") and not row.startswith("|---")]
    report = (folder / "STUDY.md").read_text().splitlines()
    assert len(rows) > 50
    assert [row for row in rows if row not in report] == []
