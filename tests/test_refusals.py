"""Every way an input file can be refused ends in one ``CheckpointError`` line naming the file,
and nothing in the file runs (decision 38).

Crafted files whose unpickling would call ``os.system``, ``subprocess.call``, ``builtins.exec``,
``builtins.eval`` or a function of a module the reader does not have, each of which would create a
marker file: as ``--teacher-checkpoint`` (exit status 2, one line, before the data set is made),
as the latest checkpoint of a ``--resume`` (the warned fallback to the previous one) and as a
Pointcept nuScenes info pickle; a text file and a plain pickle given as a checkpoint.
"""
from __future__ import annotations

import builtins
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from train.runtime.checkpoint import CheckpointError, load_latest, save_checkpoint
from train.data.restricted_pickle import load_data_pickle
from train.run import main

PAYLOADS = ("os.system", "subprocess.call", "builtins.exec", "builtins.eval", "unknown module")


class _Call:
    """Unpickles as ``target(*args)``: what a crafted file does."""

    def __init__(self, target: Callable[..., Any], *args: Any) -> None:
        self.target, self.args = target, args

    def __reduce__(self) -> tuple:
        return self.target, self.args


def _payload(kind: str, marker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> _Call:
    """An object whose unpickling creates ``marker``."""
    if kind == "os.system":
        return _Call(os.system, f"touch {marker}")
    if kind == "subprocess.call":
        return _Call(subprocess.call, ["touch", str(marker)])
    if kind in ("builtins.exec", "builtins.eval"):
        return _Call(getattr(builtins, kind.split(".")[1]), f"open({str(marker)!r}, 'w').close()")
    # a module the pickle names that exists when the file is written, and not when it is read
    (tmp_path / "planted_module.py").write_text("def plant(path):\n    open(path, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import planted_module

    return _Call(planted_module.plant, str(marker))


def _forget_planted_module(tmp_path: Path) -> None:
    (tmp_path / "planted_module.py").unlink(missing_ok=True)
    sys.modules.pop("planted_module", None)


def _crafted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, write: Callable[[Any, Path], None],
             name: str) -> tuple[Path, Path]:
    marker = tmp_path / "code_ran"
    path = tmp_path / name
    write({"model": {"w": torch.ones(2)}, "payload": _payload(kind, marker, tmp_path, monkeypatch)}, path)
    _forget_planted_module(tmp_path)
    return path, marker


def _torch_save(obj: Any, path: Path) -> None:
    torch.save(obj, path)


def _pickle_dump(obj: Any, path: Path) -> None:
    path.write_bytes(pickle.dumps(obj))


def _refused_as_teacher(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The error line of a distillation run given ``path`` as its teacher checkpoint."""
    data = tmp_path / "data"
    code = main(["--dataset", "synthetic", "--stage", "distill", "--teacher-checkpoint", str(path),
                 "--data-root", str(data), "--out", str(tmp_path / "out"), "--procs", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and not data.exists()  # refused before the synthetic set is generated
    (line,) = err.splitlines()
    assert line.startswith(f"train.run: error: {path} ") and "weights_only" not in line
    return line


@pytest.mark.parametrize("kind", PAYLOADS)
def test_a_crafted_teacher_checkpoint_is_one_line_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path, marker = _crafted(tmp_path, monkeypatch, kind, _torch_save, "teacher.pt")
    line = _refused_as_teacher(path, tmp_path, capsys)
    assert "refused and nothing from it ran" in line, line
    assert not marker.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_a_crafted_latest_checkpoint_falls_back_to_the_previous_one_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    prev = tmp_path / "checkpoint_prev.pt"
    save_checkpoint(prev, torch.nn.Linear(2, 2), None, None, None, 1, 0)
    last, marker = _crafted(tmp_path, monkeypatch, kind, _torch_save, "checkpoint_last.pt")
    with caplog.at_level(logging.WARNING, logger="train.runtime.checkpoint"):
        state, used = load_latest([last, prev])
    assert used == prev and state["step"] == 1 and not marker.exists()
    (record,) = caplog.records
    assert f"resuming from {prev} instead: {last} " in record.getMessage() and "\n" not in record.getMessage()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_a_crafted_info_pickle_is_refused_in_one_line_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    path, marker = _crafted(tmp_path, monkeypatch, kind, _pickle_dump, "nuscenes_infos_10sweeps_train.pkl")
    with pytest.raises(CheckpointError, match="refused without running it") as err:
        load_data_pickle(path, "Pointcept nuScenes info file")
    assert str(path) in str(err.value) and "\n" not in str(err.value) and not marker.exists()


def test_a_text_file_or_a_plain_pickle_given_as_a_checkpoint_is_not_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("not weights\n")
    assert _refused_as_teacher(text, tmp_path, capsys).endswith("is not a checkpoint: it is not a torch.save file")
    plain, marker = _crafted(tmp_path, monkeypatch, "os.system", _pickle_dump, "plain.pt")
    assert "is not a checkpoint: it is a plain pickle" in _refused_as_teacher(plain, tmp_path, capsys)
    assert not marker.exists()


def test_a_refusal_of_a_two_process_run_is_one_line_before_any_work(tmp_path: Path) -> None:
    """The default synthetic CPU run spawns 2 processes: a bad preset is refused by the launching
    process, once, before the data set is generated, without torch's SIGTERM notices."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "train.run", "--dataset", "synthetic", "--teacher-preset", "huge",
                             "--procs", "2", "--device", "cpu", "--data-root", str(tmp_path / "data"),
                             "--out", str(tmp_path / "out")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "train.run: error: --teacher-preset huge: unknown model kind 'huge': choose one of "
        "['student', 'student-demo', 'teacher', 'teacher-demo']"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()
