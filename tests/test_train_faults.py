"""Faults a long run meets, injected: the process killed by SIGKILL, during a
checkpoint write included; an unreadable latest checkpoint; a full disk while writing one; a scan
file that turns bad in the middle of an epoch; and nothing written outside ``--out``.

The kill tests run ``python -m train.run`` through ``tests/killable_run.py`` in subprocesses (a real
SIGKILL: no cleanup runs) at the tiny budget of ``test_train_support``, in deterministic mode, and
compare the resumed run with an uninterrupted one: final weights bit for bit, the evaluation
report, and the training log row for row.
"""
from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import train.engine.loop
from test_train_support import TINY_MODEL, tiny_config, tiny_data_folder
from train.runtime.checkpoint import (CheckpointError, CheckpointWriteError, atomic_save, atomic_write, load_checkpoint, load_latest,
                              save_checkpoint)
from train.data.validation import BadScanError
from train.runtime.distributed import DistInfo
from train.engine.loop import FINAL, LAST, PREV, UNREADABLE
from train.runner.stages import run

ROOT = Path(__file__).resolve().parents[1]
ENTRY = Path(__file__).with_name("killable_run.py")
CPU = DistInfo(0, 1, 0, torch.device("cpu"))
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

# 3 training scans, batch 2: 2 steps per epoch, 3 epochs, a checkpoint after every step. Drop path
# and a shuffled serialization order make the result depend on every restored random state.
RUN = dict(stage="student", epochs=3, iters_per_epoch=None, checkpoint_every=1,
           student_overrides={**TINY_MODEL, "drop_path": 0.3, "deterministic": False})
STEPS = 6


# ---------------------------------------------------------------- helpers


def _config_file(base: Path, out: Path, **values: Any) -> Path:
    cfg = tiny_config(base, out=str(out), data_root=str(base / "data"), **{**RUN, **values})
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KILL_AT"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def _start(config: Path, *args: str, kill_at: str | None = None, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    env = env or _child_env()
    if kill_at:
        env["KILL_AT"] = kill_at
    return subprocess.Popen([sys.executable, str(ENTRY), "--config", str(config), *args], env=env,
                            cwd=cwd or ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _step(path: Path) -> int:
    return int(load_checkpoint(path)["step"])


def _report(out: Path) -> dict[str, Any]:
    """results.json without the timing entries."""
    results = json.loads((out / "results.json").read_text())["results"]
    return {label: {k: v for k, v in r.items() if k != "latency_ms"} for label, r in results.items()}


def _assert_same_run(whole: Path, resumed: Path, stage: str = "student") -> None:
    a, b = load_checkpoint(whole / stage / FINAL)["model"], load_checkpoint(resumed / stage / FINAL)["model"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resume"
    assert _report(whole) == _report(resumed)
    assert (whole / stage / "train_log.csv").read_text() == (resumed / stage / "train_log.csv").read_text()


def _assert_finished_once(stage_dir: Path) -> None:
    """The stage ended, and its log holds every step once (the rows after the checkpoint it resumed
    from were dropped and logged again). Bitwise equality with an uninterrupted run is checked
    across processes only: two identical runs in one pytest process have differed in the fifth
    significant digit after several runs there (not seen in fresh processes)."""
    assert _step(stage_dir / FINAL) == STEPS
    with (stage_dir / "train_log.csv").open() as fh:
        assert [int(line.split(",")[0]) for line in fh.readlines()[1:]] == list(range(1, STEPS + 1))


def _kill_when_logged(proc: subprocess.Popen, stage_dir: Path, step: int) -> None:
    """SIGKILL ``proc`` as soon as its training log shows ``step`` (or let it finish)."""
    log = stage_dir / "train_log.csv"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        rows = log.read_text().splitlines()[1:] if log.is_file() else []
        if any(r.split(",")[0] == str(step) for r in rows):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    rc, err = _finish(proc)
    assert rc in (0, -signal.SIGKILL), err


def _temps(stage_dir: Path) -> list[Path]:
    return sorted(stage_dir.glob(LAST + ".*.tmp"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the tiny synthetic set (generated once for the module)."""
    return tiny_data_folder(tmp_path_factory, "faults")


@pytest.fixture(scope="module")
def whole_cli(base: Path) -> Path:
    """The uninterrupted run, through the same subprocess entry as the killed ones."""
    out = base / "whole_cli"
    rc, err = _finish(_start(_config_file(base, out)))
    assert rc == 0, err
    return out


# ---------------------------------------------------------------- (a) SIGKILL, then --resume


def test_killed_at_any_point_then_resumed_equals_the_uninterrupted_run(base: Path, whole_cli: Path) -> None:
    out = base / "killed"
    config = _config_file(base, out)
    stage_dir = out / "student"

    # 1. killed inside the write of the step-3 checkpoint, half of it on disk
    rc, err = _finish(_start(config, kill_at="write:3"))
    assert rc == -signal.SIGKILL, err
    assert (_step(stage_dir / LAST), _step(stage_dir / PREV)) == (2, 1)
    assert len(_temps(stage_dir)) == 1  # the half-written temporary file, never under the real name
    assert not (stage_dir / FINAL).exists()

    # 2. resumed at step 2 (the stray temporary file deleted), killed at the step-4 save between
    #    renaming the step-3 checkpoint to PREV and putting the new one in its place
    rc, err = _finish(_start(config, "--resume", kill_at="rotate:2"))
    assert rc == -signal.SIGKILL, err
    assert not (stage_dir / LAST).exists() and _step(stage_dir / PREV) == 3

    # 3. resumed from PREV at step 3, killed by the parent at a moment it does not choose: as soon
    #    as it sees step 5 in the training log (the child is then in step 6 or writing a checkpoint)
    _kill_when_logged(_start(config, "--resume"), stage_dir, 5)

    # 4. resumed to the end
    rc, err = _finish(_start(config, "--resume"))
    assert rc == 0, err
    assert _temps(stage_dir) == []
    _assert_same_run(whole_cli, out)


# ---------------------------------------------------------------- (a2) two processes, SIGKILL, then --resume

TWO = dict(procs=2, epochs=2)  # 3 training scans, 1 per process and step: 2 steps per epoch, 4 in all


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_two_process_run(base: Path) -> None:
    """Each rank gets back its own random streams (decision 37): killed inside a checkpoint write
    (rank 0 dies; the launcher stops rank 1 and says so in one line), then killed as a whole by a
    SIGKILL of the launching process at a moment the test does not choose (its ranks die with it),
    then resumed to the end: the same weights, report and log as the uninterrupted run."""
    whole = base / "whole_two"
    rc, err = _finish(_start(_config_file(base, whole, **TWO)))
    assert rc == 0, err
    out = base / "killed_two"
    config = _config_file(base, out, **TWO)
    stage_dir = out / "student"

    rc, err = _finish(_start(config, kill_at="write:2"))  # inside the epoch-end save of step 2
    assert rc == 128 + signal.SIGKILL, err
    assert err.strip().splitlines() == ["train.run: error: rank 0 was killed by SIGKILL; rerun with --resume to "
                                        "continue from its last checkpoint"]
    assert _step(stage_dir / LAST) == 1 and len(_temps(stage_dir)) == 1
    assert len(load_checkpoint(stage_dir / LAST)["ranks"]) == 2

    _kill_when_logged(_start(config, "--resume"), stage_dir, 3)

    rc, err = _finish(_start(config, "--resume"))
    assert rc == 0, err
    _assert_same_run(whole, out)


# ---------------------------------------------------------------- (b) unreadable latest checkpoint


def _two_checkpoints(folder: Path) -> tuple[Path, Path]:
    model = torch.nn.Linear(40, 30)
    last, prev = folder / LAST, folder / PREV
    for step in (1, 2):
        with torch.no_grad():
            model.weight.fill_(step)
        save_checkpoint(last, model, None, None, None, step, 0, previous=prev)
    return last, prev


def _flip_a_weight_byte(path: Path) -> None:
    """Change one byte inside the stored weight tensor: the archive and the pickle stay valid."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)  # the 30 x 40 weight
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [_truncate, _flip_a_weight_byte], ids=["truncated", "flipped byte"])
def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any
) -> None:
    last, prev = _two_checkpoints(tmp_path)
    assert load_latest([last, prev])[1] == last
    damage(last)
    with pytest.raises(CheckpointError, match=LAST):
        load_checkpoint(last)
    with caplog.at_level(logging.WARNING, logger="train.runtime.checkpoint"):
        state, used = load_latest([last, prev])
    assert used == prev and state["step"] == 1
    assert str(last) in caplog.text and str(prev) in caplog.text


def test_no_readable_checkpoint_stops_with_an_error_naming_every_file(tmp_path: Path) -> None:
    last, prev = _two_checkpoints(tmp_path)
    _truncate(last)
    _flip_a_weight_byte(prev)
    with pytest.raises(CheckpointError, match="no readable checkpoint") as err:
        load_latest([last, prev])
    assert str(last) in str(err.value) and str(prev) in str(err.value)
    assert load_latest([tmp_path / "absent.pt"]) is None  # nothing saved yet: a fresh start


class _Killed(Exception):
    pass


def _after_save(monkeypatch: pytest.MonkeyPatch, at_step: int, action: Any) -> None:
    """Call ``action()`` right after the training loop wrote its full checkpoint of ``at_step``."""
    real = train.engine.loop.save_checkpoint

    def save_then_act(path, model, optimizer, scheduler, scaler, step, *rest):  # type: ignore[no-untyped-def]
        real(path, model, optimizer, scheduler, scaler, step, *rest)
        if step == at_step and optimizer is not None:
            action()

    monkeypatch.setattr(train.engine.loop, "save_checkpoint", save_then_act)


def _stop() -> None:
    raise _Killed


def test_a_resume_with_a_truncated_latest_checkpoint_continues_from_the_previous_one(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config(base, out=str(tmp_path / "out"), data_root=str(base / "data"), **RUN)
    _after_save(monkeypatch, 4, _stop)
    with pytest.raises(_Killed):
        run(cfg, CPU)
    monkeypatch.undo()
    stage_dir = tmp_path / "out" / "student"
    _truncate(stage_dir / LAST)  # the step-4 checkpoint
    with caplog.at_level(logging.WARNING):
        run(tiny_config(base, out=str(tmp_path / "out"), data_root=str(base / "data"), resume=True, **RUN), CPU)
    assert f"resuming from {stage_dir / PREV} instead: {stage_dir / LAST} is truncated or corrupt" in caplog.text
    assert (stage_dir / UNREADABLE).exists()  # kept aside, not demoted to PREV by the next save
    _assert_finished_once(stage_dir)


# ---------------------------------------------------------------- (c) full disk


class _FullDisk(io.FileIO):
    """A file on a disk that fills up: the first write stores half of its bytes, then fails."""

    def write(self, data):  # type: ignore[no-untyped-def]
        data = bytes(data)
        super().write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_writing_a_checkpoint_is_a_clear_error_and_keeps_the_previous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "c.pt"
    atomic_save({"model": {"w": torch.ones(3)}}, target)
    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: _FullDisk(fd, mode.replace("b", "")))
    with pytest.raises(CheckpointWriteError, match=f"could not write checkpoint {target}: No space left on device"):
        atomic_save({"model": {"w": torch.zeros(3)}}, target)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(target)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # the partial temporary file is gone


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomically_written_files_get_the_permissions_the_umask_gives(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        atomic_write(b"labels", tmp_path / "scan.npy")
        atomic_save({"model": {"w": torch.ones(1)}}, tmp_path / "model_final.pt")
    finally:
        os.umask(previous)
    for name in ("scan.npy", "model_final.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_a_run_whose_disk_fills_stops_with_a_clear_error_and_resumes_from_its_last_checkpoint(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    stage_dir = out / "student"
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        full = (stage_dir / LAST).exists() and _step(stage_dir / LAST) == 2  # the step-3 save
        return _FullDisk(fd, mode.replace("b", "")) if full else real_fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(CheckpointWriteError) as err:
        run(tiny_config(base, out=str(out), data_root=str(base / "data"), **RUN), CPU)
    monkeypatch.undo()
    message = str(err.value)
    assert str(stage_dir / LAST) in message and "No space left on device" in message and "--resume" in message
    assert err.value.errno == errno.ENOSPC
    assert (_step(stage_dir / LAST), _step(stage_dir / PREV)) == (2, 1) and _temps(stage_dir) == []
    run(tiny_config(base, out=str(out), data_root=str(base / "data"), resume=True, **RUN), CPU)
    _assert_finished_once(stage_dir)


# ---------------------------------------------------------------- (d) a scan turns bad mid-epoch


def _training_frames(data_root: Path) -> list[Path]:
    return sorted(p for p in (data_root / "training").glob("*/*") if p.is_dir())


def _truncate_coords(frame: Path) -> Path:
    path = frame / "coord.npy"
    _truncate(path)
    return path


def _drop_a_strength(frame: Path) -> Path:
    path = frame / "strength.npy"
    np.save(path, np.load(path)[:-1])
    return path


def _nan_coordinate(frame: Path) -> Path:
    path = frame / "coord.npy"
    coord = np.load(path)
    coord[len(coord) // 2, 1] = np.nan
    np.save(path, coord)
    return frame / "coord.npy"


BREAKERS = [_truncate_coords, _drop_a_strength, _nan_coordinate]


@pytest.mark.parametrize("breaker", BREAKERS, ids=["truncated .npy", "wrong count", "NaN"])
def test_a_scan_that_turns_bad_mid_epoch_stops_the_run_with_an_error_naming_it(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, breaker: Any
) -> None:
    shutil.copytree(base / "data", tmp_path / "data")
    broken: list[Path] = []
    # after the first step every training scan goes bad
    _after_save(monkeypatch, 1, lambda: broken.extend(map(breaker, _training_frames(tmp_path / "data"))))
    cfg = tiny_config(tmp_path, out=str(tmp_path / "out"), data_root=str(tmp_path / "data"), **RUN)
    with pytest.raises(BadScanError, match="--skip-bad-scans") as err:
        run(cfg, CPU)
    assert any(str(p) in str(err.value) for p in broken), str(err.value)
    assert _step(tmp_path / "out" / "student" / LAST) == 1  # the work before it is kept


def test_skip_bad_scans_trains_on_and_counts_each_bad_scan_met(
    base: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(base / "data", tmp_path / "data")
    frames = _training_frames(tmp_path / "data")
    broken = [_truncate_coords(frames[0]), _nan_coordinate(frames[2])]
    # class weights: the label count before training passes over the bad scans too
    cfg = tiny_config(tmp_path, out=str(tmp_path / "out"), data_root=str(tmp_path / "data"),
                      **{**RUN, "skip_bad_scans": True, "class_weights": "inverse-sqrt"})
    with caplog.at_level(logging.WARNING, logger="train.engine.loop"):
        run(cfg, CPU)
    for path in broken:
        assert caplog.text.count(str(path)) == RUN["epochs"]  # met once per epoch, warned each time
    with (tmp_path / "out" / "student" / "train_log.csv").open() as fh:
        header = fh.readline().strip().split(",")
        column = header.index("skipped_scans")
        counts = [float(line.split(",")[column]) for line in fh]
    assert len(counts) == STEPS and sum(counts) == len(broken) * RUN["epochs"]


# ---------------------------------------------------------------- (e) nothing written outside --out


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def _package_files() -> dict[str, tuple[int, int]]:
    """Files of the packages, without the interpreter's and numba's caches of compiled code."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for pkg in ("fast", "reference", "train")
            for p in (ROOT / pkg).rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_a_distillation_run_writes_nothing_outside_its_out_folder(base: Path, tmp_path: Path) -> None:
    teacher_out = base / "teacher"
    if not (teacher_out / "teacher" / FINAL).exists():
        run(tiny_config(base, out=str(teacher_out), data_root=str(base / "data"), stage="teacher"), CPU)
    home, tmp, cwd, out = (tmp_path / name for name in ("home", "tmp", "cwd", "out"))
    for d in (home, tmp, cwd):
        d.mkdir()
    config = _config_file(base, out, stage="distill", teacher_checkpoint=str(teacher_out / "teacher" / FINAL),
                          tensorboard=True, num_workers=1, epochs=1, topo_time_budget=30.0)
    env = {k: v for k, v in _child_env().items()
           if not k.startswith("XDG_") and k not in ("MPLCONFIGDIR", "NUMBA_CACHE_DIR", "TORCH_HOME",
                                                     "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR",
                                                     "PYTHONPYCACHEPREFIX")}
    env.update(HOME=str(home), TMPDIR=str(tmp))
    before, packages = _snapshot(base), _package_files()
    rc, err = _finish(_start(config, cwd=cwd, env=env))
    assert rc == 0, err
    assert (out / "distill" / FINAL).exists() and list((out / "distill" / "tensorboard").iterdir())
    kernels = home / ".cache" / "topodistill"  # the persistence kernels' cache, shared by every copy (decision 41)
    assert kernels.is_dir() and [p for p in home.rglob("*") if kernels not in (p, *p.parents) and p != kernels.parent] == []
    assert [list(d.rglob("*")) for d in (tmp, cwd)] == [[], []]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "home", "out", "out.yaml", "tmp"]
    assert _snapshot(base) == before  # data set and teacher checkpoint untouched
    assert _package_files() == packages
