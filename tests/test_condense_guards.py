"""What keeps a user of ``python -m train.condense`` who steps off the documented path from losing a
set (decisions 80 and 90): every ``--out`` checked and a run folder held before any work, a folder
holding another run's set refused, ``--cpc`` above a class's clouds and a class without clouds
refused, ``--device cuda`` without CUDA refused, a stop by Ctrl-C or SIGTERM saying in one line
what was kept and how to go on, a stopped study unit going on from its checkpoint, ``--from``
taking a run folder or its file, and help and unknown forms that name what is accepted."""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import socket
import time
from pathlib import Path

import pytest
import torch

import train.condense.studies.study as study
from tests.condensation_tiny import CPU, Interrupted, stop_run_after_second_checkpoint, tiny_set
from train.condense.cli.command import main
from train.condense.files.condensed_file import read_condensed
from train.condense.files.data import DataSpec
from train.condense.files.distill_checkpoint import CHECKPOINT_NAME, Checkpoint, saved_iteration, saved_seconds
from train.condense.methods import METHODS, condense_set
from train.condense.cli.out_folder import LOCK_NAME
from train.condense.studies.study import Plan, units
from train.condense.evaluation.training import TrainSpec
from train.runtime.lock_files import try_hold

PROG = "python -m train.condense"
TINY = ["--dataset", "shapes", "--size", "3", "--points", "16", "--device", "cpu"]
DM = [*TINY, "--method", "dm", "--cpc", "1", "--iterations", "3"]


def refusal(capsys: pytest.CaptureFixture, prefix: str = f"{PROG}: error: ") -> str:
    """The one line a refusal printed (stderr holds nothing else)."""
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(prefix), err
    return err


def command_lines(capsys: pytest.CaptureFixture) -> list[str]:
    """The command's own lines on stderr (the progress bars' left out)."""
    return [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith(PROG)]


def random_set(out: Path) -> Path:
    assert main([*TINY, "--method", "random", "--cpc", "1", "--out", str(out)]) == 0
    return out / "condensed.npz"


# ----------------------------------------------------------------------------- --out folders
def test_a_folder_holding_another_runs_set_is_refused_and_overwrite_replaces_set_and_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    first = random_set(out).read_bytes()
    capsys.readouterr()
    assert main([*TINY, "--method", "random", "--cpc", "1", "--seed", "1", "--out", str(out)]) == 2
    assert refusal(capsys) == (f"{PROG}: error: --out {out} already holds a condensed set ({out}/condensed.npz): give "
                               "another --out, or --overwrite to replace it (the set is replaced only when the new one is "
                               "written)")
    assert (out / "condensed.npz").read_bytes() == first
    (out / "distill.pt").write_bytes(b"another run's checkpoint")
    assert main([*TINY, "--method", "random", "--cpc", "1", "--seed", "1", "--out", str(out), "--overwrite"]) == 0
    assert read_condensed(out / "condensed.npz").provenance["seed"] == 1
    assert not (out / "distill.pt").exists()  # the old run's checkpoint does not stay beside the new set


@pytest.mark.parametrize("options, words", [
    (["--method", "dd3d", "--cloud-lr", "0.1"], "--cloud-lr is an option of gm, dm, tm, not of dd3d"),
    (["--method", "gm", "--topo", "shape"], "--topo and --topo-weight go together"),
    (["--method", "gm", "--iterations", "0"], "--iterations must be a positive integer"),
    (["--method", "herding", "--lr", "0"], "--lr must be positive"),
    # the refusals that need the train split: read and checked before --overwrite clears
    (["--method", "dm", "--cpc", "4"], "cpc 4 is more than class 'chair' of shapes holds (3 clouds"),
    (["--method", "gm", "--task", "parts", "--topo", "feature", "--topo-weight", "10"],
     "--topo feature reads the classification network's global feature; a part segmentation set takes --topo shape"),
    (["--method", "dm", "--task", "parts"], "dm distils classification sets only (part segmentation: gm, dd3d)"),
    (["--method", "gm", "--rotator", "learned"], "the learned sign is trained by dd3d; gm takes the rotator"),
    (["--method", "nope"], "method 'nope' is not one of random"),
])
def test_overwrite_removes_nothing_when_an_option_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch, options: list[str],
                                                             words: str) -> None:
    out = tmp_path / "run"
    first = random_set(out).read_bytes()
    kept = sorted((p.name, p.read_bytes()) for p in out.iterdir() if p.is_file())
    capsys.readouterr()
    monkeypatch.setattr("train.condense.methods.feature_network", lambda *a, **k: pytest.fail("trained"))
    assert main([*TINY, "--cpc", "1", *options, "--out", str(out), "--overwrite"]) == 2
    assert words in refusal(capsys)
    assert (out / "condensed.npz").read_bytes() == first
    assert sorted((p.name, p.read_bytes()) for p in out.iterdir() if p.is_file()) == kept  # nothing in --out touched


def test_a_stopped_runs_checkpoint_is_refused_without_resume_and_resume_needs_one(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "distill.pt").write_bytes(b"x")
    assert main([*DM, "--out", str(tmp_path)]) == 2
    assert "holds a stopped run's distill.pt: go on with --resume" in refusal(capsys)
    assert main([*DM, "--resume", "--out", str(tmp_path / "new")]) == 2
    assert refusal(capsys) == (f"{PROG}: error: {tmp_path}/new/distill.pt: no checkpoint to resume from (a run keeps "
                               "its first after its first iteration): start the run without --resume")
    assert main([*DM, "--resume", "--overwrite", "--out", str(tmp_path)]) == 2  # resumes a stopped --overwrite run
    assert "/.replacing/distill.pt: no stopped --overwrite run to resume from" in refusal(capsys)
    assert (tmp_path / "distill.pt").read_bytes() == b"x"
    assert main([*TINY, "--method", "random", "--cpc", "1", "--resume", "--out", str(tmp_path / "r")]) == 2
    assert refusal(capsys) == f"{PROG}: error: --resume is an option of gm, dm, tm, dd3d, not of random"


def test_a_second_run_into_a_held_folder_is_refused_naming_the_first(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    fh, other = try_hold(tmp_path, LOCK_NAME)  # a live run of this folder (flock: another open file, refused)
    with fh:
        assert other is None
        assert main([*TINY, "--method", "random", "--cpc", "1", "--out", str(tmp_path)]) == 2
        assert refusal(capsys) == (f"{PROG}: error: --out {tmp_path} is being written by another run (pid "
                                   f"{os.getpid()} on {socket.gethostname()}): wait for it to end, or give another --out")
        assert main(["study", "--preset", "cpu", "--out", str(tmp_path), "--device", "cpu"]) == 2
        assert "is being written by another run" in refusal(capsys)
    assert not (tmp_path / "condensed.npz").exists()
    random_set(tmp_path)  # released: the folder is free again


@pytest.mark.parametrize("argv, words", [
    ([*TINY, "--method", "random", "--cpc", "1", "--out", "FILE"], "--out FILE is a file: this form writes a folder"),
    ([*TINY, "--method", "random", "--cpc", "1", "--out", "FILE/o"], "--out FILE/o lies under the file FILE"),
    (["table", "--out", "FILE/o", "--device", "cpu"], "--out FILE/o lies under the file FILE"),
    (["study", "--preset", "cpu", "--out", "FILE", "--device", "cpu"], "--out FILE is a file"),
    (["evaluate", "--from", "SET", "--out", "DIR", "--device", "cpu"], "--out DIR is a folder: this form writes one "
                                                                        "file; give a file name"),
    (["evaluate", "--from", "SET", "--out", "FILE/s.json"], "--out FILE/s.json lies under the file FILE"),
    (["sample", "--from", "SET", "--points", "8", "--out", "DIR"], "--out DIR is a folder"),
    (["sample", "--from", "SET", "--points", "8", "--out", "SET"], "--out SET already exists: give another file, or "
                                                                    "--overwrite to replace it"),
    (["sample", "--from", "SET", "--points", "8", "--out", "DIR/s.txt"], "--out DIR/s.txt: the condensed set is a "
                                                                          ".npz file"),
    (["show", "--from", "SET", "--out", "FILE/f.png"], "--out FILE/f.png lies under the file FILE"),
])
def test_every_out_is_checked_before_any_work_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                          words: str) -> None:
    made = random_set(tmp_path / "set")
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    capsys.readouterr()
    monkeypatch.setattr("train.condense.cli.command.evaluate_runs", lambda *a, **k: pytest.fail("trained"))
    swap = {"FILE": str(tmp_path / "file"), "DIR": str(tmp_path / "dir"), "SET": str(made)}
    given = [next((a.replace(k, v) for k, v in swap.items() if a.startswith(k)), a) for a in argv]
    form = argv[0] if argv[0] in ("sample", "show") else ""
    assert main(given) == 2
    err = refusal(capsys, f"{PROG}{' ' + form if form else ''}: error: ")
    for k, v in swap.items():
        words = words.replace(k, v)
    assert words in err


def test_sample_writes_only_a_new_file_unless_overwrite_and_takes_a_run_folder_or_its_file(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "dd3d"
    assert main([*TINY, "--method", "dd3d", "--cpc", "1", "--iterations", "1", "--out", str(run)]) == 0
    gm = tmp_path / "gm"
    random_set(gm)
    before = (gm / "condensed.npz").read_bytes()
    capsys.readouterr()
    assert main(["sample", "--from", str(run), "--points", "8", "--out", str(gm)]) == 2  # the review's lost gm set
    assert "is a folder" in refusal(capsys, f"{PROG} sample: error: ")
    assert (gm / "condensed.npz").read_bytes() == before
    for source in (run, run / "condensed.npz"):
        assert main(["sample", "--from", str(source), "--points", "8", "--out", str(tmp_path / "s.npz"),
                     "--overwrite"]) == 0
        assert read_condensed(tmp_path / "s.npz").points.shape[1] == 8
    capsys.readouterr()
    assert main(["evaluate", "--from", str(run), "--runs", "1", "--device", "cpu", "--steps", "1"]) == 0
    assert "dd3d CPC 1 (13 clouds)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- classes, device
@pytest.mark.parametrize("method", ["random", "herding", "gm"])
def test_a_cpc_above_a_classs_clouds_is_refused_naming_the_class_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    monkeypatch.setattr("train.condense.methods.feature_network", lambda *a, **k: pytest.fail("trained"))
    assert main([*TINY, "--method", method, "--cpc", "4", "--out", str(tmp_path)]) == 2
    assert refusal(capsys) == (f"{PROG}: error: cpc 4 is more than class 'chair' of shapes holds (3 clouds in its "
                               "train split): give a CPC of 3 or less or a larger --size (a generated set)")
    assert not (tmp_path / "condensed.npz").exists()


@pytest.mark.parametrize("method", list(METHODS))
def test_a_class_without_training_clouds_is_refused_naming_it(tmp_path: Path, method: str) -> None:
    train = tiny_set()
    train = dataclasses.replace(train, points=train.points[train.labels != 1], labels=train.labels[train.labels != 1])
    with pytest.raises(ValueError, match="^class 'stool' of shapes has no clouds in its train split: a condensed set "
                                         "needs every class"):
        condense_set(DataSpec("shapes", size=4, points=32), method, 1, 0, TrainSpec(steps=1), tmp_path / "cache.pt",
                     CPU, train=train)


def test_cuda_asked_of_a_torch_without_it_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in ([*TINY[:-1], "cuda", "--method", "random", "--cpc", "1", "--out", str(tmp_path)],
                 ["study", "--preset", "cpu", "--out", str(tmp_path), "--device", "cuda"]):
        assert main(argv) == 2
        err = refusal(capsys)
        assert "--device cuda: this torch" in err and err.endswith("give --device cpu, or auto")


# ----------------------------------------------------------------------------- stops
def _signal_after(monkeypatch: pytest.MonkeyPatch, at: int, sig: signal.Signals) -> None:
    """The distillation is signalled as it ends iteration ``at`` (after that iteration's checkpoint, if due)."""
    save = Checkpoint.save_if_due

    def save_then_signal(self: Checkpoint, iteration: int, *rest: object) -> None:
        save(self, iteration, *rest)
        if iteration == at:
            os.kill(os.getpid(), sig)
    monkeypatch.setattr(Checkpoint, "save_if_due", save_then_signal)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_says_in_one_line_what_was_kept_and_its_command_goes_on_to_the_uninterrupted_file(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, sig: signal.Signals,
        code: int) -> None:
    assert main([*DM, "--out", str(tmp_path / "whole")]) == 0
    cut = tmp_path / "cut"
    with monkeypatch.context() as patch:
        _signal_after(patch, 2, sig)
        assert main([*DM, "--out", str(cut)]) == code
    lines = command_lines(capsys)
    prefix = (f"{PROG}: stopped by {sig.name}; the checkpoint of iteration 1 of 3 is kept in {cut}/distill.pt; go on "
              "with: ")
    assert len(lines) == 1 and lines[0].startswith(prefix), lines
    again = shlex.split(lines[0][len(prefix):])
    assert again[:3] == ["python", "-m", "train.condense"] and again[-1] == "--resume"
    assert main(again[3:]) == 0
    assert (cut / "condensed.npz").read_bytes() == (tmp_path / "whole" / "condensed.npz").read_bytes()


def test_a_stop_before_the_first_checkpoint_says_nothing_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Checkpoint, "restore", lambda *a: os.kill(os.getpid(), signal.SIGINT))
    argv = [*DM, "--out", str(tmp_path)]
    assert main(argv) == 130
    assert command_lines(capsys) == [f"{PROG}: stopped by SIGINT; its first iteration had not ended: nothing is kept; "
                                     f"go on with: {shlex.join(['python', '-m', 'train.condense', *argv])}"]


def test_a_stopped_study_unit_goes_on_from_its_checkpoint_and_says_where_it_is(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = Plan(points=16, low_points=(8,), part_points=16, cpcs=(1,), iterations=3, distills=1, runs=1,
                recipe=TrainSpec(steps=1), size=3)
    unit = next(u for u in units(plan, 6) if u.method == "gm" and u.init == "noise")
    study.run_unit(plan, unit, tmp_path / "whole", CPU, "Table 6, unit 1 of 4")
    save, restore = Checkpoint.save_if_due, Checkpoint.restore

    def save_then_stop(self: Checkpoint, iteration: int, *rest: object) -> None:
        save(self, iteration, *rest)
        if iteration == 2:
            raise Interrupted
    with monkeypatch.context() as patch:
        patch.setattr(Checkpoint, "save_if_due", save_then_stop)
        with pytest.raises(Interrupted):
            study.run_unit(plan, unit, tmp_path / "cut", CPU, "Table 6, unit 1 of 4")
    starts: list[int] = []

    def recorded(self: Checkpoint, *args: object) -> tuple[int, list[float]]:
        start, history = restore(self, *args)
        starts.append(start)
        return start, history
    monkeypatch.setattr(Checkpoint, "restore", recorded)
    capsys.readouterr()
    study.run_unit(plan, unit, tmp_path / "cut", CPU, "Table 6, unit 1 of 4")
    assert starts == [1]  # went on from the checkpoint of iteration 1
    assert f"study: Table 6, unit 1 of 4: {unit.name}" in capsys.readouterr().err
    folder = Path("units") / unit.name
    assert (tmp_path / "cut" / folder / "condensed.npz").read_bytes() == \
        (tmp_path / "whole" / folder / "condensed.npz").read_bytes()


def test_a_resumed_study_unit_counts_the_seconds_of_every_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    """condense_seconds of a unit stopped and resumed is the first segment's seconds, as its
    checkpoint saved them, plus the second's: set to 1,000 in the checkpoint, the result holds
    more than 1,000 and less than 1,000 plus the second segment's wall time (before: its own)."""
    plan = Plan(points=16, low_points=(8,), part_points=16, cpcs=(1,), iterations=3, distills=1, runs=1,
                recipe=TrainSpec(steps=1), size=3)
    unit = next(u for u in units(plan, 1) if u.method == "gm" and u.setting == "aligned")
    stop_run_after_second_checkpoint(lambda: study.run_unit(plan, unit, tmp_path, CPU, "Table 1, unit 1 of 1"),
                                     monkeypatch)
    folder = tmp_path / "units" / unit.set_name
    saved = torch.load(folder / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    assert saved["iteration"] == 2 and 0 < saved["seconds"] < 1000
    saved["seconds"] = 1000.0
    torch.save(saved, folder / CHECKPOINT_NAME)
    start = time.perf_counter()
    study.run_unit(plan, unit, tmp_path, CPU, "Table 1, unit 1 of 1")
    wall = time.perf_counter() - start
    seconds = json.loads((tmp_path / "units" / unit.name / "result.json").read_text())["condense_seconds"]
    assert 1000 < seconds < 1000 + wall
    assert saved_iteration(folder / CHECKPOINT_NAME) == 3  # the last iteration is saved: the count is whole


def test_a_checkpoint_saves_its_last_iteration_and_one_from_before_the_count_says_unknown(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_NAME
    weight = torch.nn.Parameter(torch.zeros(2))
    adam, draws = torch.optim.Adam([weight]), torch.Generator().manual_seed(0)
    checkpoint = Checkpoint(path, "run", every=10, resume=True, last=3)
    for iteration in (1, 2, 3):
        checkpoint.save_if_due(iteration, [adam], draws, [0.0] * iteration)
        assert saved_iteration(path) == (1 if iteration == 2 else iteration)
    assert saved_seconds(path) is not None and saved_seconds(path) >= 0
    old = torch.load(path, map_location="cpu", weights_only=True)
    del old["seconds"]  # a checkpoint written before the seconds were saved
    torch.save(old, path)
    resumed = Checkpoint(path, "run", every=10, resume=True, last=4)
    assert resumed.restore([adam], draws) == (3, [0.0] * 3)
    resumed.save_if_due(4, [adam], draws, [0.0] * 4)
    assert saved_iteration(path) == 4 and saved_seconds(path) is None  # unknown, not this segment's alone


# ----------------------------------------------------------------------------- help and forms
def test_an_unknown_form_is_named_with_the_nearest_one(capsys: pytest.CaptureFixture) -> None:
    assert main(["evalute", "--from", "x"]) == 2
    assert refusal(capsys).startswith(f"{PROG}: error: unknown form 'evalute'; did you mean 'evaluate'? (the forms: "
                                      "evaluate, table, sample, show, study;")


@pytest.mark.parametrize("form, words", [
    ([], ["modelnet40, scanobjectnn", "lidar_objects", "aligned, rotated, rotated_raw", "auto (CUDA when torch sees",
          "--overwrite"]),
    (["evaluate"], ["modelnet40, scanobjectnn", "pointnet, pointnet2, dgcnn", "ptv3_student", "rotated_raw",
                    "a run's --out folder or its condensed.npz"]),
    (["table"], ["clouds per class, a row each (default 1 10 50)", "evaluation runs of each set (default 5)",
                 "auto (CUDA when torch sees"]),
    (["study"], ["--preset {paper,cpu}", "modelnet40, scanobjectnn", "auto (CUDA when torch sees"]),
    (["sample"], ["a run's --out folder or its condensed.npz", "--overwrite"]),
    (["show"], ["a run's --out folder or its condensed.npz"]),
])
def test_each_forms_help_lists_every_accepted_name(capsys: pytest.CaptureFixture, form: list[str],
                                                   words: list[str]) -> None:
    with pytest.raises(SystemExit):
        main([*form, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for word in words:
        assert word in out


def test_the_study_asks_for_its_preset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["study", "--out", str(tmp_path)])
    assert "the following arguments are required: --preset" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- study folders
def test_a_study_into_a_folder_of_another_plans_study_is_refused_before_any_unit(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = dataclasses.asdict(study.PRESETS["cpu"])
    (tmp_path / "study.json").write_text(json.dumps({"plan": cpu, "results": {}}))
    monkeypatch.setattr(study, "run_unit", lambda *a, **k: pytest.fail("a unit ran"))
    argv = ["study", "--preset", "cpu", "--tables", "4", "--out", str(tmp_path), "--device", "cpu"]
    assert main([*argv, "--dataset", "lidar_objects"]) == 2
    assert refusal(capsys) == (f"{PROG}: error: --out {tmp_path} holds a study of dataset 'shapes' ({tmp_path}/"
                               "study.json), this one's is 'lidar_objects': its finished units would be read as this "
                               "study's; study into another --out")
    assert main(["study", "--preset", "paper", *argv[3:]]) == 2  # another budget: the iterations differ
    assert "holds a study of iterations 40 " in refusal(capsys)
    for field, value in (("size", 7), ("runs", 3)):
        with pytest.raises(ValueError, match=f"holds a study of {field} "):
            study.check_plan(dataclasses.replace(study.PRESETS["cpu"], **{field: value}), tmp_path)


@pytest.mark.parametrize("kept", sorted(Path(__file__).parents[1].glob("benchmarks/studies/condense-cpu*/study.json")))
def test_a_study_goes_on_in_its_folder_and_an_older_plan_is_compared_on_its_own_fields(kept: Path,
                                                                                       tmp_path: Path) -> None:
    plan = json.loads(kept.read_text())["plan"]
    (tmp_path / "study.json").write_text(json.dumps({"plan": plan}))
    study.check_plan(study.plan_of(plan), tmp_path)  # the same plan, as read back: goes on
    older = {k: v for k, v in plan.items() if k not in ("iterations", "size")}  # fields a later plan added
    (tmp_path / "study.json").write_text(json.dumps({"plan": older}))
    study.check_plan(dataclasses.replace(study.plan_of(plan), iterations=None, size=9), tmp_path)
    study.check_plan(study.PRESETS["cpu"], tmp_path / "new")  # no study.json: nothing to compare


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_against_files_of_no_shared_seed_is_refused_before_any_training(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    for seed in range(4):
        assert main([*TINY, "--method", "random", "--cpc", "1", "--seed", str(seed), "--out",
                     str(tmp_path / f"s{seed}")]) == 0
    capsys.readouterr()
    monkeypatch.setattr("train.condense.cli.command.evaluate_runs", lambda *a, **k: pytest.fail("trained"))
    assert main(["evaluate", "--from", str(tmp_path / "s0"), str(tmp_path / "s1"), "--against", str(tmp_path / "s2"),
                 str(tmp_path / "s3"), "--runs", "1", "--steps", "1", "--device", "cpu"]) == 2
    assert refusal(capsys) == (f"{PROG}: error: no common seed: --from [0, 1], --against [2, 3]; a gain is paired by "
                               "seed, so --against must hold draws of some of --from's seeds")
