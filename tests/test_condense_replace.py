"""Nothing a user made is lost to ``python -m train.condense`` (decision 99): an ``--overwrite`` run
replaces on success (its files staged in ``<out>/.replacing/`` and put in place once its set is
written), so a late refusal, an exception, a stop, kill -9 or a full disk leaves the previous set
byte-identical; every check that can be made before work is made first; a file that is not the
form's own kind of output is not replaced unasked; resources that run out end in one line; an
option or a selection that cannot act is refused."""
from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train.condense.cli.out_folder as out_folder
from train.condense.cli.command import main
from train.condense.files.condensed_file import read_condensed
from train.condense.files.distill_checkpoint import Checkpoint
from train.runtime.files import NoRoomError, atomic_write
from train.runtime.memory import memory_refused
from tests.full_disk import no_room_at

PROG = "python -m train.condense"
TINY = ["--dataset", "shapes", "--size", "3", "--points", "16", "--device", "cpu"]
STEPS = ["--steps", "2"]  # the feature network's recipe (herding, kcenter)
DM = [*TINY, "--method", "dm", "--cpc", "1", "--iterations", "3"]
REPO = Path(__file__).resolve().parents[1]


def refusal(capsys: pytest.CaptureFixture, prefix: str = f"{PROG}: error: ") -> str:
    """The one line a refusal printed (progress bars left out)."""
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith(PROG)]
    assert len(lines) == 1 and lines[0].startswith(prefix), lines
    return lines[0]


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the lock file left out), by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != out_folder.LOCK_NAME}


@pytest.fixture(scope="module")
def dd3d_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished dd3d run folder: its set, checkpoint and generator (copied by each test that changes it)."""
    run = tmp_path_factory.mktemp("dd3d") / "run"
    assert main([*TINY, "--method", "dd3d", "--cpc", "1", "--iterations", "1", "--out", str(run)]) == 0
    assert {"condensed.npz", "distill.pt", "generator.pt"} <= set(files(run))
    return run


def copied(run: Path, to: Path) -> Path:
    to.mkdir(parents=True)
    for name, data in files(run).items():
        (to / name).write_bytes(data)
    return to


# ----------------------------------------------------------------------------- replace on success
def test_overwrite_puts_the_new_runs_files_in_place_only_at_the_end_and_removes_the_old_runs_others(
        dd3d_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    out = copied(dd3d_run, tmp_path / "run")
    before = files(out)
    seen: list[dict[str, bytes]] = []
    save = Checkpoint.save_if_due

    def save_and_look(self: Checkpoint, iteration: int, *rest: object) -> None:
        save(self, iteration, *rest)
        seen.append({k: v for k, v in files(out).items() if not k.startswith(out_folder.STAGING_NAME)})
    monkeypatch.setattr(Checkpoint, "save_if_due", save_and_look)
    assert main([*DM, "--out", str(out), "--overwrite"]) == 0
    assert seen and all(s == before for s in seen)  # while the new run ran, the folder's own files stayed as they were
    assert read_condensed(out / "condensed.npz").provenance["method"] == "dm"
    assert not (out / "generator.pt").exists()  # the old run's generator does not stay beside a dm set
    assert (out / "distill.pt").read_bytes() != before["distill.pt"]  # dm's own checkpoint
    assert not (out / out_folder.STAGING_NAME).exists()
    assert f"-> {out}/condensed.npz" in capsys.readouterr().out


class Boom(Exception):
    """An error no refusal expects (a bug, a library's failure)."""


@pytest.mark.parametrize("where", ["feature network", "matching step", "set write"])
def test_an_overwrite_run_that_fails_late_leaves_the_previous_folder_byte_identical(
        dd3d_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    out = copied(dd3d_run, tmp_path / "run")
    before = files(out)

    def fail(*args: object, **kwargs: object) -> None:
        raise Boom(where)
    target = {"feature network": "train.condense.methods.feature_network",
              "matching step": "train.condense.methods.explicit.match_distributions",
              "set write": "train.condense.cli.command.write_condensed"}[where]
    monkeypatch.setattr(target, fail)
    method = ["--method", "herding", "--cpc", "1", *STEPS] if where == "feature network" else DM[len(TINY):]
    with pytest.raises(Boom):
        main([*TINY, *method, "--out", str(out), "--overwrite"])
    assert {k: v for k, v in files(out).items() if not k.startswith(out_folder.STAGING_NAME)} == before


@pytest.mark.parametrize("name", ["condensed.npz", "distill.pt"])
def test_a_full_disk_ends_in_one_line_naming_the_folder_and_keeps_the_previous_set(
        dd3d_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        name: str) -> None:
    out = copied(dd3d_run, tmp_path / "run")
    before = files(out)
    capsys.readouterr()
    with monkeypatch.context() as patch:
        no_room_at(patch, name)
        assert main([*DM, "--out", str(out), "--overwrite"]) == 2
    line = refusal(capsys)
    staged = out / out_folder.STAGING_NAME
    assert f"error: no room to write " in line and f" in {staged} (No space left on device; " in line
    assert "free at least that much there, or write elsewhere" in line
    assert {k: v for k, v in files(out).items() if not k.startswith(out_folder.STAGING_NAME)} == before
    assert not list(staged.glob("*.tmp"))  # no half-written file left behind
    if name == "condensed.npz":  # the checkpoint was written: the line names the command that goes on
        again = shlex.split(line.split("then go on with: ")[1])
        # the last iteration is saved, so going on only writes the set
        assert again[-2:] == ["--overwrite", "--resume"] and f"iteration 3 of 3 is kept in {staged}/distill.pt" in line
        assert main(again[3:]) == 0
        assert read_condensed(out / "condensed.npz").provenance["method"] == "dm"
        assert not staged.exists() and not (out / "generator.pt").exists()


def test_a_stopped_overwrite_run_keeps_the_previous_set_and_goes_on_with_overwrite_resume(
        dd3d_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main([*DM, "--out", str(tmp_path / "whole")]) == 0
    out = copied(dd3d_run, tmp_path / "run")
    before = files(out)
    save = Checkpoint.save_if_due

    def save_then_signal(self: Checkpoint, iteration: int, *rest: object) -> None:
        save(self, iteration, *rest)
        if iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(Checkpoint, "save_if_due", save_then_signal)
        assert main([*DM, "--out", str(out), "--overwrite"]) == 130
    line = refusal(capsys, f"{PROG}: stopped by SIGINT; ")
    assert (f"the checkpoint of iteration 1 of 3 is kept in {out}/{out_folder.STAGING_NAME}/distill.pt (the set "
            "already in --out is unchanged); go on with: ") in line
    assert {k: v for k, v in files(out).items() if not k.startswith(out_folder.STAGING_NAME)} == before
    assert main([*DM, "--out", str(out)]) == 2  # neither --overwrite nor --resume: refused, naming both
    assert "holds a stopped --overwrite run" in refusal(capsys) and files(out) == files(out)
    again = shlex.split(line.split("go on with: ")[1])
    assert again[-2:] == ["--overwrite", "--resume"]
    assert main(again[3:]) == 0
    assert (out / "condensed.npz").read_bytes() == (tmp_path / "whole" / "condensed.npz").read_bytes()
    assert not (out / "generator.pt").exists() and not (out / out_folder.STAGING_NAME).exists()
    assert main([*DM, "--out", str(out), "--overwrite", "--resume"]) == 2  # nothing staged any more
    assert "no stopped --overwrite run to resume from" in refusal(capsys)


class Killed(Exception):
    """The process died here (kill -9 while the files were being put in place)."""


@pytest.mark.parametrize("method, renames, made", [
    ("herding", 0, ["condensed.npz", "feature_net.pt"]), ("herding", 1, ["condensed.npz", "feature_net.pt"]),
    ("dd3d", 0, ["condensed.npz", "distill.pt", "generator.pt"]), ("dd3d", 1, ["condensed.npz", "distill.pt", "generator.pt"]),
    ("dd3d", 2, ["condensed.npz", "distill.pt", "generator.pt"])])
def test_a_replacement_killed_while_putting_files_in_place_is_finished_by_the_next_run(
        dd3d_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, renames: int,
        made: list[str]) -> None:
    out = copied(dd3d_run, tmp_path / "run")
    old_set = (out / "condensed.npz").read_bytes()
    real, done = os.replace, [0]

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(src).parent.name == out_folder.STAGING_NAME and not str(src).endswith(".tmp"):
            if done[0] == renames:
                raise Killed
            done[0] += 1
        real(src, dst)
    with monkeypatch.context() as patch:
        patch.setattr(out_folder.os, "replace", replace)
        with pytest.raises(Killed):
            options = ["--iterations", "1", "--seed", "3"] if method == "dd3d" else STEPS  # seed 3: not the old set's
            main([*TINY, "--method", method, "--cpc", "1", *options, "--out", str(out), "--overwrite"])
    assert (out / "condensed.npz").read_bytes() == old_set  # the set is renamed last: until then the old one is whole
    assert main([*TINY, "--method", "random", "--cpc", "1", "--out", str(out)]) == 2  # the next run finishes it first
    assert read_condensed(out / "condensed.npz").provenance["seed"] == (3 if method == "dd3d" else 0)
    assert read_condensed(out / "condensed.npz").provenance["method"] == method
    assert sorted(files(out)) == made


def test_kill_9_during_an_overwrite_run_leaves_the_previous_set_and_a_run_that_goes_on(
        dd3d_run: Path, tmp_path: Path) -> None:
    out = copied(dd3d_run, tmp_path / "run")
    before = files(out)
    staged = out / out_folder.STAGING_NAME / "distill.pt"
    argv = [*TINY, "--method", "dm", "--cpc", "1", "--iterations", "400", "--out", str(out), "--overwrite"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "train.condense", *argv], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not staged.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert staged.exists(), "the run wrote no checkpoint"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert {k: v for k, v in files(out).items() if not k.startswith(out_folder.STAGING_NAME)} == before
    stray = out / "distill.pt.0123456789abcdef.tmp"  # what a write cut by kill -9 leaves (atomic_write's name)
    stray.write_bytes(b"half a checkpoint")
    argv[argv.index("400")] = "2"  # the same run would take minutes; a shorter one shows the folder is free
    assert main([*argv[:-1], "--overwrite"]) == 0
    assert read_condensed(out / "condensed.npz").provenance["method"] == "dm"
    assert not stray.exists() and not list(out.rglob("*.tmp"))  # the next run into the folder cleared it


# ----------------------------------------------------------------------------- checks before work
@pytest.mark.parametrize("options, words", [
    (["--method", "gm", "--topo", "shape", "--topo-weight", "1e39"], "--topo-weight 1e+39 is beyond float32's range"),
    (["--method", "gm", "--task", "parts", "--init", "noise"], "init 'noise' gives no part labels"),
    (["--method", "tm", "--procs", "2"], "tm runs in one process"),
    (["--method", "gm", "--procs", "14"], "14 processes share 13 classes"),
    (["--method", "gm", "--topo", "feature", "--topo-weight", "10"], "--topo feature compares the diagram of a class's "
                                                                     "1 synthetic clouds' features"),
    (["--method", "dd3d", "--topo", "feature_equal", "--topo-weight", "10", "--cpc", "2"],
     "below 3 a class that diagram is the same whatever the clouds (one has no pair, two normalised lie 2 apart)"),
    (["--method", "gm", "--steps", "5"], "--steps sets how the feature network of herding and kcenter is trained; gm "
                                         "trains none, so it would do nothing: leave it out"),
    (["--method", "random", "--recipe", "paper"], "--recipe sets how the feature network"),
])
def test_late_refusals_come_before_any_work_and_touch_nothing(dd3d_run: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch, options: list[str],
                                                              words: str) -> None:
    out = copied(dd3d_run, tmp_path / "run")
    before = files(out)
    monkeypatch.setattr("train.condense.methods.feature_network", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr("train.runtime.distributed.spawn_local", lambda *a, **k: pytest.fail("ranks started"))
    capsys.readouterr()
    assert main([*TINY, "--cpc", "1", *options, "--out", str(out), "--overwrite"]) == 2
    assert words in refusal(capsys)
    assert files(out) == before and not (out / out_folder.STAGING_NAME).exists()


def test_a_mistyped_init_is_refused_by_the_parser(dd3d_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
                                                  ) -> None:
    out = copied(dd3d_run, tmp_path / "run")
    before = files(out)
    with pytest.raises(SystemExit) as stop:
        main([*DM, "--init", "nosie", "--out", str(out), "--overwrite"])
    assert stop.value.code == 2 and "argument --init: invalid choice: 'nosie'" in capsys.readouterr().err
    assert files(out) == before


def test_a_damaged_feature_cache_is_refused_before_work_and_replaced_by_an_overwrite_run(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "feature_net.pt").write_bytes(b"damaged")
    with monkeypatch.context() as patch:
        patch.setattr("train.condense.methods.feature_network", lambda *a, **k: pytest.fail("trained"))
        assert main([*TINY, "--method", "herding", "--cpc", "1", *STEPS, "--out", str(out)]) == 2
    assert refusal(capsys).endswith(f"{out}/feature_net.pt: not a readable feature cache (UnpicklingError); delete it")
    assert main([*TINY, "--method", "herding", "--cpc", "1", *STEPS, "--out", str(out), "--overwrite"]) == 0
    assert (out / "feature_net.pt").read_bytes() != b"damaged"
    cache = (out / "feature_net.pt").read_bytes()
    assert main([*TINY, "--method", "kcenter", "--cpc", "1", *STEPS, "--out", str(out), "--overwrite"]) == 0
    assert (out / "feature_net.pt").read_bytes() == cache  # a readable cache is reused by an --overwrite run


# ----------------------------------------------------------------------------- files of other kinds
def test_evaluate_and_show_replace_only_their_own_kind_of_file_unless_overwrite(
        dd3d_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    out = copied(dd3d_run, tmp_path / "run")
    before = files(out)
    monkeypatch.setattr("train.condense.cli.command.evaluate_runs", lambda *a, **k: pytest.fail("trained"))
    capsys.readouterr()
    assert main(["evaluate", "--from", str(out), "--out", str(out / "condensed.npz"), "--device", "cpu"]) == 2
    assert refusal(capsys).endswith(f"--out {out}/condensed.npz exists and is not a scores file of evaluate (JSON): "
                                    "give another file, or --overwrite to replace it")
    (tmp_path / "notes.png").write_text("my notes")
    assert main(["show", "--from", str(out), "--out", str(tmp_path / "notes.png")]) == 2
    assert "exists and is not a PNG picture" in refusal(capsys, f"{PROG} show: error: ")
    assert files(out) == before and (tmp_path / "notes.png").read_text() == "my notes"
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"runs": [], "recipe": {}, "split": "test"}))
    monkeypatch.setattr("train.condense.cli.command.evaluate_runs", lambda *a, **k: [{"oa": 0.5, "macc": 0.5}])
    assert main(["evaluate", "--from", str(out), "--out", str(scores), "--device", "cpu", "--runs", "1"]) == 0
    assert json.loads(scores.read_text())["runs"] == [{"oa": 0.5, "macc": 0.5}]  # its own kind: replaced


# ----------------------------------------------------------------------------- resources
def test_a_draw_too_large_for_memory_is_refused_in_one_line_before_it_is_made(
        dd3d_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["sample", "--from", str(dd3d_run), "--points", str(10**10), "--out", str(tmp_path / "s.npz")]) == 2
    line = refusal(capsys, f"{PROG} sample: error: drawing 13 clouds of 10000000000 points needs ")
    assert line.endswith("available: ask for fewer --points") and not (tmp_path / "s.npz").exists()


def test_a_generated_set_too_large_for_memory_is_refused_in_one_line_before_any_cloud(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("train.data.objects.shapes.make_shape", lambda *a: pytest.fail("a cloud was made"))
    argv = [*TINY, "--method", "random", "--cpc", "1", "--out", str(tmp_path / "o")]
    argv[argv.index("--size") + 1], argv[argv.index("--points") + 1] = "100000", "1000000"
    assert main(argv) == 2
    assert refusal(capsys).startswith(f"{PROG}: error: the generated shapes (100000 clouds a class of 1000000 points) "
                                      "needs 14,528.63 GiB of memory and this machine has ")
    assert not (tmp_path / "o" / "condensed.npz").exists()


def test_an_allocation_that_fails_anyway_ends_in_one_line() -> None:
    with pytest.raises(MemoryError, match=r"^evaluate ran out of memory \(DefaultCPUAllocator: can't allocate memory: "
                                          r"you tried to allocate 99 bytes\): give less$"):
        with memory_refused("evaluate", "give less"):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 bytes\nmore")
    with pytest.raises(RuntimeError, match="^another error$"), memory_refused("evaluate", "give less"):
        raise RuntimeError("another error")


def test_atomic_write_on_a_full_disk_says_in_one_line_what_is_needed_and_keeps_the_old_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "kept.json"
    target.write_text("old")
    no_room_at(monkeypatch, "kept.json")
    with pytest.raises(NoRoomError) as failure:
        atomic_write(b"x" * 2_000_000, target)
    assert str(failure.value).startswith(f"no room to write 2.0 MB in {tmp_path} (No space left on device; ")
    assert failure.value.errno == errno.ENOSPC and "\n" not in str(failure.value)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["kept.json"]


# ----------------------------------------------------------------------------- selections that take nothing
def test_a_study_selection_that_takes_no_unit_is_refused_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["study", "--preset", "cpu", "--tables", "4", "--terms", "shape", "--out", str(tmp_path / "s"),
            "--device", "cpu"]
    assert main(argv) == 2
    assert refusal(capsys).endswith("the selection takes no unit of Table(s) 4 under this plan (--terms shape): check "
                                    "--methods, --settings, --terms, --topo-weights, --cpcs and --tables "
                                    "(docs/condense.md lists which table has which units)")
    assert not (tmp_path / "s" / "study.json").exists()


@pytest.mark.parametrize("options, words", [
    (["--tables", "1", "--topo-weights", "1000"], "--topo-weights selects among the persistence term's units; Table(s) "
                                                  "1 have none (the term's tables: 7, 8, 9): leave it out"),
    (["--tables", "1", "--data-root", "DATA"], "--data-root is the download of --dataset; the preset's data set "
                                               "(shapes) is generated and reads none"),
])
def test_a_study_option_that_cannot_act_is_refused_before_any_unit(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, options: list[str],
        words: str) -> None:
    monkeypatch.setattr("train.condense.studies.study.run_unit", lambda *a, **k: pytest.fail("a unit ran"))
    assert main(["study", "--preset", "cpu", *options, "--out", str(tmp_path / "s"), "--device", "cpu"]) == 2
    assert words in refusal(capsys)
    assert not (tmp_path / "s" / "study.json").exists()
