"""The DD3D study (train.condense.study, decision 87) on a tiny plan: every table's units run and
are reported, a unit of the same set is shared between tables, a finished study is read back
without condensing or training again, a table run alone reports the folder's other finished
units too, two processes read a set only once the main one has written it, and the command
refuses an unknown table in one line."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import train.condense.command as command
import train.condense.study as study
from train.condense.command import main
from train.condense.study import CROSS_MODELS, Plan, run_study, units
from train.condense.training import TrainSpec
from train.runtime.distributed import DistInfo, cleanup
from train.runtime.leaving import leave
from tests.test_condense_ddp import _free_port, joined_rank

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
TINY = Plan(points=32, low_points=(16,), part_points=32, cpcs=(1,), iterations=1, distills=1, runs=2,
            recipe=TrainSpec(steps=2), size=4)


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
    assert set(record["results"]) == {"1", "2", "3", "4", "6"}  # Tables 3 and 6 also hold Table 1's DD3D units
    for table in ("1", "3", "6"):
        assert {study.Unit(**r["unit"]).name for r in record["results"][table]} <= done


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


def test_the_study_command_refuses_an_unknown_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["study", "--out", str(tmp_path), "--preset", "cpu", "--tables", "1", "9", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == "python -m train.condense: error: --tables [9] are not among [1, 2, 3, 4, 5, 6]"


def test_the_study_command_takes_table_1s_cpcs_and_refuses_one_below_1(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    plans: list[Plan] = []

    def planned(plan: Plan, tables: tuple[int, ...], out: Path, info: DistInfo) -> str:
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
