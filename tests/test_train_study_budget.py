"""``python -m train.study --converge --regime``: the doubling budget search stops where the
validation gain falls below the tolerance; regimes set the students' losses and refuse a clash;
every unit logs term gradients; a converged two-regime study resumes unit by unit."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

import train.study.ablation as study_mod
from train.config import SYNTHETIC_DEMO
from tests.test_train_study import _argv
from tests.test_train_support import record_calls
from train.study.ablation import TERM_GRAD_INTERVAL, main, parse
from train.study.budget import (CAPACITY_MIN_GAP, HARDER_TARGET_GAP, REGIMES, capacity_statement, regime_conflicts,
                                search_budget)
from train.study.units import AVX2_PIN, cpu_has_avx2, pin_vector_isa
from train.study.report import budget_curves


def _recorded(curve: dict[int, float]) -> tuple[list[int], Callable[[int], float]]:
    calls: list[int] = []

    def score(epochs: int) -> float:
        calls.append(epochs)
        return curve[epochs]

    return calls, score


def test_search_doubles_until_the_gain_is_below_the_tolerance() -> None:
    calls, score = _recorded({4: 0.30, 8: 0.36, 16: 0.395, 32: 0.40, 64: 0.5})
    search = search_budget(score, 4, tolerance=1.0, max_doublings=5)
    assert calls == [4, 8, 16, 32]  # 16 -> 32 gains 0.5 points < 1: stop, 64 is never trained
    assert search.converged and search.chosen == 16 and search.largest == 32
    assert search.to_dict()["tried"] == [[4, 0.30], [8, 0.36], [16, 0.395], [32, 0.40]]


def test_search_counts_a_loss_as_converged_and_reports_running_out_of_doublings() -> None:
    _, score = _recorded({2: 0.40, 4: 0.38})
    assert search_budget(score, 2, 1.0, 3).chosen == 2  # doubling lost accuracy: 2 is converged
    calls, score = _recorded({2: 0.1, 4: 0.2, 8: 0.3})
    search = search_budget(score, 2, 1.0, 2)
    assert calls == [2, 4, 8] and not search.converged and search.chosen == search.largest == 8
    with pytest.raises(ValueError, match="max-doublings"):
        search_budget(score, 2, 1.0, 0)
    with pytest.raises(ValueError, match="budget-tolerance"):
        search_budget(score, 2, 0.0, 1)


def test_capacity_statement_thresholds() -> None:
    small = capacity_statement(0.50, 0.50 - (CAPACITY_MIN_GAP - 0.5) / 100)
    assert "cannot show distillation" in small and "synthetic-variant fine" in small
    assert "bounded by it" in capacity_statement(0.50, 0.45)
    roomy = capacity_statement(0.50, 0.50 - (HARDER_TARGET_GAP + 1) / 100)
    assert "room for distillation" in roomy and "gap +11.0 points" in roomy and "provisional" not in roomy
    assert "provisional" in capacity_statement(0.5, 0.3, converged=False)


def test_regimes_set_the_student_losses_and_refuse_a_contradicting_option(tmp_path: Path) -> None:
    assert REGIMES["paper"] == {"seg_loss": "ce", "class_weights": "none", "kld_class_weights": False}
    assert regime_conflicts("paper", {"seg_loss": "ce+lovasz", "epochs": 3}) == ["seg_loss"]
    assert regime_conflicts("paper", {"seg_loss": "ce"}) == []
    args, _, base = parse(_argv(tmp_path) + ["--regime", "paper", "demo"])
    assert args.regime == ["paper", "demo"] and base.log_term_grads == SYNTHETIC_DEMO["log_term_grads"]
    off = parse(_argv(tmp_path) + ["--log-term-grads", "0"])[2]
    assert off.log_term_grads == TERM_GRAD_INTERVAL  # on in every unit, also where the run's default is off
    paper, demo = (study_mod.regime_config(base, r) for r in args.regime)
    assert (paper.seg_loss, paper.class_weights, paper.kld_class_weights) == ("ce", "none", False)
    assert (demo.seg_loss, demo.class_weights, demo.kld_class_weights) == ("ce+lovasz", "inverse-sqrt", True)
    assert parse(_argv(tmp_path) + ["--log-term-grads", "7"])[2].log_term_grads == 7
    with pytest.raises(ValueError, match="--regime demo sets --kld-class-weights"):
        parse(_argv(tmp_path) + ["--regime", "demo", "--no-kld-class-weights"])


def test_converged_study_searches_budgets_per_regime_and_resumes_unit_by_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = _argv(tmp_path) + ["--rows", "CE", "KD", "--regime", "paper", "demo", "--converge",
                              "--max-doublings", "1", "--budget-tolerance", "1e9"]
    first = record_calls(monkeypatch, study_mod, "train_or_reuse")
    assert main(argv) == 0
    out = tmp_path / "study"
    # the CE students' searches need no teacher and come first, then the teacher's, then the rows
    searches = [out / r / "budget" / "student" / f"epochs-{e}" for r in ("paper", "demo") for e in (1, 2)]
    assert first[:6] == searches + [out / "budget" / "teacher" / f"epochs-{e}" for e in (1, 2)]
    monkeypatch.undo()
    # the searches' validation curves: every unit's val_log, drawn into the study folder
    curves = budget_curves(out)
    assert list(curves) == ["teacher", "demo CE student", "paper CE student"]
    assert all(list(c) == [2] for c in curves.values())  # validation every 2nd epoch: the 1-epoch units have none
    assert curves["teacher"][2][-1][1] == json.loads((out / "budget/teacher/epochs-2/result.json").read_text())["val"]["miou"]
    assert (out / "budget.png").stat().st_size > 10_000
    assert sorted(p.name for p in (out / "budget" / "teacher").iterdir()) == ["epochs-1", "epochs-2"]
    for regime in ("paper", "demo"):
        saved = json.loads((out / regime / "study.json").read_text())["study"]
        budget = saved["budget"]
        assert [e for e, _ in budget["teacher"]["tried"]] == [1, 2] and budget["teacher"]["largest"] == 2
        assert budget["student"]["converged"] and budget["student"]["chosen"] == 1  # any gain < 1e9 points
        assert saved["config"]["epochs"] == 1 and saved["config"]["seg_loss"] == REGIMES[regime]["seg_loss"]
        # the teacher is the budget whose doubling gained too little, like the students'
        assert budget["teacher"]["chosen"] == 1
        assert saved["teacher"]["val"] == json.loads((out / "budget/teacher/epochs-1/result.json").read_text())["val"]
        # the CE row at the search's seed is the chosen budget's search unit, not trained twice
        assert not (out / regime / "units" / "CE" / "seed-0").exists() and len(saved["rows"]["CE"]) == 2
        report = (out / regime / "STUDY.md").read_text()
        assert f"{regime} regime" in report and "Capacity check" in report and "| CE | 2 |" in report
        assert "![budget searches](../budget.png)" in report
        assert "provisional" not in report  # both searches converged (any gain is < 1e9 points)
        kd_log = (out / regime / "units" / "KD" / "seed-0" / "train_log.csv").read_text().splitlines()[0]
        assert "gradnorm_kld" in kd_log  # --log-term-grads is on in every unit
        kd_result = json.loads((out / regime / "units" / "KD" / "seed-1" / "result.json").read_text())
        assert kd_result["seed"] == 1

    calls = record_calls(monkeypatch, study_mod, "train_or_reuse")
    killed = out / "demo" / "budget" / "student" / "epochs-1"  # the chosen budget: the CE row of seed 0
    assert json.loads((killed / "result.json").read_text())["steps_logged_before"] == 0  # trained in one go
    steps = len((killed / "train_log.csv").read_text().splitlines()) - 1
    (killed / "result.json").unlink()
    assert main(argv) == 0
    assert calls == [killed]  # only the unit without a result is run again; its final weights are reused
    # the result says that an earlier invocation trained it, and the report marks the row's wall time
    assert steps > 0 and json.loads((killed / "result.json").read_text())["steps_logged_before"] == steps
    report = (out / "demo" / "STUDY.md").read_text()
    assert "\\* a unit of the row was killed and resumed" in report
    marked = {line.split(" | ")[0][2:]: line.endswith("* |") for line in report.splitlines()
              if line.startswith(("| CE | 2 |", "| KD | 2 |"))}
    assert marked == {"CE": True, "KD": False}

    # --report-only trains nothing: the report covers the finished units and names the one left out
    (out / "paper" / "units" / "KD" / "seed-1" / "result.json").unlink()
    assert main(argv + ["--report-only"]) == 0
    assert calls == [killed]
    report = (out / "paper" / "STUDY.md").read_text()
    assert "| KD | 1 |" in report and "| CE | 2 |" in report
    assert "left out of this report** (`--report-only`): KD seed 1." in report
    assert json.loads((out / "paper" / "study.json").read_text())["study"]["unfinished"] == ["KD seed 1"]
    # a unit every row depends on (here a budget-search unit) must have finished
    (out / "budget" / "teacher" / "epochs-2" / "result.json").unlink()
    assert main(argv + ["--report-only"]) == 2
    assert calls == [killed]


def test_kept_units_carry_a_study_to_a_new_machine_and_its_teacher_must_reproduce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = tmp_path / "kept"
    argv = _argv(tmp_path) + ["--rows", "CE", "KD", "--regime", "paper", "--converge", "--max-doublings", "1",
                              "--budget-tolerance", "1e9", "--keep-units", str(kept)]
    assert main(argv) == 0
    out = tmp_path / "study"
    finished = sorted(p.parent.relative_to(out) for p in out.rglob("result.json"))
    assert sorted(p.parent.relative_to(kept) for p in kept.rglob("result.json")) == finished
    assert {p.name for p in kept.rglob("*")} - {p.parent.name for p in kept.rglob("*")} <= {
        "result.json", "val_log.csv", "train_log.csv"}  # results and logs, never weights
    saved = json.loads((out / "paper" / "study.json").read_text())
    assert "gradnorm_kld" in saved["summary"]["KD"]["terms"]  # the report's term means, from each result

    # a new machine: the run folder is gone, only the kept units are there
    shutil.rmtree(out)
    calls = record_calls(monkeypatch, study_mod, "train_or_reuse")
    assert main(argv) == 0
    teacher = out / "budget" / "teacher" / "epochs-1"
    assert calls == [teacher]  # only the teacher, whose weights the rows need, is trained again
    assert (teacher / "result.reference.json").is_file()
    restored = json.loads((out / "paper" / "study.json").read_text())
    assert json.dumps(restored["study"]["rows"]) == json.dumps(saved["study"]["rows"])  # NaN IoUs compare as text
    assert not (out / "paper" / "units" / "KD" / "seed-0" / "train_log.csv").exists()  # not kept, yet
    assert restored["summary"]["KD"]["terms"] == saved["summary"]["KD"]["terms"]  # the report has its terms

    # a kept result the retrained teacher does not reproduce stops the study before any row
    shutil.rmtree(out)
    path = kept / "budget" / "teacher" / "epochs-1" / "result.json"
    result = json.loads(path.read_text())
    result["val"]["miou"] += 0.01
    path.write_text(json.dumps(result))
    calls.clear()
    assert main(argv) == 2
    assert calls == [teacher] and not (out / "paper" / "study.json").exists()  # no row, no report


def test_a_retrained_teacher_stops_at_its_first_validation_pass_that_differs_from_the_kept_one(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    kept = tmp_path / "kept"
    argv = _argv(tmp_path) + ["--rows", "KD", "--teacher-epochs", "3", "--eval-every-epochs", "1",
                              "--keep-units", str(kept)]
    assert main(argv) == 0
    out, log = tmp_path / "study", kept / "teacher" / "val_log.csv"
    rows = log.read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "2", "4", "6"]  # 2 steps an epoch, a pass after each
    shutil.rmtree(out)
    assert main(argv) == 0  # a new machine of the same kind: every pass as kept, and the rows go on

    # a kept pass the new run does not give: stopped at that pass, not after the whole budget
    shutil.rmtree(out)
    fields = rows[2].split(",")
    fields[2] = repr(float(fields[2]) + 1e-12)
    log.write_text("\n".join(rows[:2] + [",".join(fields)] + rows[3:]) + "\n")
    assert main(argv) == 2
    assert "its validation pass at step 4 differs from the kept run's (val_miou" in capsys.readouterr().err
    steps = [line.split(",")[0] for line in (out / "teacher" / "train_log.csv").read_text().splitlines()[1:]]
    assert steps[-1] == "4" and not (out / "teacher" / "model_final.pt").exists()
    assert not (out / "study.json").exists()  # stopped before any row and the report


def test_units_finished_without_scan_counts_are_scored_again_from_their_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    argv = _argv(tmp_path) + ["--rows", "CE", "KD"]
    assert main(argv) == 0
    unit = tmp_path / "study" / "units" / "KD" / "seed-0"
    full = json.loads((unit / "result.json").read_text())
    older = {**full, "wall_s": 1234.5, **{k: {f: v for f, v in full[k].items() if f != "scans"} for k in ("val", "test")}}
    (unit / "result.json").write_text(json.dumps(older))
    calls = record_calls(monkeypatch, study_mod, "train_or_reuse")
    assert main(argv) == 0
    assert calls == [unit]  # its weights reloaded, nothing else
    # the counts back, the rest of the kept result (its training wall time) untouched; NaN IoUs compare as text
    assert (unit / "result.json").read_text() == json.dumps({**full, "wall_s": 1234.5}, indent=1)

    # weights that do not give the kept evaluation: the study stops rather than mix two models
    older["val"]["miou"] += 0.01
    (unit / "result.json").write_text(json.dumps(older))
    assert main(argv) == 2
    assert "scored again from its weights, its val evaluation differs" in capsys.readouterr().err


def test_the_study_pins_torch_mkl_onednn_and_numpy_to_their_avx2_kernels_where_the_cpu_has_avx2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in AVX2_PIN:
        monkeypatch.delenv(name, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse4_2 avx fma\n")
    assert pin_vector_isa(cpuinfo) == {} and not set(AVX2_PIN) & set(os.environ)  # no AVX2: nothing to pin
    cpuinfo.write_text("flags\t\t: fpu sse4_2 avx avx2 fma avx512f\n")
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")  # a value given by the user is kept
    assert pin_vector_isa(cpuinfo) == {k: v for k, v in AVX2_PIN.items() if k != "MKL_CBWR"}
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2" and os.environ["MKL_CBWR"] == "COMPATIBLE"


@pytest.mark.skipif(not cpu_has_avx2(), reason="the pin applies to x86 CPUs with AVX2")
def test_the_study_starts_again_so_that_numpy_is_imported_with_the_pin() -> None:
    # numpy reads NPY_DISABLE_CPU_FEATURES when imported, and warns (ImportWarning) about the names
    # in it that its version does not dispatch: the warning shows that the process that parsed the
    # arguments imported numpy with the pin, although the command was started without it
    env = {k: v for k, v in os.environ.items() if k not in AVX2_PIN}
    done = subprocess.run([sys.executable, "-W", "always::ImportWarning", "-m", "train.study", "--help"],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    assert "usage:" in done.stdout and "NPY_DISABLE_CPU_FEATURES" in done.stderr


@pytest.mark.skipif(not cpu_has_avx2(), reason="the pin applies to x86 CPUs with AVX2")
def test_under_the_pin_torch_runs_gelu_in_onednns_avx2_kernel() -> None:
    # torch runs GELU through oneDNN on CPU, whose JIT picks its ISA at run time: unpinned, an
    # AVX-512 machine ran it in avx512 code and trained another teacher than the AVX2 machine did.
    # oneDNN's verbose log names the kernel each call ran in
    env = {**os.environ, **AVX2_PIN, "ONEDNN_VERBOSE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", "import torch; torch.nn.functional.gelu(torch.ones(64, 64))"],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    ran = [line for line in done.stdout.splitlines() if ",primitive,exec,cpu,eltwise," in line]
    assert ran and all(",jit:avx2," in line for line in ran), done.stdout
